//! Incremental sync: the cursor a table's load commits with its data, and the read that starts from
//! it.
//!
//! The cursor is the newest `updated_at` the lake holds for a table, in the snapshot beside the files
//! it describes — never only in a control database — so data and cursor commit together and a run
//! killed anywhere restarts from the last committed pair. A read asks the source for rows with
//! `updated_at` at or after the cursor minus an overlap window (transactions commit late), and for
//! rows without `updated_at` (they are read every time); re-read rows replace themselves by key, so
//! reading a row twice is harmless.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use kartoteka_engine::lake::TableState;
use serde::{Deserialize, Serialize};

use crate::batch::Value;
use crate::mapping::Mapping;
use crate::run::TablePlan;
use crate::source::Source;

/// How a source holds `updated_at` — so the cursor is handed back in the source's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CursorRepr {
    /// A timestamp with time zone.
    Instant,
    /// A wall-clock timestamp in the mapping's zone.
    Local,
    /// Text (`YYYY-MM-DD HH:MM:SS`, wall-clock in the mapping's zone).
    Text,
    /// Integer seconds since the epoch.
    Epoch,
}

impl CursorRepr {
    /// The representation of a value of the cursor column (`None` for NULL and other kinds).
    pub(crate) fn of(v: &Value<'_>) -> Option<CursorRepr> {
        match v {
            Value::Instant(_) => Some(CursorRepr::Instant),
            Value::Local(_) => Some(CursorRepr::Local),
            Value::Text(_) => Some(CursorRepr::Text),
            Value::Int(_) => Some(CursorRepr::Epoch),
            _ => None,
        }
    }
}

/// A table's committed sync position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The mapping that produced it: another mapping starts over with a full load.
    pub(crate) mapping: String,
    /// Newest `updated_at` loaded, microseconds since the epoch (`None`: no row had one).
    pub(crate) micros: Option<i64>,
    /// How the source holds `updated_at`.
    pub(crate) repr: CursorRepr,
}

impl Cursor {
    /// The cursor of `state`, when it was written by `mapping`.
    pub(crate) fn from_state(state: &TableState, mapping: &Mapping) -> Option<Cursor> {
        let c: Cursor = serde_json::from_value(state.cursor.clone()?).ok()?;
        (c.mapping == mapping.name).then_some(c)
    }

    /// As stored in the snapshot.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a cursor serialises")
    }
}

/// The cursor as a query parameter of the source's own type.
#[derive(Debug, Clone)]
pub(crate) enum CursorParam {
    /// TIMESTAMPTZ / MySQL TIMESTAMP.
    Instant(DateTime<Utc>),
    /// TIMESTAMP / DATETIME, wall-clock in the mapping's zone.
    Local(NaiveDateTime),
    /// Text, wall-clock in the mapping's zone.
    Text(String),
    /// Epoch seconds.
    Epoch(i64),
}

impl CursorParam {
    /// The cursor as a SQL literal (whole seconds; MySQL's session is in UTC, so an instant is written
    /// in UTC). Only digits, dashes, colons and a space can appear in it.
    fn literal(&self) -> String {
        let text = match self {
            CursorParam::Instant(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            CursorParam::Local(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            CursorParam::Text(t) => t.clone(),
            CursorParam::Epoch(t) => return t.to_string(),
        };
        debug_assert!(
            text.chars()
                .all(|c| c.is_ascii_digit() || "-: ".contains(c))
        );
        let safe: String = text
            .chars()
            .filter(|c| c.is_ascii_digit() || "-: ".contains(*c))
            .collect();
        format!("'{safe}'")
    }
}

/// The query one table's load runs, and its parameter.
#[derive(Debug)]
pub(crate) struct SyncRead {
    pub(crate) query: String,
    pub(crate) param: Option<CursorParam>,
}

impl SyncRead {
    /// The whole mapping query (no cursor), or only what changed since `prior`.
    pub(crate) fn new(
        source: &Source,
        plan: &TablePlan,
        mapping: &Mapping,
        prior: Option<&Cursor>,
    ) -> SyncRead {
        let query = mapping.tables[plan.table.name].query.clone();
        let (Some(prior), Some(column)) = (prior, plan.table.cursor) else {
            return SyncRead { query, param: None };
        };
        let Some(micros) = prior.micros else {
            // No row had an updated_at: nothing to start from but the beginning.
            return SyncRead { query, param: None };
        };
        let from = DateTime::<Utc>::from_timestamp_micros(micros)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            - chrono::Duration::seconds(mapping.overlap_seconds() as i64);
        // Whole seconds, rounded down: the overlap window makes the precision irrelevant.
        let from = DateTime::<Utc>::from_timestamp(from.timestamp(), 0).unwrap_or(from);
        let local = || {
            mapping
                .conversions()
                .zone
                .from_utc_datetime(&from.naive_utc())
                .naive_local()
        };
        let param = match prior.repr {
            CursorRepr::Instant => CursorParam::Instant(from),
            CursorRepr::Local => CursorParam::Local(local()),
            CursorRepr::Text => CursorParam::Text(local().format("%Y-%m-%d %H:%M:%S").to_string()),
            CursorRepr::Epoch => CursorParam::Epoch(from.timestamp()),
        };
        let (placeholder, param) = match source {
            Source::Postgres(_) => ("$1".to_string(), Some(param)),
            Source::Sqlite(_) => ("?".to_string(), Some(param)),
            // MariaDB pushes a condition into the branches of a derived UNION only when it holds no
            // parameter; with one it materialises the whole union first (every row of every branch)
            // and filters that. The cursor is Kartoteka's own value, written as a literal of digits,
            // dashes and colons.
            Source::MySql(_) => (param.literal(), None),
        };
        SyncRead {
            query: format!(
                "SELECT * FROM ({query}) AS kartoteka_sync \
                 WHERE kartoteka_sync.{column} >= {placeholder} OR kartoteka_sync.{column} IS NULL"
            ),
            param,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_literals_are_whole_seconds_of_digits_dashes_and_colons() {
        let t = DateTime::<Utc>::from_timestamp(1_751_446_800, 0).expect("instant");
        assert_eq!(CursorParam::Instant(t).literal(), "'2025-07-02 09:00:00'");
        assert_eq!(
            CursorParam::Local(t.naive_utc()).literal(),
            "'2025-07-02 09:00:00'"
        );
        assert_eq!(CursorParam::Epoch(1_751_446_800).literal(), "1751446800");
        assert_eq!(
            CursorParam::Text("2025-07-02 12:00:00".into()).literal(),
            "'2025-07-02 12:00:00'"
        );
    }
}
