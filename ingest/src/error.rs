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
        "cannot open source {source_name}: {cause}; check the path/URL and that the database exists"
    )]
    SourceUnavailable {
        /// Source name or location (never with credentials).
        source_name: String,
        /// Driver error.
        cause: sqlx::Error,
    },

    /// A mapping query failed in the source.
    #[error(
        "source query for table {table} failed: {cause}; check [tables.{table}] in the mapping"
    )]
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
         the key columns are right, then run the ingest again",
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
