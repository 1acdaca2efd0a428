//! Schedules and the one scheduler `kartoteka serve` runs: ingest jobs and report jobs fire from cron
//! expressions in a named time zone.
//!
//! tokio-cron-scheduler fixes a job's UTC offset when the job is created, so a "09:00 Europe/Berlin"
//! job would fire at 10:00 after the clocks change. Here the scheduler only keeps time: each job is a
//! one-shot tokio-cron-scheduler job armed for its *next* slot, which [`Schedule`] computes with the
//! zone's real rules (croner over chrono-tz) every time, so every slot is in the offset of its own
//! day. Wall-clock times a DST change skips run at the first instant after the gap; times it repeats
//! run once, at the first occurrence.
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
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use kartoteka_engine::control::ControlPlane;
use tokio::sync::Mutex;
use tokio_cron_scheduler::JobScheduler;

/// A cron expression in a time zone.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    expr: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expr, self.zone)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.zone)
    }
}

impl Schedule {
    /// Parse `expr` — five fields (minute hour day month weekday) or six (seconds first) — in the
    /// IANA time zone `zone`.
    pub fn parse(expr: &str, zone: &str) -> Result<Schedule, String> {
        let tz: Tz = zone.parse().map_err(|_| {
            format!("unknown time zone {zone:?} (an IANA name such as Europe/Moscow)")
        })?;
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "cron expression {expr:?} has {fields} fields; write 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| format!("bad cron expression {expr:?}: {e}"))?;
        Ok(Schedule {
            cron,
            zone: tz,
            expr: expr.to_string(),
        })
    }

    /// The time zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The newest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), true)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The slot to run at `now` when slots up to `handled` are done: the newest slot in
    /// `(handled, now]`. However many slots were missed, this is one run.
    pub fn due(&self, handled: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.latest_at_or_before(now).filter(|slot| *slot > handled)
    }
}

/// What a job's run returns: `Ok` with a short summary, or the error.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Runs a job for one slot.
pub type JobFn = Arc<dyn Fn(DateTime<Utc>) -> JobFuture + Send + Sync>;

/// A scheduled job: an id (`ingest:crm`, `report:weekly`), its schedule and what it does.
#[derive(Clone)]
pub struct Job {
    /// Unique id; the control plane keeps its newest handled slot under it.
    pub id: String,
    /// When it runs.
    pub schedule: Schedule,
    /// What it does.
    pub run: JobFn,
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
pub struct Scheduler {
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
    pub async fn start(control: Arc<ControlPlane>, jobs: Vec<Job>) -> Result<Scheduler, String> {
        let mut ids = std::collections::BTreeSet::new();
        for job in &jobs {
            if !ids.insert(job.id.clone()) {
                return Err(format!("two scheduled jobs are called {:?}", job.id));
            }
        }
        let sched = JobScheduler::new()
            .await
            .map_err(|e| format!("cannot create the scheduler: {e}"))?;
        sched
            .start()
            .await
            .map_err(|e| format!("cannot start the scheduler: {e}"))?;
        let now = Utc::now();
        let mut states = Vec::new();
        for job in jobs {
            let handled = match control.job_slot(&job.id).await.map_err(|e| e.to_string())? {
                Some(last) => last.slot,
                None => {
                    control
                        .set_job_slot(&job.id, now, "armed", None)
                        .await
                        .map_err(|e| e.to_string())?;
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

    /// The jobs' ids.
    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.job.id.clone()).collect()
    }

    /// Stop firing, then wait up to `grace` for runs already going; returns the jobs still running
    /// then (they stop with the process; their next start catches up).
    pub async fn shutdown(mut self, grace: std::time::Duration) -> Vec<String> {
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
) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
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
        .map_err(|e| format!("cannot arm job {}: {e}", state.job.id))?;
        state
            .sched
            .add(one_shot)
            .await
            .map_err(|e| format!("cannot arm job {}: {e}", state.job.id))?;
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
                    "skipped",
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
                record(&state, slot, "ok", Some(&summary)).await;
            }
            Err(error) => {
                tracing::error!(job = %state.job.id, %slot, %error, "run failed");
                record(&state, slot, "failed", Some(&error)).await;
            }
        }
    });
}

