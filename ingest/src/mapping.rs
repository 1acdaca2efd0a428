//! Mappings: how a source's own schema becomes the canonical model.
//!
//! A mapping is a TOML file with one `[tables.<canonical table>]` section per canonical table, each
//! holding the source `query` whose result columns are named like the canonical columns. A table the
//! CRM does not have is left out: it is stored empty and recorded as unmapped, and a metric that needs
//! it says so instead of answering zero. A query may leave out nullable columns the CRM does not hold
//! (recorded the same way); a key, an unknown or a duplicated column is reported before anything is
//! read. Money in a source must be exact: integers are read as minor units or whole units as
//! `[money] integers` says; floating-point money is refused; `[money] currency` names the currency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// How integer values in money columns are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoneyIntegers {
    /// 12345 means 123.45 (kopecks, cents).
    MinorUnits,
    /// 12345 means 12345.00.
    Units,
}

/// Money settings of a mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneySpec {
    /// Meaning of integer money values; when absent, integer money is an error.
    pub integers: Option<MoneyIntegers>,
    /// ISO 4217 code of the amounts (`RUB`, `USD`, `EUR`, …): shown with every amount. Without it,
    /// amounts are shown as bare numbers.
    pub currency: Option<String>,
}

/// How a mapping reads times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSpec {
    /// IANA zone of timestamps that carry no zone (MySQL DATETIME, PostgreSQL TIMESTAMP, text without
    /// an offset), e.g. `Europe/Moscow`. Default UTC.
    pub zone: Option<String>,
}

/// How a mapping's keys are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSpec {
    /// The CRM's ids are text (`C536379`, `A-17`, UUIDs): a text id is kept as a stable BIGINT
    /// surrogate (`source_key('C536379')` in SQL finds it; whole numbers stay themselves). Without
    /// it, text in an id column is an error — usually a column mapped by mistake.
    #[serde(default)]
    pub text: bool,
}

/// The value conversions a mapping asks for, resolved.
#[derive(Debug, Clone, Copy)]
pub struct Conversions {
    /// Meaning of integer money.
    pub money: Option<MoneyIntegers>,
    /// Text ids are kept as surrogates (`[keys] text = true`).
    pub text_keys: bool,
    /// Zone of wall-clock timestamps.
    pub zone: chrono_tz::Tz,
}

/// One canonical table's source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// Source SQL returning the canonical columns by name.
    pub query: String,
    /// Read only rows whose `updated_at` is at or after the last committed cursor (minus the overlap
    /// window), replacing older versions by key; rows gone from the source are found by the run's
    /// key reconciliation. Needs a reliable `updated_at` (a row's change must move it forward).
    #[serde(default)]
    pub incremental: bool,
}

/// Incremental sync settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// Rows are re-read from this many seconds before the cursor: transactions that commit late
    /// (an `updated_at` set before the commit) are not missed. Default 300.
    pub overlap_seconds: Option<u64>,
}

/// A whole mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Name of the mapping (for messages).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Money settings.
    pub money: Option<MoneySpec>,
    /// Time settings.
    pub time: Option<TimeSpec>,
    /// Key settings.
    pub keys: Option<KeysSpec>,
    /// Incremental sync settings.
    pub sync: Option<SyncSpec>,
    /// Export files (for a `files://DIR` source): SQL table name → file and how to read it.
    #[serde(default)]
    pub files: BTreeMap<String, crate::source::files::FileSpec>,
    /// Canonical table → source query.
    #[serde(default)]
    pub tables: BTreeMap<String, TableMapping>,
    #[serde(skip)]
    path: PathBuf,
}

impl Mapping {
    /// Read and validate a mapping file.
    pub fn load(path: &Path) -> Result<Mapping> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Mapping {
            path: path.to_path_buf(),
            detail: format!("cannot read: {e}"),
        })?;
        Mapping::parse(&text, path)
    }

    /// Parse and validate mapping text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Mapping> {
        let mut m: Mapping = toml::from_str(text).map_err(|e| Error::Mapping {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        m.path = path.to_path_buf();
        for t in m.tables.values_mut() {
            // Queries are embedded as subqueries (reconciliation): no trailing semicolon.
            t.query = t.query.trim().trim_end_matches(';').trim_end().to_string();
        }
        if let Some(zone) = m.time.as_ref().and_then(|t| t.zone.as_deref())
            && zone.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(Error::Mapping {
                path: m.path.clone(),
                detail: format!(
                    "[time] zone = {zone:?} is not an IANA time zone (e.g. \"Europe/Moscow\", \"UTC\")"
                ),
            });
        }
        if let Some((name, _)) = m.tables.iter().find(|(name, t)| {
            t.incremental
                && kartoteka_engine::model::table(name).is_some_and(|t| t.cursor.is_none())
        }) {
            return Err(Error::Mapping {
                path: m.path.clone(),
                detail: format!(
                    "[tables.{name}] incremental = true, but {name} has no updated_at column to follow"
                ),
            });
        }
        let names = kartoteka_engine::model::table_names();
        if let Some(unknown) = m.tables.keys().find(|t| !names.contains(&t.as_str())) {
            return Err(Error::Mapping {
                path: m.path.clone(),
                detail: format!(
                    "[tables.{unknown}] is not a canonical table; the canonical tables are: {}",
                    names.join(", ")
                ),
            });
        }
        if m.tables.is_empty() {
            return Err(Error::Mapping {
                path: m.path.clone(),
                detail: format!(
                    "no [tables.NAME] section: map at least one canonical table ({})",
                    names.join(", ")
                ),
            });
        }
        if let Some(code) = m.money.as_ref().and_then(|m| m.currency.as_deref())
            && !(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(Error::Mapping {
                path: m.path.clone(),
                detail: format!(
                    "[money] currency = {code:?} is not an ISO 4217 code (three capital letters: \"RUB\", \"USD\", \"EUR\")"
                ),
            });
        }
        Ok(m)
    }

    /// Canonical tables the mapping does not provide (stored empty, recorded as unmapped).
    pub fn unmapped_tables(&self) -> Vec<&'static str> {
        kartoteka_engine::model::table_names()
            .iter()
            .copied()
            .filter(|t| !self.tables.contains_key(*t))
            .collect()
    }

    /// The currency the amounts are in, when the mapping says.
    pub fn currency(&self) -> Option<&str> {
        self.money.as_ref().and_then(|m| m.currency.as_deref())
    }

    /// Where the mapping was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Money settings (integers as minor units unless said otherwise is *not* assumed).
    pub fn money_integers(&self) -> Option<MoneyIntegers> {
        self.money.as_ref().and_then(|m| m.integers)
    }

    /// The overlap window of incremental reads, in seconds.
    pub fn overlap_seconds(&self) -> u64 {
        self.sync
            .as_ref()
            .and_then(|s| s.overlap_seconds)
            .unwrap_or(300)
    }

    /// The value conversions this mapping asks for.
    pub fn conversions(&self) -> Conversions {
        Conversions {
            money: self.money_integers(),
            text_keys: self.keys.as_ref().is_some_and(|k| k.text),
            zone: self
                .time
                .as_ref()
                .and_then(|t| t.zone.as_deref())
                .and_then(|z| z.parse().ok())
                .unwrap_or(chrono_tz::UTC),
        }
    }
}
