//! `kartoteka serve`: the long-running process. It runs the one scheduler (`scheduler`) that
//! fires the scheduled jobs — an ingest per source with a `schedule`, a report run per valid report
//! spec, compaction on `[ingest] compact_schedule` — until SIGINT or SIGTERM; and, when the config has
//! a `[web]` section, the HTTPS server of `kartoteka-dashboards` (today its health check; sign-in and
//! the dashboards are built on it next).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kartoteka_engine::audit::action;
use kartoteka_reports::schedule::Schedule;

use self::scheduler::{Job, JobFuture, JobId, Scheduler};

use crate::home::Home;
use crate::{admin, ingest};

mod scheduler;

/// How long a stop waits for runs still going (an interrupted ingest is safe: it commits nothing and
/// the next start catches up).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The jobs the config and the report specs declare. Invalid report specs are reported and left
/// out; the rest run.
async fn jobs(
    home: &Arc<Home>,
    lake: &Arc<kartoteka_engine::Lake>,
    control: &Arc<kartoteka_engine::control::ControlPlane>,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let default_zone = home.config.query.time_zone.clone();
    for (name, source) in &home.config.sources {
        let Some(schedule) = source_schedule(home, name, source)? else {
            continue;
        };
        let (home, lake, name, source) = (home.clone(), lake.clone(), name.clone(), source.clone());
        jobs.push(Job {
            id: JobId::Ingest(name.clone()),
            schedule,
            run: Arc::new(move |_slot| {
                let (home, lake, name, source) =
                    (home.clone(), lake.clone(), name.clone(), source.clone());
                blocking_job(move || async move {
                    ingest(&home, &lake, &name, &source, false, "scheduler")
                        .await
                        .map(|r| format!("snapshot {}", r.snapshot_id))
                })
            }),
        });
    }
    let (specs, errors) = crate::report::load_specs(home, control).await?;
    for e in &errors {
        eprintln!("INVALID report spec, not scheduled: {e}");
        let failed: std::result::Result<(), String> = Err(e.to_string());
        admin::record(
            home,
            action::REPORT_INVALID,
            &e.file.display().to_string(),
            &failed,
            |_| serde_json::Value::Null,
        )?;
    }
    for spec in specs {
        let (home, lake, control) = (home.clone(), lake.clone(), control.clone());
        let spec = Arc::new(spec);
        jobs.push(Job {
            id: JobId::Report(spec.id.clone()),
            schedule: spec.schedule.clone(),
            run: Arc::new(move |_slot| {
                let (home, lake, control, spec) =
                    (home.clone(), lake.clone(), control.clone(), spec.clone());
                Box::pin(async move {
                    crate::report::run_spec(
                        &home,
                        lake,
                        control,
                        &spec,
                        kartoteka_reports::job::Trigger::Schedule,
                        None,
                    )
                    .await
                }) as JobFuture
            }),
        });
    }
    if let Some(expr) = &home.config.ingest.compact_schedule {
        let schedule = Schedule::parse(expr, &default_zone)
            .map_err(|e| anyhow!("[ingest] compact_schedule: {e}"))?;
        let (home, lake) = (home.clone(), lake.clone());
        jobs.push(Job {
            id: JobId::Compact,
            schedule,
            run: Arc::new(move |_slot| {
                let (home, lake) = (home.clone(), lake.clone());
                blocking_job(move || async move { compact(&home, lake).await })
            }),
        });
    }
    Ok(jobs)
}

/// The ingest schedule of source `name`, in its time zone (the reporting zone unless it names one);
/// `None` when it is loaded by hand.
fn source_schedule(
    home: &Home,
    name: &str,
    source: &crate::home::SourceConfig,
) -> Result<Option<Schedule>> {
    let Some(expr) = &source.schedule else {
        return Ok(None);
    };
    let zone = source
        .time_zone
        .as_deref()
        .unwrap_or(&home.config.query.time_zone);
    Schedule::parse(expr, zone)
        .map(Some)
        .map_err(|e| anyhow!("[sources.{name}] schedule: {e}"))
}

/// A job runs to completion on a blocking thread of the runtime, its future need not be `Send` (it
/// had to be so while the lake writer's futures held Parquet encoders across awaits; the encoders now
/// live on threads of their own, and whether every job's future is `Send` has not been checked).
fn blocking_job<F>(make: impl FnOnce() -> F + Send + 'static) -> JobFuture
where
    F: std::future::Future<Output = Result<String>> + 'static,
{
    let handle = tokio::runtime::Handle::current();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || handle.block_on(make()))
            .await
            .context("the job's task failed")?
    })
}

async fn compact(home: &Home, lake: Arc<kartoteka_engine::Lake>) -> Result<String> {
    let engine = home.engine(lake)?;
    let outcome = engine
        .compact(kartoteka_ingest::job::AUTO_COMPACT_FILES)
        .await;
    admin::record(
        home,
        action::COMPACT,
        "lake",
        &outcome,
        |(tables, snapshot)| serde_json::json!({ "tables": tables, "snapshot": snapshot.as_ref().map(|s| s.id), "scheduled": true }),
    )?;
    Ok(match outcome? {
        (tables, Some(s)) => format!("compacted {} into snapshot {}", tables.join(", "), s.id),
        (_, None) => "nothing to compact".into(),
    })
}