async fn record(state: &JobState, slot: DateTime<Utc>, outcome: &str, detail: Option<&str>) {
    if let Err(e) = state
        .control
        .set_job_slot(&state.job.id, slot, outcome, detail)
        .await
    {
        tracing::error!(job = %state.job.id, error = %e, "cannot record the run");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn cron_expressions_and_zones_are_checked() {
        assert!(Schedule::parse("0 9 * * MON", "Europe/Moscow").is_ok());
        assert!(Schedule::parse("0 0 9 * * MON", "Europe/Moscow").is_ok());
        let e = Schedule::parse("0 9 * * MON", "Europe/Atlantis").expect_err("zone");
        assert!(e.contains("Europe/Atlantis") && e.contains("IANA"), "{e}");
        let e = Schedule::parse("0 9 * *", "UTC").expect_err("4 fields");
        assert!(e.contains("4 fields"), "{e}");
        let e = Schedule::parse("0 25 * * *", "UTC").expect_err("hour 25");
        assert!(e.contains("0 25 * * *"), "{e}");
        let e = Schedule::parse("0 9 * * FUNDAY", "UTC").expect_err("weekday");
        assert!(e.contains("FUNDAY"), "{e}");
    }

    #[test]
    fn slots_keep_local_time_across_dst() {
        // 09:00 every day in Berlin: 08:00 UTC in winter (CET), 07:00 UTC in summer (CEST). A fixed
        // offset taken at creation would drift by an hour on one side of the change.
        let s = Schedule::parse("0 9 * * *", "Europe/Berlin").expect("schedule");
        let mut t = utc("2026-03-27T12:00:00Z");
        let mut got = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).expect("next");
            got.push(t);
        }
        assert_eq!(
            got,
            vec![
                utc("2026-03-28T08:00:00Z"),
                utc("2026-03-29T07:00:00Z"),
                utc("2026-03-30T07:00:00Z"),
                utc("2026-03-31T07:00:00Z"),
            ]
        );
        let t = s.next_after(utc("2026-10-24T12:00:00Z")).expect("next");
        assert_eq!(t, utc("2026-10-25T08:00:00Z"), "back to CET on 25 October");
    }

    #[test]
    fn skipped_and_repeated_wall_clock_times_run_once() {
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("schedule");
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day and the job
        // runs at the first instant after the gap (03:00 CEST = 01:00 UTC).
        let slot = s.next_after(utc("2026-03-28T12:00:00Z")).expect("next");
        assert_eq!(slot, utc("2026-03-29T01:00:00Z"));
        assert_eq!(
            s.next_after(slot).expect("next"),
            utc("2026-03-30T00:30:00Z"),
            "02:30 CEST the next day"
        );
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice. One run, at the
        // first 02:30 (CEST, 00:30 UTC); the next is the following day.
        let slot = s.next_after(utc("2026-10-24T12:00:00Z")).expect("next");
        assert_eq!(slot, utc("2026-10-25T00:30:00Z"));
        assert_eq!(
            s.next_after(slot).expect("next"),
            utc("2026-10-26T01:30:00Z"),
            "not again at 02:30 CET"
        );
    }

    #[test]
    fn missed_slots_collapse_into_one_run() {
        let s = Schedule::parse("0 * * * *", "Asia/Yekaterinburg").expect("hourly");
        let handled = utc("2026-11-20T10:00:00Z");
        let now = utc("2026-11-23T07:42:10Z");
        assert_eq!(s.due(handled, now), Some(utc("2026-11-23T07:00:00Z")));
        assert_eq!(
            s.due(utc("2026-11-23T07:00:00Z"), now),
            None,
            "already handled"
        );
        let weekly = Schedule::parse("0 8 * * MON", "Europe/Moscow").expect("weekly");
        // Monday 23 November 2026, 08:00 MSK = 05:00 UTC.
        assert_eq!(
            weekly.due(handled, now),
            Some(
                Utc.with_ymd_and_hms(2026, 11, 23, 5, 0, 0)
                    .single()
                    .expect("t")
            )
        );
    }

    async fn control() -> (tempfile::TempDir, Arc<ControlPlane>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::open(&dir.path().join("control.sqlite"), None)
            .await
            .expect("control plane");
        (dir, Arc::new(cp))
    }

    fn counting_job(id: &str, schedule: Schedule, runs: Arc<AtomicUsize>, hold: Duration) -> Job {
        Job {
            id: id.into(),
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
        cp.set_job_slot("report:yearly", three_years_ago, "ok", None)
            .await
            .expect("seed");
        let runs = Arc::new(AtomicUsize::new(0));
        let newest = yearly.latest_at_or_before(Utc::now()).expect("a past slot");
        let sched = Scheduler::start(
            cp.clone(),
            vec![counting_job(
                "report:yearly",
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
                .is_some_and(|r| r.outcome == "ok" && r.slot == newest)
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
        assert_eq!((recorded.slot, recorded.outcome.as_str()), (newest, "ok"));
        sched.shutdown(Duration::from_secs(5)).await;

        // A job the control plane has never seen starts from now: no run for its past slots.
        let runs = Arc::new(AtomicUsize::new(0));
        let sched = Scheduler::start(
            cp.clone(),
            vec![counting_job(
                "ingest:new",
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
            "armed"
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
            id: "ingest:slow".into(),
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
            skipped |= slot.outcome == "skipped";
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
