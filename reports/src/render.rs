//! Rendering a report for one recipient: one engine session for that principal (so every panel reads
//! one snapshot, under that principal's own policy — a manager's copy holds only their rows because
//! the engine's plan does, not because this code filters), each panel's metric run through the
//! catalog, drawn in each of the spec's formats, and the lot hashed.

use std::sync::Arc;
use std::time::Instant;

use datafusion::scalar::ScalarValue;
use kartoteka_engine::{Engine, Principal, QueryResult, QuerySession};
use kartoteka_queries::{AnswerCache, Catalog, Metric};
use sha2::{Digest, Sha256};

use crate::chart::Chart;
use crate::spec::{ChartKind, Format, Panel, ReportSpec};
use crate::{Error, Result};

/// One panel's output.
#[derive(Debug, Clone)]
pub struct RenderedPanel {
    /// The panel as specified.
    pub panel: Panel,
    /// What was drawn.
    pub chart: Chart,
    /// Rows the metric returned.
    pub rows: usize,
    /// The metric's answer.
    pub result: Arc<QueryResult>,
    /// Files: (format, bytes).
    pub files: Vec<(Format, Vec<u8>)>,
}

/// A report rendered for one recipient.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Report id.
    pub report: String,
    /// Report title.
    pub title: String,
    /// The recipient's login.
    pub recipient: String,
    /// The snapshot every panel read.
    pub snapshot_id: u64,
    /// Panels in order.
    pub panels: Vec<RenderedPanel>,
    /// SHA-256 over every file, in order (hex).
    pub content_hash: String,
    /// Wall-clock render time.
    pub seconds: f64,
}

impl Rendered {
    /// Each panel's metric and parameters (as given; defaults are the metric's), as JSON.
    pub fn params_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.panels
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "metric": p.panel.metric,
                        "params": p.panel.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    })
                })
                .collect(),
        )
    }

    /// File names of panel `i`'s files: `01-revenue_by_month.svg`.
    pub fn file_name(&self, i: usize, format: Format) -> String {
        format!(
            "{:02}-{}.{}",
            i + 1,
            self.panels[i].panel.metric,
            format.extension()
        )
    }
}