/// Run the scheduler until a stop signal.
pub(crate) async fn serve(dir: &Path) -> Result<()> {
    let home = Arc::new(Home::open(dir)?);
    let lake = home
        .lake()
        .await
        .context("serve runs jobs over an existing lake; create one with `kartoteka demo` or `kartoteka ingest`")?;
    let control = Arc::new(home.control().await?);
    let jobs = jobs(&home, &lake, &control).await?;
    let (web_stop, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let web = match &home.config.web {
        Some(web) => {
            let shown = jobs
                .iter()
                .map(|j| (j.id.to_string(), j.schedule.clone()))
                .collect();
            Some(start_web(&home, &lake, &control, web, shown, web_stopped).await?)
        }
        None => None,
    };
    if jobs.is_empty() && web.is_none() {
        bail!(
            "nothing to serve: no source has a schedule and there are no report specs; add `schedule = \"*/15 * * * *\"` \
             to a [sources.NAME] section of {}, or a report spec to {}",
            home.dir.join(crate::home::CONFIG_FILE).display(),
            home.path(&home.config.reports.dir).display()
        );
    }
    let now = chrono::Utc::now();
    for job in &jobs {
        let next = job
            .schedule
            .next_after(now)
            .map(|t| {
                t.with_timezone(&job.schedule.zone())
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_else(|| "never".into());
        eprintln!("job {}: {} — next run {next}", job.id, job.schedule);
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let started = Scheduler::start(control, jobs).await;
    admin::record(
        &home,
        action::SERVE_START,
        "scheduler",
        &started,
        |_| serde_json::json!({ "jobs": ids, "pid": std::process::id() }),
    )?;
    let scheduler = started?;
    eprintln!("serving; stop with Ctrl-C or SIGTERM");
    stop_signal().await?;
    let _ = web_stop.send(());
    if let Some(web) = web {
        let _ = tokio::time::timeout(Duration::from_secs(5), web).await;
    }
    eprintln!(
        "stopping: no new runs; waiting up to {} s for runs going",
        STOP_GRACE.as_secs()
    );
    let still: Vec<String> = scheduler
        .shutdown(STOP_GRACE)
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    let stopped: Result<Vec<String>> = Ok(still.clone());
    admin::record(
        &home,
        action::SERVE_STOP,
        "scheduler",
        &stopped,
        |still| serde_json::json!({ "still_running": still }),
    )?;
    if !still.is_empty() {
        eprintln!(
            "left running at exit: {} (nothing half-committed; the next start catches up)",
            still.join(", ")
        );
    }
    Ok(())
}

/// Bind `[web] listen`, load or generate the certificate, and serve until `stop`; says where and
/// which certificate (its SHA-256, to compare with what the browser shows).
async fn start_web(
    home: &Home,
    lake: &Arc<kartoteka_engine::Lake>,
    control: &Arc<kartoteka_engine::control::ControlPlane>,
    web: &crate::home::WebConfig,
    jobs: Vec<(String, Schedule)>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(&web.listen)
        .await
        .with_context(|| format!("[web] listen = {:?}: cannot listen there", web.listen))?;
    let addr = listener.local_addr()?;
    let tls = if web.plain_http {
        if !addr.ip().is_loopback() {
            bail!(
                "[web] plain_http = true on {addr}: passwords and session cookies would cross the \
                 network in the clear; plain HTTP is allowed on loopback only"
            );
        }
        eprintln!("web: http://{addr} (plain HTTP, loopback only)");
        None
    } else {
        let cert = kartoteka_dashboards::load_or_generate(
            &home.dir,
            web.cert.as_deref().map(|p| home.path(p)).as_deref(),
            web.key.as_deref().map(|p| home.path(p)).as_deref(),
            &web.names,
        )?;
        eprintln!(
            "web: https://{addr} — certificate SHA-256 {}{}",
            cert.fingerprint,
            match (&cert.ca_path, cert.generated) {
                (Some(ca), true) =>
                    format!(" (generated; trust {} to skip the warning)", ca.display()),
                (Some(ca), false) => format!(" (local CA {})", ca.display()),
                (None, _) => String::new(),
            }
        );
        Some(cert.config)
    };
    let sources = home
        .config
        .sources
        .iter()
        .map(|(name, source)| {
            Ok(kartoteka_dashboards::WatchedSource {
                name: name.clone(),
                schedule: source_schedule(home, name, source)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let app = Arc::new(
        kartoteka_dashboards::App::new(
            Arc::new(home.engine(lake.clone())?),
            control.clone(),
            Arc::new(kartoteka_queries::Catalog::builtin()?),
            kartoteka_dashboards::Settings {
                second_factor_for_all: web.second_factor_for_all,
                secure_cookies: tls.is_some(),
                limits: kartoteka_engine::web_session::Limits {
                    idle: Duration::from_secs(web.session_idle_seconds.max(1)),
                    absolute: Duration::from_secs(web.session_max_hours.max(1) * 3600),
                },
                ..kartoteka_dashboards::Settings::default()
            },
            sources,
        )
        .with_jobs(jobs),
    );
    Ok(tokio::spawn(async move {
        let stopped = async {
            let _ = stop.await;
        };
        if let Err(e) =
            kartoteka_dashboards::serve(listener, tls, kartoteka_dashboards::router(app), stopped)
                .await
        {
            eprintln!("web server stopped: {e}");
        }
    }))
}

async fn stop_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
