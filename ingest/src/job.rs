//! The ingest job, as every front end runs it (the CLI's `ingest`, `serve`'s schedule, later the web
//! app): record the run, read the source into one reconciled snapshot, compact when due, record the
//! outcome and audit it. Front ends only build a [`IngestJob`] from their configuration and present
//! the [`JobOutcome`].

use std::path::Path;

use kartoteka_engine::Engine;
use kartoteka_engine::audit::{Event, Outcome};
use kartoteka_engine::control::{ControlPlane, RunMode, RunOutcome};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::run::{IngestOptions, IngestReport, LoadMode, Progress, ingest};
use crate::source::{Source, SourceSpec};

/// Compact after an ingest once a table holds more than this many files (incremental runs add a few
/// small files each).
pub const AUTO_COMPACT_FILES: usize = 32;

/// One ingest of a named source.
#[derive(Debug)]
pub struct IngestJob<'a> {
    /// The source's name (in runs, the audit log and the snapshot's operation).
    pub name: &'a str,
    /// How to reach it.
    pub source: &'a SourceSpec,
    /// Its mapping file.
    pub mapping: &'a Path,
    /// Full or incremental, consent, reconciliation.
    pub options: IngestOptions,
    /// Who runs it (the audit log's actor): `owner` by hand, `scheduler` on a schedule.
    pub actor: &'a str,
}

/// What an ingest job did.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutcome {
    /// The run's id in the control plane (`kartoteka runs`).
    pub run: i64,
    /// The committed snapshot and per-table figures, reconciliation included.
    pub report: IngestReport,
    /// Tables compacted after the ingest, and the snapshot that holds them.
    pub compacted: Option<(Vec<String>, u64)>,
}

/// Observes a job: the source opened, then the per-table progress of [`Progress`].
pub trait JobProgress: Progress {
    /// The source `name` is open (shown as `source`) and its mapping `mapping` loaded.
    fn source_opened(&self, _name: &str, _source: &str, _mapping: &str) {}
}

/// Run `job` against the lake behind `engine`, recording it in `control` and in the engine's audit
/// log, success or failure.
pub async fn run_job(
    engine: &Engine,
    control: &ControlPlane,
    job: IngestJob<'_>,
    progress: &dyn JobProgress,
) -> Result<JobOutcome> {
    let run = control
        .start_ingest_run(
            job.name,
            if job.options.full {
                RunMode::Full
            } else {
                RunMode::Auto
            },
        )
        .await?;
    let outcome = async {
        let mapping = Mapping::load(job.mapping)?;
        let db = Source::open_for(job.source, &mapping).await?;
        progress.source_opened(job.name, &db.display(), &mapping.name);
        let report = ingest(
            engine,
            &db,
            &mapping,
            &format!("ingest {}", job.name),
            progress,
            job.options,
        )
        .await?;
        let snapshot = engine.lake().snapshot(report.snapshot_id).await?;
        let mut compacted = None;
        if snapshot
            .tables
            .values()
            .any(|t| t.files.len() > AUTO_COMPACT_FILES)
        {
            let (tables, snapshot) = engine.compact(AUTO_COMPACT_FILES).await?;
            compacted = snapshot.map(|s| (tables, s.id));
        }
        Ok::<_, Error>((report, compacted))
    }
    .await;
    let tables = match &outcome {
        Ok((report, _)) => table_details(report),
        Err(_) => serde_json::json!([]),
    };
    let (status, snapshot, error) = match &outcome {
        Ok((r, _)) => (RunOutcome::Ok, Some(r.snapshot_id), None),
        // A failed reconciliation commits nothing; the run is recorded as a mismatch.
        Err(e @ Error::Reconciliation { .. }) => (RunOutcome::Mismatch, None, Some(e.to_string())),
        Err(e) => (RunOutcome::Failed, None, Some(e.to_string())),
    };
    control
        .finish_ingest_run(run, status, snapshot, error.as_deref(), &tables)
        .await?;
    if let Some(audit) = engine.audit() {
        let (details, verdict) = match &outcome {
            Ok((r, _)) => (
                serde_json::json!({
                    "snapshot": r.snapshot_id,
                    "mode": if r.tables.iter().any(|t| t.mode == LoadMode::Incremental) { LoadMode::Incremental } else { LoadMode::Full },
                    "run": run,
                    "rows": r.tables.iter().map(|t| (t.table.clone(), t.rows)).collect::<std::collections::BTreeMap<_, _>>(),
                    "pii_refused": r.tables.iter().map(|t| t.pii_refused).sum::<u64>(),
                    "reconciled": r.checks.iter().all(|c| c.matches()),
                    "seconds": r.seconds.round() as u64,
                }),
                Outcome::Ok,
            ),
            Err(e) => (
                serde_json::json!({ "error": e.to_string(), "run": run }),
                Outcome::Error,
            ),
        };
        audit.append(Event {
            actor: job.actor.into(),
            action: kartoteka_engine::audit::action::INGEST.into(),
            target: job.name.into(),
            details,
            outcome: verdict,
        })?;
    }
    let (report, compacted) = outcome?;
    Ok(JobOutcome {
        run,
        report,
        compacted,
    })
}

/// Per table, what `kartoteka runs --format json` shows.
fn table_details(report: &IngestReport) -> serde_json::Value {
    serde_json::json!(
        report
            .tables
            .iter()
            .map(|t| {
                let check = report.checks.iter().find(|c| c.table == t.table);
                serde_json::json!({
                    "table": t.table, "mode": t.mode, "rows_read": t.rows, "rows_written": t.rows,
                    "rows_dropped": t.rows_dropped, "live_rows": t.live_rows, "files": t.files,
                    "bytes": t.bytes, "seconds": t.seconds, "pii_refused": t.pii_refused,
                    "cursor_before": t.cursor_before, "cursor_after": t.cursor_after,
                    "source_keys": check.map(|c| c.source), "source_keys_from": t.source_keys_from,
                    "lake_keys": check.map(|c| c.lake),
                    "lake_duplicate_keys": check.map(|c| c.lake_duplicates),
                    "reconciled": check.map(|c| c.matches()),
                })
            })
            .collect::<Vec<_>>()
    )
}
