//! `kartoteka report list|run|runs`, and the report run that `serve`'s scheduler fires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use kartoteka_engine::control::ControlPlane;
use kartoteka_engine::{Lake, Role};
use kartoteka_queries::Catalog;
use kartoteka_reports::archive::Archive;
use kartoteka_reports::spec::{self, ReportSpec, SpecError};

use crate::home::Home;
use crate::output::Format;

#[derive(Debug, Subcommand)]
pub(crate) enum ReportCommand {
    /// The report specs in the reports directory: schedule, audience, panels, next run; invalid
    /// specs are listed with the file and field at fault (and the command fails).
    List,
    /// Render a report now, once per recipient under each recipient's own policy, and archive it.
    Run {
        /// Report id.
        id: String,
        /// Also write the rendered files here, one directory per recipient.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Archived copies, newest first.
    Runs {
        /// Only this report.
        id: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Load the home's report specs, validated against the catalog and the control plane's users.
pub(crate) async fn load_specs(
    home: &Home,
    control: &ControlPlane,
) -> Result<(Vec<ReportSpec>, Vec<SpecError>)> {
    let catalog = Catalog::builtin()?;
    let users: BTreeMap<String, Role> = control
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.login, u.role))
        .collect();
    let cx = spec::Context {
        catalog: &catalog,
        users: &users,
        default_zone: &home.config.query.time_zone,
    };
    Ok(spec::load_dir(&home.path(&home.config.reports.dir), &cx))
}

/// Run `spec` now (the job lives in the reports crate): print each copy's outcome, write the
/// rendered files under `out`. Fails when no copy rendered.
pub(crate) async fn run_spec(
    home: &Home,
    lake: Arc<Lake>,
    control: Arc<ControlPlane>,
    spec: &ReportSpec,
    trigger: kartoteka_reports::job::Trigger,
    out: Option<&Path>,
) -> Result<String> {
    let engine = home.engine(lake.clone())?;
    let catalog = Catalog::builtin()?;
    let archive = Archive::new(
        home.path(&home.config.reports.archive),
        lake,
        control.clone(),
    );
    let smtp = home
        .config
        .reports
        .smtp
        .as_ref()
        .map(|s| s.resolve())
        .transpose()?;
    let job = kartoteka_reports::job::ReportJob {
        spec,
        trigger,
        smtp: smtp.as_ref(),
        retention: chrono::Duration::days(i64::from(home.config.reports.retention_days)),
    };
    let outcome =
        kartoteka_reports::job::run_job(&engine, &catalog, &control, &archive, job).await?;
    for c in &outcome.copies {
        let d = &c.copy;
        match (&d.rendered, &d.run.error) {
            (Some(r), None) => {
                for delivery in c
                    .deliveries
                    .iter()
                    .filter(|x| x.outcome != kartoteka_engine::control::DeliveryOutcome::Ok)
                {
                    eprintln!(
                        "{}: {} delivery {}: {}",
                        d.recipient,
                        delivery.channel,
                        delivery.outcome,
                        delivery.error.as_deref().unwrap_or("")
                    );
                }
                eprintln!(
                    "{}: {} panels, snapshot {}, {:.2} s, sha256 {}…",
                    d.recipient,
                    r.panels.len(),
                    r.snapshot_id,
                    r.seconds,
                    &r.content_hash[..16]
                );
                if let Some(out) = out {
                    let dir = out.join(&d.recipient);
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    for (i, p) in r.panels.iter().enumerate() {
                        for (format, bytes) in &p.files {
                            let path = dir.join(r.file_name(i, *format));
                            std::fs::write(&path, bytes)
                                .with_context(|| format!("cannot write {}", path.display()))?;
                        }
                    }
                }
            }
            (_, error) => eprintln!(
                "{}: FAILED: {}",
                d.recipient,
                error.as_deref().unwrap_or("unknown")
            ),
        }
    }
    if outcome.pruned > 0 {
        eprintln!(
            "archive: {} copies past the retention period deleted",
            outcome.pruned
        );
    }
    let ok = outcome.rendered();
    if ok == 0 {
        bail!(
            "report {}: no copy rendered ({} recipients failed; see above and `kartoteka report runs {}`)",
            spec.id,
            outcome.copies.len(),
            spec.id
        );
    }
    Ok(format!("{ok} of {} copies rendered", outcome.copies.len()))
}

pub(crate) async fn report(home: &Home, command: ReportCommand) -> Result<()> {
    let control = Arc::new(home.control().await?);
    match command {
        ReportCommand::List => {
            let (specs, errors) = load_specs(home, &control).await?;
            let now = chrono::Utc::now();
            for s in &specs {
                let next = s
                    .schedule
                    .next_after(now)
                    .map(|t| {
                        t.with_timezone(&s.schedule.zone())
                            .format("%Y-%m-%d %H:%M %Z")
                            .to_string()
                    })
                    .unwrap_or_else(|| "never".into());
                let mut audience: Vec<String> = s
                    .audience
                    .roles
                    .iter()
                    .map(|r| format!("role:{}", r.as_str()))
                    .collect();
                audience.extend(s.audience.users.iter().map(|u| format!("user:{u}")));
                outln!(
                    "{:<20} {:<36} {} — next {next}; to {}; {} panels: {}",
                    s.id,
                    s.title,
                    s.schedule,
                    audience.join(", "),
                    s.panels.len(),
                    s.panels
                        .iter()
                        .map(|p| format!("{} ({})", p.metric, p.chart.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if specs.is_empty() && errors.is_empty() {
                eprintln!(
                    "no report specs in {}",
                    home.path(&home.config.reports.dir).display()
                );
            }
            for e in &errors {
                eprintln!("INVALID {e}");
            }
            if !errors.is_empty() {
                bail!(
                    "{} report spec(s) are invalid (the others load)",
                    errors.len()
                );
            }
            Ok(())
        }
        ReportCommand::Run { id, out } => {
            let (specs, errors) = load_specs(home, &control).await?;
            let spec = specs.iter().find(|s| s.id == id).ok_or_else(|| {
                match errors.iter().find(|e| {
                    e.id.as_deref() == Some(id.as_str())
                        || e.file
                            .file_stem()
                            .is_some_and(|stem| stem.to_string_lossy() == id)
                }) {
                    Some(e) => anyhow!("report {id} is invalid: {e}"),
                    None => anyhow!(
                        "no report {id:?}; the reports are: {}",
                        specs
                            .iter()
                            .map(|s| s.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            })?;
            let lake = home.lake().await?;
            let summary = run_spec(
                home,
                lake,
                control,
                spec,
                kartoteka_reports::job::Trigger::Manual,
                out.as_deref(),
            )
            .await?;
            eprintln!("report {id}: {summary}");
            Ok(())
        }
        ReportCommand::Runs { id, limit, format } => {
            let runs = control.report_runs(id.as_deref(), None, limit).await?;
            if matches!(format, Format::Json) {
                outln!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            for r in runs {
                outln!(
                    "{:>5}  {:<20} {:<16} {:<8} {:<7} snapshot {:>5}  {:>6.2} s  {}",
                    r.id,
                    r.report,
                    r.recipient,
                    r.trigger,
                    r.outcome,
                    r.snapshot_id
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.seconds,
                    r.error
                        .as_deref()
                        .or(r.content_hash.as_deref().map(|h| &h[..16]))
                        .unwrap_or("")
                );
            }
            Ok(())
        }
    }
}
