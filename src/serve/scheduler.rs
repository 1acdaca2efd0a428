//! The one scheduler `kartoteka serve` runs: ingest, report and compaction jobs fire on their
//! [`Schedule`]s.
//!
//! tokio-cron-scheduler fixes a job's UTC offset when the job is created, so a "09:00 Europe/Berlin"
//! job would fire at 10:00 after the clocks change. Here the scheduler only keeps time: each job is a
//! one-shot tokio-cron-scheduler job armed for its *next* slot, which [`Schedule`] computes every time.
//!
//! The newest slot each job handled is kept in the control plane. At start (after downtime) a job
//! whose slots were missed runs **once**, for the newest missed slot, not once per slot. A slot that
//! comes while the job's previous run is still going is skipped and recorded as `skipped`: runs of one
//! job never overlap.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kartoteka_engine::control::{ControlPlane, SlotOutcome};
use kartoteka_reports::schedule::Schedule;
use tokio::sync::Mutex;
use tokio_cron_scheduler::JobScheduler;

/// What a job's run returns: a short summary, or the error with its causes.
pub(crate) type JobFuture = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>>;

/// Runs a job for one slot.
pub(crate) type JobFn = Arc<dyn Fn(DateTime<Utc>) -> JobFuture + Send + Sync>;

/// Which job: the control plane keeps each one's newest handled slot under its text form
/// (`ingest:crm`, `report:weekly`, `compact`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum JobId {
    /// Ingest the named source.
    Ingest(String),
    /// Render the report with this id.
    Report(String),
    /// Compact tables holding many files.
    Compact,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobId::Ingest(source) => write!(f, "ingest:{source}"),
            JobId::Report(id) => write!(f, "report:{id}"),
            JobId::Compact => f.write_str("compact"),
        }
    }
}

