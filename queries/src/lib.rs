//! Kartoteka's metric catalog: one `.sql` file per metric (in `queries/catalog/`), each opening with a
//! header of `--` comment lines holding TOML (name, title, description, typed parameters with defaults,
//! result columns, chart hint, roles), then the SQL. Parameters are bound as typed values through
//! DataFusion placeholders (`$name`), never spliced into the text.
//!
//! The catalog holds SQL and metadata and runs it through the engine's session for a principal; it
//! never filters rows itself — the engine's policy does that. It builds a session of its own in one
//! place, [`benchmark`]: a team's median, under the analyst's policy, of which only aggregates over at
//! least three managers leave.

pub mod benchmark;
mod cache;
mod catalog;
mod params;

pub use cache::{AnswerCache, Scope};

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
    /// The metric reads a table or column the source's mapping does not provide: its answer would be
    /// a confident zero over data that was never loaded.
    #[error(
        "metric {metric} needs {}, which the mapping does not provide; map {} in the mapping file \
         (see `kartoteka mapping check`) and ingest again",
        needs.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        if needs.len() == 1 { "it" } else { "them" }
    )]
    Unmapped {
        /// Metric.
        metric: String,
        /// `table` or `table.column`, each unmapped.
        needs: Vec<String>,
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
    for view in catalog::VIEWS {
        if mentions(&metric.sql, view.name) {
            session.register_view(view.name, view.sql).await?;
        }
    }
    let needs = session.unmapped_reads(&metric.sql, &values).await?;
    if !needs.is_empty() {
        return Err(Error::Unmapped {
            metric: metric.name.clone(),
            needs,
        });
    }
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
    Ok(session.sql_with_params(&metric.sql, values).await?)
}

/// Does `sql` use the identifier `name` (as a whole word)?
fn mentions(sql: &str, name: &str) -> bool {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == name)
}

/// The period a run of `metric` with `args` covers, as a person reads it (`2025-12-01 … 2026-12-06`,
/// `as of 2026-12-06 14:00`), and whether it is the metric's default (no `from`, `to` or `as_of`
/// given). `None` for a metric without a period.
pub fn period_of(
    session: &QuerySession,
    metric: &Metric,
    args: &[(String, String)],
) -> Result<Option<(String, bool)>> {
    let now = if metric.family == catalog::Family::Security {
        chrono::Utc::now()
    } else {
        session.snapshot().committed_at
    };
    let zone = session.time_zone();
    let values = bind(metric, args, now, zone)?;
    let show = |name: &str| -> Option<String> {
        let ScalarValue::TimestampMicrosecond(Some(us), _) = values.get(name)? else {
            return None;
        };
        let t = chrono::DateTime::from_timestamp_micros(*us)?.with_timezone(&zone);
        Some(if t.format("%H:%M:%S").to_string() == "00:00:00" {
            t.format("%Y-%m-%d").to_string()
        } else {
            t.format("%Y-%m-%d %H:%M").to_string()
        })
    };
    let given = |names: &[&str]| args.iter().any(|(k, _)| names.contains(&k.as_str()));
    Ok(match (show("from"), show("to"), show("as_of")) {
        (Some(from), Some(to), _) => Some((format!("for {from} … {to}"), !given(&["from", "to"]))),
        (_, _, Some(as_of)) => Some((format!("as of {as_of}"), !given(&["as_of"]))),
        _ => None,
    })
}

/// The newest instant the data holds (deals created or closed, payments, interactions, clients
/// created), in the reporting zone, as a date — what "the data ends" means to a person reading an
/// empty answer for a period after it. Read under the session's policy.
pub async fn data_end(session: &QuerySession) -> Result<Option<chrono::NaiveDate>> {
    let result = session
        .sql(
            "SELECT CAST(MAX(local(t)) AS DATE) FROM (\
               SELECT MAX(created_at) AS t FROM deals UNION ALL SELECT MAX(closed_at) FROM deals \
               UNION ALL SELECT MAX(paid_at) FROM payments UNION ALL SELECT MAX(occurred_at) FROM interactions \
               UNION ALL SELECT MAX(created_at) FROM clients) AS ends",
        )
        .await?;
    let Some(batch) = result.batches.first().filter(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let days = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Date32Array>()
        .filter(|a| !arrow::array::Array::is_null(*a, 0))
        .map(|a| a.value(0));
    Ok(days.and_then(|d| {
        chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
            .checked_add_signed(chrono::Duration::days(d.into()))
    }))
}

/// Column captions for people: each amount column with the currency the snapshot's mapping declares
/// (`revenue, USD`).
pub fn captions(
    metric: &Metric,
    currency: Option<&str>,
) -> std::collections::HashMap<String, String> {
    metric
        .columns
        .iter()
        .filter(|c| c.unit == "money")
        .filter_map(|c| currency.map(|code| (c.name.clone(), format!("{}, {code}", c.name))))
        .collect()
}
