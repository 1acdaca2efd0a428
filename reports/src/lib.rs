//! Kartoteka's reports: specs (`spec`), charts drawn with plotters from metric results (`chart`),
//! rendering a report once per recipient under that recipient's own policy (`render`), the sealed
//! archive of every rendered copy (`archive`), delivery by e-mail and webhook (`deliver`), the report job every
//! front end runs (`job`), and schedules — cron expressions in a time zone (`schedule`; the scheduler
//! that fires them is `kartoteka serve`'s). A bundled font (DejaVu Sans, with Cyrillic) is used through
//! `ab_glyph`, so no system font library is needed.
//!
//! This crate turns results into pictures; it never queries the lake except through the catalog and
//! the engine's session for a principal.

pub mod archive;
pub mod chart;
pub mod deliver;
pub mod http;
pub mod job;
pub mod render;
pub mod schedule;
pub mod spec;

/// The reports crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The result does not have the columns the chart needs.
    #[error("cannot chart {metric}: {detail}")]
    Shape {
        /// Metric.
        metric: String,
        /// What is missing.
        detail: String,
    },
    /// Drawing failed.
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    /// Running a panel's metric failed.
    #[error("{0}")]
    Query(String),
    /// The archive could not store or read a copy.
    #[error("report archive: {0}")]
    Archive(String),
    /// A delivery could not be prepared or recorded.
    #[error("report delivery: {0}")]
    Delivery(String),
    /// The engine refused or failed (the lake, the control plane, the audit log).
    #[error(transparent)]
    Engine(#[from] kartoteka_engine::Error),
}

/// The reports crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