/// Render `spec` for `principal` over `snapshot` (every panel reads it).
pub async fn render(
    engine: &Engine,
    catalog: &Catalog,
    spec: &ReportSpec,
    principal: &Principal,
    snapshot: kartoteka_engine::Snapshot,
) -> Result<Rendered> {
    let started = Instant::now();
    let session = engine
        .session_at(principal, snapshot)
        .await
        .map_err(engine_error)?;
    let panels = render_panels(&session, catalog, &spec.panels, &spec.formats, None).await?;
    let mut hash = Sha256::new();
    for bytes in panels.iter().flat_map(|p| p.files.iter().map(|(_, b)| b)) {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    Ok(Rendered {
        report: spec.id.clone(),
        title: spec.title.clone(),
        recipient: principal.user.clone(),
        snapshot_id: session.snapshot().id,
        panels,
        content_hash: hex::encode(hash.finalize()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Draw `panels` in `session` (one snapshot, one principal's policy): each panel's metric run through
/// the catalog (through `cache` when given), money in the snapshot's currency, the period still in
/// progress marked, drawn in each of `formats`.
pub async fn render_panels(
    session: &QuerySession,
    catalog: &Catalog,
    panels: &[Panel],
    formats: &[Format],
    cache: Option<&AnswerCache>,
) -> Result<Vec<RenderedPanel>> {
    let snapshot = session.snapshot();
    let run = async |metric: &Metric, args: &[(String, String)]| match cache {
        Some(cache) => cache.run_metric(session, metric, args).await,
        None => kartoteka_queries::run_metric(session, metric, args)
            .await
            .map(Arc::new),
    };
    let mut out = Vec::new();
    for panel in panels {
        let metric = catalog.get(&panel.metric).map_err(query_error)?;
        let result = run(metric, &panel.params).await.map_err(query_error)?;
        let previous = if panel.chart == ChartKind::Kpi {
            match previous_period(
                metric,
                &panel.params,
                snapshot.committed_at,
                session.time_zone(),
            )? {
                Some(args) => Some(run(metric, &args).await.map_err(query_error)?),
                None => None,
            }
        } else {
            None
        };
        let panel = &panel.with_currency(snapshot.mapping.currency.as_deref());
        let mut chart = Chart::from_result(
            panel,
            &result.batches,
            previous.as_ref().map(|p| p.batches.as_slice()),
        )?;
        chart.mark_in_progress(
            snapshot
                .committed_at
                .with_timezone(&session.time_zone())
                .date_naive(),
        );
        let mut files = Vec::new();
        for format in formats {
            let bytes = match format {
                Format::Svg => chart.to_svg()?.into_bytes(),
                Format::Png => chart.to_png()?,
            };
            files.push((*format, bytes));
        }
        out.push(RenderedPanel {
            panel: panel.clone(),
            chart,
            rows: result.rows(),
            result,
            files,
        });
    }
    Ok(out)
}

/// The same parameters moved one period back: `[from − (to − from), from)`, for metrics with
/// timestamp parameters `from` and `to`; `None` for metrics without a period.
fn previous_period(
    metric: &Metric,
    args: &[(String, String)],
    now: chrono::DateTime<chrono::Utc>,
    zone: chrono_tz::Tz,
) -> Result<Option<Vec<(String, String)>>> {
    if !(metric.has_param("from") && metric.has_param("to")) {
        return Ok(None);
    }
    let bound = kartoteka_queries::bind(metric, args, now, zone).map_err(query_error)?;
    let micros = |name: &str| match bound.get(name) {
        Some(ScalarValue::TimestampMicrosecond(Some(v), _)) => Some(*v),
        _ => None,
    };
    let (Some(from), Some(to)) = (micros("from"), micros("to")) else {
        return Ok(None);
    };
    let text = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    let (Some(prev_from), Some(prev_to)) = (text(from - (to - from)), text(from)) else {
        return Ok(None);
    };
    let mut out: Vec<(String, String)> = args
        .iter()
        .filter(|(k, _)| k != "from" && k != "to")
        .cloned()
        .collect();
    out.push(("from".into(), prev_from));
    out.push(("to".into(), prev_to));
    Ok(Some(out))
}

/// An answer of no columns and no rows (for tests that build a rendering by hand).
#[cfg(test)]
pub(crate) fn no_answer() -> Arc<QueryResult> {
    Arc::new(QueryResult {
        schema: Arc::new(arrow::datatypes::Schema::empty()),
        batches: Vec::new(),
        snapshot_id: 0,
        snapshot_time: chrono::DateTime::UNIX_EPOCH,
        elapsed: std::time::Duration::ZERO,
    })
}

fn engine_error(e: kartoteka_engine::Error) -> Error {
    Error::Query(e.to_string())
}

fn query_error(e: kartoteka_queries::Error) -> Error {
    Error::Query(e.to_string())
}

/// The logins `spec` goes to: active users with one of its roles, and its named users (when active).
pub fn recipients(spec: &ReportSpec, users: &[kartoteka_engine::control::User]) -> Vec<String> {
    let mut out: Vec<String> = users
        .iter()
        .filter(|u| u.status == kartoteka_engine::control::UserStatus::Active)
        .filter(|u| spec.audience.roles.contains(&u.role) || spec.audience.users.contains(&u.login))
        .map(|u| u.login.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One recipient's outcome of a report run.
#[derive(Debug)]
pub struct Delivered {
    /// Login.
    pub recipient: String,
    /// The archived copy (its `outcome` says whether it rendered), and the rendering when it did.
    pub run: kartoteka_engine::control::ReportRun,
    /// The rendering, when it succeeded.
    pub rendered: Option<Rendered>,
}

/// Render `spec` once per recipient, each under the recipient's own policy, and archive every copy
/// (failures too). A failure for one recipient does not stop the others.
pub async fn run_report(
    engine: &Engine,
    catalog: &Catalog,
    control: &kartoteka_engine::control::ControlPlane,
    archive: &crate::archive::Archive,
    spec: &ReportSpec,
    trigger: crate::job::Trigger,
) -> Result<Vec<Delivered>> {
    let users = control.list_users().await.map_err(engine_error)?;
    // Whoever runs the report acts (the owner by hand, the scheduler on its schedule); each copy is
    // rendered on behalf of its recipient, under the recipient's policy.
    let actor = trigger.actor();
    // Every copy of one run reads the same snapshot, and each recipient is resolved at it (a team
    // lead's team as of that snapshot).
    let snapshot = engine.lake().current().await.map_err(engine_error)?;
    let mut out = Vec::new();
    for login in recipients(spec, &users) {
        let started = chrono::Utc::now();
        let rendered = async {
            let principal = kartoteka_engine::principal::resolve(
                engine,
                control,
                &login,
                Some(actor),
                &snapshot,
            )
            .await
            .map_err(engine_error)?;
            render(engine, catalog, spec, &principal, snapshot.clone()).await
        }
        .await;
        let (run, rendered) = match rendered {
            Ok(r) => (archive.store(&r, trigger.as_str(), started).await?, Some(r)),
            Err(e) => (
                archive
                    .record_failure(&spec.id, &login, trigger.as_str(), started, &e.to_string())
                    .await?,
                None,
            ),
        };
        out.push(Delivered {
            recipient: login,
            run,
            rendered,
        });
    }
    Ok(out)
}
