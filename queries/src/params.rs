//! Binding metric parameters: text from the user (or a default) → typed DataFusion values.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
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

use kartoteka_engine::time::parse_timestamp as parse_instant;

fn month_start(t: DateTime<Utc>, offset: i32) -> DateTime<Utc> {
    let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1).expect("first of month exists");
    let moved = if offset >= 0 {
        first.checked_add_months(Months::new(offset as u32))
    } else {
        first.checked_sub_months(Months::new(offset.unsigned_abs()))
    }
    .expect("date in range");
    moved.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

fn scalar(
    metric: &Metric,
    spec: &ParamSpec,
    text: &str,
    bound: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
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
                    base,
                    offset
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("bad default {text:?}")))?,
                )
            } else {
                parse_instant(text).ok_or_else(|| {
                    bad(format!("{} = {text:?} is not a timestamp; use e.g. 2025-01-01 or 2025-01-01T09:00:00Z", spec.name))
                })?
            };
            if spec.align.as_deref() == Some("month") && t != month_start(t, 0) {
                return Err(bad(format!(
                    "{} = {text:?} must be the first day of a month (00:00 UTC), e.g. {}",
                    spec.name,
                    month_start(t, 0).format("%Y-%m-%d")
                )));
            }
            ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
        }
        ParamType::Date => {
            let d = if text == "now" {
                now.date_naive()
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
            ScalarValue::Int64(Some(text.parse().map_err(|_| {
                bad(format!("{} = {text:?} is not a whole number", spec.name))
            })?))
        }
        ParamType::Text => ScalarValue::Utf8(Some(text.to_string())),
    })
}

/// Bind `args` (and defaults for the rest) to typed values. `now` is the snapshot's time.
pub fn bind(
    metric: &Metric,
    args: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<HashMap<String, ScalarValue>> {
    for (k, _) in args {
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
        let v = scalar(metric, spec, &text, &instants, now)?;
        if let ScalarValue::TimestampMicrosecond(Some(us), _) = v {
            instants.insert(
                spec.name.clone(),
                DateTime::from_timestamp_micros(us).expect("in range"),
            );
        }
        out.insert(spec.name.clone(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    #[test]
    fn from_defaults_to_the_month_start_twelve_months_before_to() {
        let c = Catalog::builtin().expect("catalog");
        let m = c.get("revenue_by_month").expect("metric");
        let now = parse_instant("2026-11-29T10:00:00Z").expect("valid");
        let v = bind(m, &[], now).expect("binds");
        let from = parse_instant("2025-11-01")
            .expect("valid")
            .timestamp_micros();
        assert_eq!(
            v["from"],
            ScalarValue::TimestampMicrosecond(Some(from), Some("UTC".into()))
        );
        // and relative to an explicit `to`
        let v = bind(m, &[("to".into(), "2024-03-15".into())], now).expect("binds");
        let from = parse_instant("2023-03-01")
            .expect("valid")
            .timestamp_micros();
        assert_eq!(
            v["from"],
            ScalarValue::TimestampMicrosecond(Some(from), Some("UTC".into()))
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let c = Catalog::builtin().expect("catalog");
        let m = c.get("activity_by_manager").expect("metric");
        let now = Utc::now();
        let e = bind(m, &[("frm".into(), "2025-01-01".into())], now)
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("frm") && e.contains("from"), "{e}");
        let e = bind(m, &[("grain".into(), "hour".into())], now)
            .expect_err("not allowed")
            .to_string();
        assert!(e.contains("day, week"), "{e}");
        let e = bind(m, &[("from".into(), "last tuesday".into())], now)
            .expect_err("bad")
            .to_string();
        assert!(e.contains("not a timestamp"), "{e}");
    }
}
