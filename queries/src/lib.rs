//! Kartoteka's metric catalog: one `.sql` file per metric (in `queries/catalog/`), each opening with a
//! header of `--` comment lines holding TOML (name, title, description, typed parameters with defaults,
//! result columns, chart hint, roles), then the SQL. Parameters are bound as typed values through
//! DataFusion placeholders (`$name`), never spliced into the text.
//!
//! The catalog holds SQL and metadata and runs it through the engine's session for a principal; it
//! never builds a session of its own or filters rows itself — the engine's policy does that.

mod catalog;
mod params;

pub use catalog::{
    Catalog, ChartHint, ColumnSpec, Family, Metric, ParamSpec, ParamType, VIEWS, View,
};
pub use params::{bind, parse_assignments};

use datafusion::common::ScalarValue;
use kartoteka_engine::{QueryResult, QuerySession};

/// The catalog's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A catalog file's header is malformed (a bug in the catalog, caught by tests).
    #[error("catalog file {file}: {detail}")]
    BadHeader {
        /// File name.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// No metric by that name.
    #[error("unknown metric {name:?}; the metrics are: {known}")]
    UnknownMetric {
        /// Asked for.
        name: String,
        /// Valid names.
        known: String,
    },
    /// A parameter that the metric does not take, or a value that does not parse.
    #[error("metric {metric}: {detail}")]
    BadParam {
        /// Metric.
        metric: String,
        /// What is wrong and what is valid.
        detail: String,
    },
    /// The role may not run this metric.
    #[error("metric {metric} is not available to role {role}")]
    RoleNotAllowed {
        /// Metric.
        metric: String,
        /// Role.
        role: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] kartoteka_engine::Error),
}

/// The catalog's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Run `metric` in `session` with `args` (name → text value; defaults fill the rest).
pub async fn run_metric(
    session: &QuerySession,
    metric: &Metric,
    args: &[(String, String)],
) -> Result<QueryResult> {
    let role = session.principal().role;
    if !metric.allows(role) {
        return Err(Error::RoleNotAllowed {
            metric: metric.name.clone(),
            role: role.as_str().into(),
        });
    }
    // "now" is the snapshot's time: metrics describe the data as of the snapshot. The security family
    // reads the audit log, which runs ahead of any snapshot, so its "now" is the clock.
    let now = if metric.family == catalog::Family::Security {
        chrono::Utc::now()
    } else {
        session.snapshot().committed_at
    };
    let values = bind(metric, args, now, session.time_zone())?;
    // A pipeline that does not exist would answer with no rows, as if nothing happened in it.
    if let Some(ScalarValue::Utf8(Some(pipeline))) = values.get("pipeline")
        && !pipeline.is_empty()
    {
        let known = session
            .sql("SELECT DISTINCT pipeline FROM pipeline_stages ORDER BY pipeline")
            .await?;
        let mut names = Vec::new();
        for batch in &known.batches {
            let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| Error::Engine(kartoteka_engine::Error::Arrow(e)))?;
            let column = arrow::array::cast::as_string_array(&column);
            names.extend(column.iter().flatten().map(str::to_string));
        }
        if !names.iter().any(|n| n == pipeline) {
            return Err(Error::BadParam {
                metric: metric.name.clone(),
                detail: format!(
                    "there is no pipeline {pipeline:?}; the pipelines are: {}",
                    names.join(", ")
                ),
            });
        }
    }
    for view in catalog::VIEWS {
        if mentions(&metric.sql, view.name) {
            session.register_view(view.name, view.sql).await?;
        }
    }
    Ok(session.sql_with_params(&metric.sql, values).await?)
}

/// Does `sql` use the identifier `name` (as a whole word)?
fn mentions(sql: &str, name: &str) -> bool {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == name)
}
