//! Binding metric parameters: text from the user (or a default) → typed DataFusion values.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use datafusion::common::ScalarValue;

use crate::catalog::{Metric, ParamSpec, ParamType};
use crate::{Error, Result};

/// Split `k=v` assignments.
pub fn parse_assignments(items: &[String]) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("parameter {s:?} is not of the form name=value"))
        })
        .collect()
}

use kartoteka_engine::time::{TextTimestamp, parse_text_timestamp};

/// The instant a wall-clock time in `zone` names: the earlier one in a DST fall-back hour; `None` in a
/// spring-forward gap.
fn at_local(zone: Tz, t: NaiveDateTime) -> Option<DateTime<Utc>> {
    zone.from_local_datetime(&t)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Local midnight of `d` in `zone` (in the few zones whose DST change is at midnight, the first
/// instant of that day).
fn local_midnight(zone: Tz, d: NaiveDate) -> DateTime<Utc> {
    let midnight = d.and_hms_opt(0, 0, 0).expect("midnight");
    (0..=2)
        .find_map(|h| at_local(zone, midnight + chrono::Duration::hours(h)))
        .expect("a day has a first hour")
}

/// The first instant of the calendar month of `t` in `zone`, moved by `offset` months.
fn month_start(zone: Tz, t: DateTime<Utc>, offset: i32) -> DateTime<Utc> {
    let local = t.with_timezone(&zone);
    let first =
        NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("first of month exists");
    let moved = if offset >= 0 {
        first.checked_add_months(Months::new(offset as u32))
    } else {
        first.checked_sub_months(Months::new(offset.unsigned_abs()))
    }
    .expect("date in range");
    local_midnight(zone, moved)
}

fn scalar(
    metric: &Metric,
    spec: &ParamSpec,
    text: &str,
    bound: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
    zone: Tz,
) -> Result<ScalarValue> {
    let bad = |detail: String| Error::BadParam {
        metric: metric.name.clone(),
        detail,
    };
    if !spec.allowed.is_empty() && !spec.allowed.iter().any(|a| a == text) {
        return Err(bad(format!(
            "{} must be one of {}, not {text:?}",
            spec.name,
            spec.allowed.join(", ")
        )));
    }
    Ok(match spec.ty {
        ParamType::Timestamp => {
            let t = if text == "now" {
                now
            } else if let Some(args) = text
                .strip_prefix("month_start(")
                .and_then(|r| r.strip_suffix(')'))
            {
                // month_start(other_param, offset): first day of that parameter's month, moved.
                let (other, offset) = args
                    .split_once(',')
                    .ok_or_else(|| bad(format!("bad default {text:?}")))?;
                let base = if other.trim() == "now" {
                    now
                } else {
                    bound
                        .get(other.trim())
                        .copied()
                        .ok_or_else(|| bad(format!("default of {} needs {other}", spec.name)))?
                };
                month_start(
                    zone,
                    base,
                    offset
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("bad default {text:?}")))?,
                )
            } else {
                // A date or a time without offset is wall-clock time in the reporting zone.
                match parse_text_timestamp(text) {
                    Some(TextTimestamp::Instant(t)) => t,
                    Some(TextTimestamp::Local(t)) => at_local(zone, t).ok_or_else(|| {
                        bad(format!(
                            "{} = {text:?} does not exist in {zone} (a DST gap)",
                            spec.name
                        ))
                    })?,
                    None => {
                        return Err(bad(format!(
                            "{} = {text:?} is not a timestamp; use e.g. 2025-01-01 or 2025-01-01T09:00:00Z",
                            spec.name
                        )));
                    }
                }
            };
            if spec.align.as_deref() == Some("month") && t != month_start(zone, t, 0) {
                return Err(bad(format!(
                    "{} = {text:?} must be the first day of a month (00:00 in the reporting zone, {zone}), e.g. {}",
                    spec.name,
                    month_start(zone, t, 0)
                        .with_timezone(&zone)
                        .format("%Y-%m-%d")
                )));
            }
            ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
        }
        ParamType::Date => {
            let d = if text == "now" {
                now.with_timezone(&zone).date_naive()
            } else {
                NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                    bad(format!(
                        "{} = {text:?} is not a date (YYYY-MM-DD)",
                        spec.name
                    ))
                })?
            };
            ScalarValue::Date32(Some(
                (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32,
            ))
        }
        ParamType::Int => {
            let n: i64 = text
                .parse()
                .map_err(|_| bad(format!("{} = {text:?} is not a whole number", spec.name)))?;
            if spec.min.is_some_and(|m| n < m) || spec.max.is_some_and(|m| n > m) {
                return Err(bad(format!(
                    "{} = {n} is out of range: it must be between {} and {}",
                    spec.name,
                    spec.min.map_or("−∞".to_string(), |m| m.to_string()),
                    spec.max.map_or("∞".to_string(), |m| m.to_string())
                )));
            }
            ScalarValue::Int64(Some(n))
        }
        ParamType::Text => ScalarValue::Utf8(Some(text.to_string())),
    })
}

