//! The report job, as every front end runs it (`kartoteka report run`, `serve`'s schedule, later the
//! web app): render once per recipient under the recipient's policy, archive every copy, audit it,
//! deliver the ones that rendered, audit each delivery, prune the archive. Front ends present the
//! [`ReportJobOutcome`] (and may write the rendered files where they like).

use kartoteka_engine::Engine;
use kartoteka_engine::audit::{Event, Outcome, action};
use kartoteka_engine::control::{ControlPlane, ReportDelivery};
use kartoteka_queries::Catalog;

use crate::archive::Archive;
use crate::deliver::Smtp;
use crate::render::{Delivered, run_report};
use crate::spec::ReportSpec;
use crate::{Error, Result};

/// One recipient's copy and what became of its deliveries.
#[derive(Debug)]
pub struct CopyOutcome {
    /// The rendered and archived copy (its run says whether it rendered).
    pub copy: Delivered,
    /// Its deliveries (e-mail, webhook), each after its retries.
    pub deliveries: Vec<ReportDelivery>,
}

/// What a report job did.
#[derive(Debug)]
pub struct ReportJobOutcome {
    /// One per recipient.
    pub copies: Vec<CopyOutcome>,
    /// Copies past the retention period deleted from the archive.
    pub pruned: usize,
}

impl ReportJobOutcome {
    /// Copies that rendered.
    pub fn rendered(&self) -> usize {
        self.copies
            .iter()
            .filter(|c| c.copy.rendered.is_some())
            .count()
    }
}

/// What started a report run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The owner, by hand (`kartoteka report run`).
    Manual,
    /// The scheduler, on the spec's schedule.
    Schedule,
}

impl Trigger {
    /// As recorded with each copy (`report runs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
        }
    }

    /// Who acts in the audit log: the owner by hand, the scheduler on a schedule (each copy is
    /// rendered on behalf of its recipient).
    pub fn actor(self) -> &'static str {
        match self {
            Trigger::Manual => "owner",
            Trigger::Schedule => "scheduler",
        }
    }
}

/// How a report job runs.
#[derive(Debug)]
pub struct ReportJob<'a> {
    /// The spec.
    pub spec: &'a ReportSpec,
    /// By hand or on the schedule.
    pub trigger: Trigger,
    /// The SMTP server, when e-mail delivery is configured.
    pub smtp: Option<&'a Smtp>,
    /// Copies older than this are deleted (each recipient's newest stays).
    pub retention: chrono::Duration,
}

/// Run `job`: every copy rendered, archived, audited and delivered; fails when nobody in the
/// audience is an active user.
pub async fn run_job(
    engine: &Engine,
    catalog: &Catalog,
    control: &ControlPlane,
    archive: &Archive,
    job: ReportJob<'_>,
) -> Result<ReportJobOutcome> {
    let spec = job.spec;
    let actor = job.trigger.actor();
    let delivered = run_report(engine, catalog, control, archive, spec, job.trigger).await?;
    if delivered.is_empty() {
        return Err(Error::Delivery(format!(
            "report {}: nobody in its audience is an active user (roles {:?}, users {:?})",
            spec.id,
            spec.audience
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
            spec.audience.users
        )));
    }
    let target = format!("report:{}", spec.id);
    let audit = |action: &str, details: serde_json::Value, outcome: Outcome| -> Result<()> {
        if let Some(log) = engine.audit() {
            log.append(Event {
                actor: actor.into(),
                action: action.into(),
                target: target.clone(),
                details,
                outcome,
            })?;
        }
        Ok(())
    };
    let mut copies = Vec::new();
    for copy in delivered {
        let run = &copy.run;
        match &run.error {
            None => audit(
                action::REPORT_RUN,
                serde_json::json!({
                    "recipient": run.recipient, "run": run.id, "trigger": run.trigger,
                    "snapshot": run.snapshot_id, "content_hash": run.content_hash,
                    "files": run.files.len(), "seconds": run.seconds,
                }),
                Outcome::Ok,
            )?,
            Some(e) => audit(
                action::REPORT_RUN,
                serde_json::json!({ "error": e, "recipient": run.recipient, "run": run.id }),
                Outcome::Error,
            )?,
        }
        let mut deliveries = Vec::new();
        if let (Some(rendered), None) = (&copy.rendered, &run.error) {
            let email = control.user(&copy.recipient).await?.and_then(|u| u.email);
            deliveries =
                crate::deliver::deliver(control, spec, job.smtp, email.as_deref(), rendered, run)
                    .await?;
            for d in &deliveries {
                let details = serde_json::json!({
                    "run": d.run_id, "channel": d.channel, "target": d.target,
                    "attempts": d.attempts,
                });
                if d.outcome == kartoteka_engine::control::DeliveryOutcome::Ok {
                    audit(action::REPORT_DELIVER, details, Outcome::Ok)?;
                } else {
                    audit(
                        action::REPORT_DELIVER,
                        serde_json::json!({
                            "error": format!("{} {}: {}", d.channel, d.outcome, d.error.as_deref().unwrap_or("")),
                        }),
                        Outcome::Error,
                    )?;
                }
            }
        }
        copies.push(CopyOutcome { copy, deliveries });
    }
    let pruned = archive.prune(job.retention).await?;
    Ok(ReportJobOutcome { copies, pruned })
}

/// What erasing a client did: in the lake, and in the report archive.
#[derive(Debug, Clone)]
pub struct ErasureOutcome {
    /// Rows, deals, the new snapshot, snapshots expired, files deleted.
    pub lake: kartoteka_engine::maintenance::Erasure,
    /// Archived report copies rendered from the expired snapshots, deleted (they may show the person).
    pub report_copies_deleted: usize,
}

/// Erase a client on request everywhere Kartoteka keeps them — every lake file and every report copy
/// drawn from a snapshot that held them — and audit it (client id and counts only: no personal data).
/// Show [`kartoteka_engine::Engine::erasure_plan`] and get the owner's confirmation first.
pub async fn erase_client(
    engine: &Engine,
    archive: &Archive,
    client_id: i64,
    actor: &str,
) -> Result<ErasureOutcome> {
    let outcome = async {
        let lake = engine.erase_client(client_id).await?;
        let report_copies_deleted = archive.purge_before_snapshot(lake.snapshot).await?;
        Ok::<_, Error>(ErasureOutcome {
            lake,
            report_copies_deleted,
        })
    }
    .await;
    if let Some(log) = engine.audit() {
        let (details, verdict) = match &outcome {
            Ok(o) => (
                serde_json::json!({
                    "deals": o.lake.deals, "removed": o.lake.removed, "snapshot": o.lake.snapshot,
                    "expired_snapshots": o.lake.expired_snapshots.len(),
                    "files_deleted": o.lake.files_deleted,
                    "report_copies_deleted": o.report_copies_deleted,
                }),
                Outcome::Ok,
            ),
            Err(e) => (
                serde_json::json!({ "error": e.to_string() }),
                Outcome::Error,
            ),
        };
        log.append(Event {
            actor: actor.into(),
            action: action::ERASE.into(),
            target: format!("client {client_id}"),
            details,
            outcome: verdict,
        })?;
    }
    outcome
}
