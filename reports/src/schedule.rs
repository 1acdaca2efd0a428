//! Schedules: a cron expression in a named time zone, and its slots computed with the zone's real
//! rules (croner over chrono-tz), so every slot is in the offset of its own day. Wall-clock times a
//! DST change skips fall on the first instant after the gap; times it repeats, once, at the first
//! occurrence. Report specs and sources carry one; the scheduler that fires them is `kartoteka
//! serve`'s (the composition root's, `src/serve/scheduler.rs`).

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A cron expression in a time zone.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    expr: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expr, self.zone)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.zone)
    }
}

impl Schedule {
    /// Parse `expr` — five fields (minute hour day month weekday) or six (seconds first) — in the
    /// IANA time zone `zone`.
    pub fn parse(expr: &str, zone: &str) -> Result<Schedule, String> {
        let tz: Tz = zone.parse().map_err(|_| {
            format!("unknown time zone {zone:?} (an IANA name such as Europe/Moscow)")
        })?;
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "cron expression {expr:?} has {fields} fields; write 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| format!("bad cron expression {expr:?}: {e}"))?;
        Ok(Schedule {
            cron,
            zone: tz,
            expr: expr.to_string(),
        })
    }

    /// The time zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The newest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), true)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The slot to run at `now` when slots up to `handled` are done: the newest slot in
    /// `(handled, now]`. However many slots were missed, this is one run.
    pub fn due(&self, handled: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.latest_at_or_before(now).filter(|slot| *slot > handled)
    }
}

#[cfg(test)]
mod tests {

    use chrono::TimeZone;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn cron_expressions_and_zones_are_checked() {
        assert!(Schedule::parse("0 9 * * MON", "Europe/Moscow").is_ok());
        assert!(Schedule::parse("0 0 9 * * MON", "Europe/Moscow").is_ok());
        let e = Schedule::parse("0 9 * * MON", "Europe/Atlantis").expect_err("zone");
        assert!(e.contains("Europe/Atlantis") && e.contains("IANA"), "{e}");
        let e = Schedule::parse("0 9 * *", "UTC").expect_err("4 fields");
        assert!(e.contains("4 fields"), "{e}");
        let e = Schedule::parse("0 25 * * *", "UTC").expect_err("hour 25");
        assert!(e.contains("0 25 * * *"), "{e}");
        let e = Schedule::parse("0 9 * * FUNDAY", "UTC").expect_err("weekday");
        assert!(e.contains("FUNDAY"), "{e}");
    }

    #[test]
    fn slots_keep_local_time_across_dst() {
        // 09:00 every day in Berlin: 08:00 UTC in winter (CET), 07:00 UTC in summer (CEST). A fixed
        // offset taken at creation would drift by an hour on one side of the change.
        let s = Schedule::parse("0 9 * * *", "Europe/Berlin").expect("schedule");
        let mut t = utc("2026-03-27T12:00:00Z");
        let mut got = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).expect("next");
            got.push(t);
        }
        assert_eq!(
            got,
            vec![
                utc("2026-03-28T08:00:00Z"),
                utc("2026-03-29T07:00:00Z"),
                utc("2026-03-30T07:00:00Z"),
                utc("2026-03-31T07:00:00Z"),
            ]
        );
        let t = s.next_after(utc("2026-10-24T12:00:00Z")).expect("next");
        assert_eq!(t, utc("2026-10-25T08:00:00Z"), "back to CET on 25 October");
    }

    #[test]
    fn skipped_and_repeated_wall_clock_times_run_once() {
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("schedule");
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day and the job
        // runs at the first instant after the gap (03:00 CEST = 01:00 UTC).
        let slot = s.next_after(utc("2026-03-28T12:00:00Z")).expect("next");
        assert_eq!(slot, utc("2026-03-29T01:00:00Z"));
        assert_eq!(
            s.next_after(slot).expect("next"),
            utc("2026-03-30T00:30:00Z"),
            "02:30 CEST the next day"
        );
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice. One run, at the
        // first 02:30 (CEST, 00:30 UTC); the next is the following day.
        let slot = s.next_after(utc("2026-10-24T12:00:00Z")).expect("next");
        assert_eq!(slot, utc("2026-10-25T00:30:00Z"));
        assert_eq!(
            s.next_after(slot).expect("next"),
            utc("2026-10-26T01:30:00Z"),
            "not again at 02:30 CET"
        );
    }

    #[test]
    fn missed_slots_collapse_into_one_run() {
        let s = Schedule::parse("0 * * * *", "Asia/Yekaterinburg").expect("hourly");
        let handled = utc("2026-11-20T10:00:00Z");
        let now = utc("2026-11-23T07:42:10Z");
        assert_eq!(s.due(handled, now), Some(utc("2026-11-23T07:00:00Z")));
        assert_eq!(
            s.due(utc("2026-11-23T07:00:00Z"), now),
            None,
            "already handled"
        );
        let weekly = Schedule::parse("0 8 * * MON", "Europe/Moscow").expect("weekly");
        // Monday 23 November 2026, 08:00 MSK = 05:00 UTC.
        assert_eq!(
            weekly.due(handled, now),
            Some(
                Utc.with_ymd_and_hms(2026, 11, 23, 5, 0, 0)
                    .single()
                    .expect("t")
            )
        );
    }
}
