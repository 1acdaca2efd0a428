//! The ingest crate's error type.

use std::path::PathBuf;

/// What can go wrong reading a source into the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mapping file cannot be read or parsed.
    #[error("mapping {path}: {detail}")]
    Mapping {
        /// Mapping file.
        path: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },

    /// The source database cannot be opened or reached.
    #[error(
        "cannot open source {source_name}: {}{}; check the path/URL, that the server runs and that the database exists",
        driver_text(cause),
        if *attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() }
    )]
    SourceUnavailable {
        /// Source name or location (never with credentials).
        source_name: String,
        /// Driver error.
        cause: sqlx::Error,
        /// Connection attempts made.
        attempts: u32,
    },

    /// A mapping query failed in the source (or the connection was lost while it ran).
    #[error("{}", source_query_text(table, cause))]
    SourceQuery {
        /// Canonical table.
        table: String,
        /// Driver error.
        cause: sqlx::Error,
    },

    /// The columns a mapping query returns do not match the canonical table.
    #[error("mapping for table {table}: {detail}")]
    Columns {
        /// Canonical table.
        table: String,
        /// Which columns are missing or unexpected.
        detail: String,
    },

    /// A mapping query returns a column of a type Kartoteka cannot map faithfully.
    #[error(
        "mapping for table {table}: column {column} has source type {type_name}, which Kartoteka cannot map; \
         CAST it in the mapping query (to text, a number, a timestamp or a date)"
    )]
    UnmappableType {
        /// Canonical table.
        table: String,
        /// Result column of the mapping query.
        column: String,
        /// The source's name for the type.
        type_name: String,
    },

    /// A source value cannot be converted to the canonical column's type.
    #[error("table {table}, column {column}, row {row}: {detail}")]
    Value {
        /// Canonical table.
        table: String,
        /// Canonical column.
        column: String,
        /// 1-based row number in the source query's result.
        row: u64,
        /// What was found and what was expected.
        detail: String,
    },

    /// An export file cannot be read.
    #[error("export file {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when there is one.
        detail: String,
    },

    /// The run's tables do not hold exactly the source's keys: nothing was committed.
    #[error(
        "reconciliation failed, nothing was committed (the lake stays at snapshot {base}): {}. \
         Check that the mapping's query returns each key once (a join that repeats rows?) and that \
         the key columns are right, then run the ingest again. A table read incrementally misses a row \
         the source inserted or changed without moving its updated_at forward: `kartoteka ingest \
         --full` reloads every table",
        .checks.iter().filter(|c| !c.matches()).map(|c| c.describe()).collect::<Vec<_>>().join("; ")
    )]
    Reconciliation {
        /// The snapshot the lake stays at.
        base: u64,
        /// Every table's check (the failing ones are described in the message).
        checks: Vec<crate::run::TableCheck>,
    },

    /// Writing to the lake failed.
    #[error(transparent)]
    Lake(#[from] kartoteka_engine::Error),

    /// Arrow error while building batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Demo generation failed writing its SQLite database.
    #[error("demo CRM database {path}: {cause}")]
    Demo {
        /// The database file.
        path: PathBuf,
        /// Driver error.
        cause: sqlx::Error,
    },
}

/// The ingest crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A driver error as a person reads it: what happened, without the driver's internals (SQLite's
/// `at line 3211 of [hash]`, sqlx's pool vocabulary).
pub fn driver_text(cause: &sqlx::Error) -> String {
    let text = match cause {
        sqlx::Error::PoolTimedOut => {
            "no connection could be made in time (the server did not answer)".into()
        }
        sqlx::Error::PoolClosed => "the connection was closed".into(),
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        sqlx::Error::Io(e) => format!("network error: {e}"),
        sqlx::Error::Database(e) => e.message().to_string(),
        other => other.to_string(),
    };
    strip_source_lines(&text)
}

/// `… at line 3211 of [a1b2c3]` → `…`.
fn strip_source_lines(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(at) = out.find(" at line ") {
        let rest = &out[at + " at line ".len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            break;
        }
        let mut end = at + " at line ".len() + digits;
        if let Some(of) = out[end..].strip_prefix(" of [")
            && let Some(close) = of.find(']')
        {
            end += " of [".len() + close + 1;
        }
        out.replace_range(at..end, "");
    }
    out
}

/// Is `cause` the connection failing rather than the query?
fn connection_lost(cause: &sqlx::Error) -> bool {
    matches!(
        cause,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
    )
}

fn source_query_text(table: &str, cause: &sqlx::Error) -> String {
    if connection_lost(cause) {
        format!(
            "the connection to the source was lost while reading table {table}: {}; nothing was \
             committed — check the server and the network, then run again",
            driver_text(cause)
        )
    } else {
        format!(
            "source query for table {table} failed: {}; check [tables.{table}] in the mapping",
            driver_text(cause)
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn driver_internals_are_left_out() {
        assert_eq!(
            super::strip_source_lines("unable to open database file at line 49732 of [abc123]"),
            "unable to open database file"
        );
        assert_eq!(
            super::strip_source_lines("near \"x\": syntax error"),
            "near \"x\": syntax error"
        );
    }
}
