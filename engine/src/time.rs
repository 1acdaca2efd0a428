//! Reading instants written as text, shared by ingest (source values) and the catalog (parameters).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), the common case, parsed without chrono's format machinery.
fn parse_plain_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(
        date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?
            .and_utc(),
    )
}

/// A timestamp read from text: an instant when the text carried an offset, else a wall-clock time
/// whose zone the caller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextTimestamp {
    /// The text named its offset (or `Z`).
    Instant(DateTime<Utc>),
    /// No offset: a local date and time.
    Local(NaiveDateTime),
}

/// Parse a timestamp written as text, keeping apart texts with and without an offset.
pub fn parse_text_timestamp(s: &str) -> Option<TextTimestamp> {
    let s = s.trim();
    if let Some(t) = parse_plain_timestamp(s) {
        return Some(TextTimestamp::Local(t.naive_utc()));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(TextTimestamp::Instant(t.with_timezone(&Utc)));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(TextTimestamp::Instant(t.with_timezone(&Utc)));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(TextTimestamp::Local(t));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| TextTimestamp::Local(d.and_hms_opt(0, 0, 0).expect("midnight exists")))
}

/// Parse a timestamp written as text; without an offset it is taken as UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    parse_text_timestamp(s).map(|t| match t {
        TextTimestamp::Instant(t) => t,
        TextTimestamp::Local(t) => t.and_utc(),
    })
}
