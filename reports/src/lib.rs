//! Kartoteka's reports: charts drawn with plotters from metric results. A bundled font (DejaVu Sans,
//! with Cyrillic) is used through `ab_glyph`, so no system font library is needed. Report specs,
//! schedules, the archive and delivery arrive with the reports step.
//!
//! This crate turns results into pictures; it never queries the lake except through the catalog and
//! the engine's session for a principal.

pub mod chart;

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
}

/// The reports crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
