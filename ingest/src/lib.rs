//! Kartoteka's ingest: sources (PostgreSQL, MySQL/MariaDB and SQLite through sqlx), mappings from a
//! source's own schema to the canonical model, and the deterministic demo CRM.
//!
//! It writes only through the engine's lake writer and commits one snapshot per run, so a failed run
//! leaves the lake as it was. It never decides who may read what.

pub mod batch;
mod branches;
pub mod check;
pub mod demo;
pub mod error;
pub mod job;
pub mod mapping;
pub mod run;
pub mod source;
mod sync;

pub use error::{Error, Result};
pub use job::{IngestJob, JobOutcome, JobProgress, run_job};
pub use mapping::Mapping;
pub use run::{
    IngestOptions, IngestReport, KeysFrom, LoadMode, NoProgress, Progress, TableCheck, ingest,
};
pub use source::mysql::MySqlSource;
pub use source::postgres::PgSource;
pub use source::sqlite::SqliteSource;
pub use source::{Source, SourceSpec};