/// A scheduled job: its id, its schedule and what it does.
#[derive(Clone)]
pub(crate) struct Job {
    /// Unique id.
    pub(crate) id: JobId,
    /// When it runs.
    pub(crate) schedule: Schedule,
    /// What it does.
    pub(crate) run: JobFn,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

struct JobState {
    job: Job,
    /// Held while a run is going; a slot that finds it held is skipped.
    running: Arc<Mutex<()>>,
    /// The newest slot handled (in memory; the control plane has the same after each run).
    handled: std::sync::Mutex<DateTime<Utc>>,
    control: Arc<ControlPlane>,
    sched: JobScheduler,
}

/// The scheduler: owns the tokio-cron-scheduler and the jobs' state.
pub(crate) struct Scheduler {
    sched: JobScheduler,
    jobs: Vec<Arc<JobState>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field(
                "jobs",
                &self.jobs.iter().map(|j| &j.job.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Scheduler {
    /// Start `jobs`: each job whose slots were missed while nothing ran runs once now, then every job
    /// is armed for its next slot. A job new to this control plane starts from now (its past slots
    /// are not run).
    pub(crate) async fn start(
        control: Arc<ControlPlane>,
        jobs: Vec<Job>,
    ) -> anyhow::Result<Scheduler> {
        use anyhow::Context as _;
        let mut ids = std::collections::BTreeSet::new();
        for job in &jobs {
            if !ids.insert(job.id.clone()) {
                anyhow::bail!("two scheduled jobs are called {}", job.id);
            }
        }
        let sched = JobScheduler::new()
            .await
            .context("cannot create the scheduler")?;
        sched.start().await.context("cannot start the scheduler")?;
        let now = Utc::now();
        let mut states = Vec::new();
        for job in jobs {
            let key = job.id.to_string();
            let handled = match control.job_slot(&key).await? {
                Some(last) => last.slot,
                None => {
                    control
                        .set_job_slot(&key, now, SlotOutcome::Armed, None)
                        .await?;
                    now
                }
            };
            let state = Arc::new(JobState {
                job,
                running: Arc::new(Mutex::new(())),
                handled: std::sync::Mutex::new(handled),
                control: control.clone(),
                sched: sched.clone(),
            });
            if let Some(slot) = state.job.schedule.due(handled, now) {
                tracing::info!(job = %state.job.id, %slot, "catching up the newest missed slot");
                spawn_run(state.clone(), slot);
            }
            arm(state.clone(), now).await?;
            states.push(state);
        }
        Ok(Scheduler {
            sched,
            jobs: states,
        })
    }

    /// Stop firing, then wait up to `grace` for runs already going; returns the jobs still running
    /// then (they stop with the process; their next start catches up).
    pub(crate) async fn shutdown(mut self, grace: std::time::Duration) -> Vec<JobId> {
        if let Err(e) = self.sched.shutdown().await {
            tracing::warn!(error = %e, "scheduler shutdown");
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut still = Vec::new();
        for state in &self.jobs {
            if tokio::time::timeout_at(deadline, state.running.lock())
                .await
                .is_err()
            {
                still.push(state.job.id.clone());
            }
        }
        still
    }
}

/// Arm a one-shot job for the first slot after `after`. (A boxed future: `fire` and `arm` refer to
/// each other, and a named type lets the compiler see both are `Send`.)
fn arm(
    state: Arc<JobState>,
    after: DateTime<Utc>,
) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
    Box::pin(async move {
        let Some(slot) = state.job.schedule.next_after(after) else {
            tracing::info!(job = %state.job.id, "the schedule has no further slots");
            return Ok(());
        };
        let delay = (slot - Utc::now()).to_std().unwrap_or_default();
        let fired = state.clone();
        let one_shot = tokio_cron_scheduler::Job::new_one_shot_async(delay, move |_, _| {
            let state = fired.clone();
            Box::pin(async move { fire(state, slot).await })
        })
        .map_err(|e| anyhow::anyhow!("cannot arm job {}: {e}", state.job.id))?;
        state
            .sched
            .add(one_shot)
            .await
            .map_err(|e| anyhow::anyhow!("cannot arm job {}: {e}", state.job.id))?;
        Ok(())
    })
}

/// A one-shot job fired for `slot`: run it (unless the clock says it is early), then arm the next.
async fn fire(state: Arc<JobState>, slot: DateTime<Utc>) {
    let mut now = Utc::now();
    if now < slot {
        let early = (slot - now).to_std().unwrap_or_default();
        if early <= std::time::Duration::from_secs(2) {
            // tokio-cron-scheduler counts one-shot delays in whole seconds: wait out the rest.
            tokio::time::sleep(early).await;
            now = Utc::now().max(slot);
        } else {
            // The wall clock moved back since the job was armed: wait for the real slot.
            if let Err(e) = arm(state.clone(), slot - chrono::Duration::microseconds(1)).await {
                tracing::error!(job = %state.job.id, error = %e, "re-arming failed");
            }
            return;
        }
    }
    let handled = *state.handled.lock().expect("handled slot lock");
    if let Some(slot) = state.job.schedule.due(handled, now) {
        spawn_run(state.clone(), slot);
    }
    if let Err(e) = arm(state.clone(), now.max(slot)).await {
        tracing::error!(job = %state.job.id, error = %e, "arming the next slot failed");
    }
}

/// Run the job for `slot` on its own task, unless its previous run is still going.
fn spawn_run(state: Arc<JobState>, slot: DateTime<Utc>) {
    let guard = match state.running.clone().try_lock_owned() {
        Ok(guard) => guard,
        Err(_) => {
            tracing::warn!(job = %state.job.id, %slot, "skipped: the previous run is still going");
            *state.handled.lock().expect("handled slot lock") = slot;
            tokio::spawn(async move {
                record(
                    &state,
                    slot,
                    SlotOutcome::Skipped,
                    Some("the previous run was still going"),
                )
                .await;
            });
            return;
        }
    };
    *state.handled.lock().expect("handled slot lock") = slot;
    tokio::spawn(async move {
        let _running = guard;
        tracing::info!(job = %state.job.id, %slot, "run starts");
        match (state.job.run)(slot).await {
            Ok(summary) => {
                tracing::info!(job = %state.job.id, %slot, %summary, "run ok");
                record(&state, slot, SlotOutcome::Ok, Some(&summary)).await;
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(job = %state.job.id, %slot, %error, "run failed");
                record(&state, slot, SlotOutcome::Failed, Some(&error)).await;
            }
        }
    });
}

async fn record(state: &JobState, slot: DateTime<Utc>, outcome: SlotOutcome, detail: Option<&str>) {
    if let Err(e) = state
        .control
        .set_job_slot(&state.job.id.to_string(), slot, outcome, detail)
        .await
    {
        tracing::error!(job = %state.job.id, error = %e, "cannot record the run");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    async fn control() -> (tempfile::TempDir, Arc<ControlPlane>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::open(&dir.path().join("control.sqlite"), None)
            .await
            .expect("control plane");
        (dir, Arc::new(cp))
    }

    fn counting_job(id: JobId, schedule: Schedule, runs: Arc<AtomicUsize>, hold: Duration) -> Job {
        Job {
            id,
            schedule,
            run: Arc::new(move |slot| {
                let runs = runs.clone();
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(hold).await;
                    Ok(format!("ran for {slot}"))
                }) as JobFuture
            }),
        }
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn after_an_outage_a_job_catches_up_once() {
        let (_dir, cp) = control().await;
        // New Year's midnight in Moscow; the last handled slot was three years ago.
        let yearly = Schedule::parse("0 0 1 1 *", "Europe/Moscow").expect("yearly");
        let three_years_ago = Utc::now() - chrono::Duration::days(3 * 366);
        cp.set_job_slot("report:yearly", three_years_ago, SlotOutcome::Ok, None)
            .await
            .expect("seed");
        let runs = Arc::new(AtomicUsize::new(0));
        let newest = yearly.latest_at_or_before(Utc::now()).expect("a past slot");
        let sched = Scheduler::start(
            cp.clone(),
            vec![counting_job(
                JobId::Report("yearly".into()),
                yearly,
                runs.clone(),
                Duration::ZERO,
            )],
        )
        .await
        .expect("start");
        wait_for("the catch-up run", || runs.load(Ordering::SeqCst) >= 1).await;
        let mut recorded = None;
        for _ in 0..100 {
            recorded = cp.job_slot("report:yearly").await.expect("slot");
            if recorded
                .as_ref()
                .is_some_and(|r| r.outcome == SlotOutcome::Ok && r.slot == newest)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "one run for three missed slots"
        );
        let recorded = recorded.expect("recorded");
        assert_eq!((recorded.slot, recorded.outcome), (newest, SlotOutcome::Ok));
        sched.shutdown(Duration::from_secs(5)).await;

        // A job the control plane has never seen starts from now: no run for its past slots.
        let runs = Arc::new(AtomicUsize::new(0));
        let sched = Scheduler::start(
            cp.clone(),
            vec![counting_job(
                JobId::Ingest("new".into()),
                Schedule::parse("0 0 1 1 *", "UTC").expect("yearly"),
                runs.clone(),
                Duration::ZERO,
            )],
        )
        .await
        .expect("start");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(
            cp.job_slot("ingest:new")
                .await
                .expect("slot")
                .expect("armed")
                .outcome,
            SlotOutcome::Armed
        );
        sched.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn runs_of_one_job_never_overlap() {
        let (_dir, cp) = control().await;
        let every_second = Schedule::parse("* * * * * *", "UTC").expect("every second");
        let active = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let (a, m, r) = (active.clone(), most.clone(), runs.clone());
        let job = Job {
            id: JobId::Ingest("slow".into()),
            schedule: every_second,
            run: Arc::new(move |_| {
                let (a, m, r) = (a.clone(), m.clone(), r.clone());
                Box::pin(async move {
                    let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    r.fetch_add(1, Ordering::SeqCst);
                    // Each run lasts 2.5 slots.
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    a.fetch_sub(1, Ordering::SeqCst);
                    Ok("done".into())
                }) as JobFuture
            }),
        };
        let sched = Scheduler::start(cp.clone(), vec![job])
            .await
            .expect("start");
        let mut skipped = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let slot = cp
                .job_slot("ingest:slow")
                .await
                .expect("slot")
                .expect("row");
            skipped |= slot.outcome == SlotOutcome::Skipped;
            if skipped && runs.load(Ordering::SeqCst) >= 2 {
                break;
            }
        }
        sched.shutdown(Duration::from_secs(5)).await;
        assert!(
            skipped,
            "a slot that came during a run was skipped and recorded"
        );
        assert!(runs.load(Ordering::SeqCst) >= 2, "the job kept running");
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two runs at once");
    }
}