/// Bind `args` (and defaults for the rest) to typed values. `now` is the snapshot's time; dates and
/// times without offset are wall-clock times in `zone`, the reporting zone.
pub fn bind(
    metric: &Metric,
    args: &[(String, String)],
    now: DateTime<Utc>,
    zone: Tz,
) -> Result<HashMap<String, ScalarValue>> {
    for (i, (k, _)) in args.iter().enumerate() {
        if args[..i].iter().any(|(other, _)| other == k) {
            return Err(Error::BadParam {
                metric: metric.name.clone(),
                detail: format!("parameter {k} is given twice; give it once"),
            });
        }
        if !metric.params.iter().any(|p| &p.name == k) {
            let valid: Vec<String> = metric
                .params
                .iter()
                .map(|p| format!("{} ({:?})", p.name, p.ty).to_lowercase())
                .collect();
            return Err(Error::BadParam {
                metric: metric.name.clone(),
                detail: if valid.is_empty() {
                    format!("unknown parameter {k:?}; this metric takes no parameters")
                } else {
                    format!(
                        "unknown parameter {k:?}; valid parameters: {}",
                        valid.join(", ")
                    )
                },
            });
        }
    }
    // Parameters given explicitly first, then defaults, so defaults may refer to given values
    // (`from` defaults relative to `to`).
    let given = |name: &str| {
        args.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut order: Vec<&ParamSpec> = metric.params.iter().collect();
    order.sort_by_key(|p| {
        (
            given(&p.name).is_none(),
            // defaults relative to another parameter come after those relative to `now`
            p.default
                .as_deref()
                .is_some_and(|d| d.contains('(') && !d.contains("(now")),
        )
    });
    let mut out = HashMap::new();
    let mut instants = HashMap::new();
    for spec in order {
        let text = given(&spec.name)
            .or_else(|| spec.default.clone())
            .ok_or_else(|| Error::BadParam {
                metric: metric.name.clone(),
                detail: format!("parameter {} is required", spec.name),
            })?;
        let v = scalar(metric, spec, &text, &instants, now, zone)?;
        if let ScalarValue::TimestampMicrosecond(Some(us), _) = v {
            instants.insert(
                spec.name.clone(),
                DateTime::from_timestamp_micros(us).expect("in range"),
            );
        }
        out.insert(spec.name.clone(), v);
    }
    // A period that ends before it starts is a mistake, not an empty answer (from = to is an empty
    // period on purpose, and answers as one).
    if let (Some(from), Some(to)) = (instants.get("from"), instants.get("to"))
        && from > to
    {
        return Err(Error::BadParam {
            metric: metric.name.clone(),
            detail: format!(
                "the period ends before it starts: from ({}) must not be after to ({})",
                from.with_timezone(&zone).format("%Y-%m-%d %H:%M"),
                to.with_timezone(&zone).format("%Y-%m-%d %H:%M")
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;
    use kartoteka_engine::time::parse_timestamp as parse_instant;

    #[test]
    fn from_defaults_to_the_month_start_twelve_months_before_to() {
        let c = Catalog::builtin().expect("catalog");
        let m = c.get("revenue_by_month").expect("metric");
        let now = parse_instant("2026-11-29T10:00:00Z").expect("valid");
        let v = bind(m, &[], now, chrono_tz::UTC).expect("binds");
        let from = parse_instant("2025-11-01")
            .expect("valid")
            .timestamp_micros();
        assert_eq!(
            v["from"],
            ScalarValue::TimestampMicrosecond(Some(from), Some("UTC".into()))
        );
        // and relative to an explicit `to`
        let v = bind(
            m,
            &[("to".into(), "2024-03-15".into())],
            now,
            chrono_tz::UTC,
        )
        .expect("binds");
        let from = parse_instant("2023-03-01")
            .expect("valid")
            .timestamp_micros();
        assert_eq!(
            v["from"],
            ScalarValue::TimestampMicrosecond(Some(from), Some("UTC".into()))
        );
    }

    #[test]
    fn dates_are_midnights_of_the_reporting_zone_across_dst() {
        let c = Catalog::builtin().expect("catalog");
        let m = c.get("revenue_by_month").expect("metric");
        let berlin = chrono_tz::Europe::Berlin;
        let now = parse_instant("2026-11-29T10:00:00Z").expect("valid");
        let micros = |s: &str| parse_instant(s).expect("valid").timestamp_micros();
        let ts = |v: &ScalarValue| match v {
            ScalarValue::TimestampMicrosecond(Some(us), _) => *us,
            other => panic!("{other:?}"),
        };
        // Winter (CET, UTC+1) and, twelve months earlier, summer (CEST, UTC+2).
        let v = bind(m, &[("to".into(), "2025-01-01".into())], now, berlin).expect("binds");
        assert_eq!(ts(&v["to"]), micros("2024-12-31T23:00:00Z"));
        let v = bind(m, &[("to".into(), "2025-04-15".into())], now, berlin).expect("binds");
        assert_eq!(
            ts(&v["from"]),
            micros("2024-03-31T22:00:00Z"),
            "1 April 2024, CEST"
        );
        // An explicit offset is an instant whatever the zone; a UTC midnight is not a Berlin month start.
        let aligned = c.get("revenue_by_source").expect("metric");
        let e = bind(
            aligned,
            &[("from".into(), "2025-03-01T00:00:00Z".into())],
            now,
            berlin,
        )
        .expect_err("not aligned in Berlin")
        .to_string();
        assert!(
            e.contains("Europe/Berlin") && e.contains("2025-03-01"),
            "{e}"
        );
        // A wall-clock time inside the spring-forward gap does not exist.
        let m = c.get("activity_by_manager").expect("metric");
        let e = bind(
            m,
            &[("from".into(), "2025-03-30 02:30".into())],
            now,
            berlin,
        )
        .expect_err("gap")
        .to_string();
        assert!(e.contains("DST gap"), "{e}");
    }

    #[test]
    fn bad_parameters_are_named() {
        let c = Catalog::builtin().expect("catalog");
        let m = c.get("activity_by_manager").expect("metric");
        let now = Utc::now();
        let e = bind(
            m,
            &[("frm".into(), "2025-01-01".into())],
            now,
            chrono_tz::UTC,
        )
        .expect_err("unknown")
        .to_string();
        assert!(e.contains("frm") && e.contains("from"), "{e}");
        let e = bind(m, &[("grain".into(), "hour".into())], now, chrono_tz::UTC)
            .expect_err("not allowed")
            .to_string();
        assert!(e.contains("day, week"), "{e}");
        let e = bind(
            m,
            &[("from".into(), "last tuesday".into())],
            now,
            chrono_tz::UTC,
        )
        .expect_err("bad")
        .to_string();
        assert!(e.contains("not a timestamp"), "{e}");
    }
}
