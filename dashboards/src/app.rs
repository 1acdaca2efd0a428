//! What every request handler shares: the engine, the identity store, the catalog, the answer cache,
//! the drawn-panel cache, the sign-in settings — and the one way a request becomes a principal
//! ([`App::viewer_now`]) and a query session ([`App::session_for`]), through the engine's principal
//! resolver at the current snapshot, so a role change or a disable applies at the next request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kartoteka_engine::audit::{Event, Outcome};
use kartoteka_engine::control::ControlPlane;
use kartoteka_engine::web_session::Limits;
use kartoteka_engine::{Engine, Principal, QuerySession, Role, Snapshot};
use kartoteka_queries::{AnswerCache, Catalog};
use kartoteka_reports::schedule::Schedule;

use crate::html::DataAsOf;

/// How sign-in works here.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A second factor for every role (owner and admin always need one); the owner's config can turn
    /// it off for the others (`[web] second_factor_for_all = false`).
    pub second_factor_for_all: bool,
    /// Cookies carry `Secure` and the `__Host-` prefix (everything but plain HTTP on loopback).
    pub secure_cookies: bool,
    /// Idle and absolute session limits.
    pub limits: Limits,
    /// Failed sign-in attempts allowed per login within [`Settings::throttle_window`].
    pub failures_per_login: usize,
    /// Failed sign-in attempts allowed per address within the window.
    pub failures_per_ip: usize,
    /// The window failures are counted in; a throttled login or address waits it out.
    pub throttle_window: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            second_factor_for_all: true,
            secure_cookies: true,
            limits: Limits::default(),
            failures_per_login: 5,
            failures_per_ip: 30,
            throttle_window: Duration::from_secs(15 * 60),
        }
    }
}

impl Settings {
    /// Does `role` need a second factor?
    pub fn needs_second_factor(&self, role: Role) -> bool {
        matches!(role, Role::Owner | Role::Admin) || self.second_factor_for_all
    }
}

/// A source the staleness banner watches: its name and the schedule its ingest runs on.
#[derive(Debug, Clone)]
pub struct WatchedSource {
    /// Source name.
    pub name: String,
    /// Its ingest schedule (`None`: loaded by hand, never called stale).
    pub schedule: Option<Schedule>,
}

/// The web app's shared state.
pub struct App {
    /// The engine (every query goes through its policy).
    pub engine: Arc<Engine>,
    /// Users, sessions, second factors, run history.
    pub control: Arc<ControlPlane>,
    /// The metric catalog.
    pub catalog: Arc<Catalog>,
    /// Metric answers per (snapshot, scope, metric, parameters).
    pub cache: AnswerCache,
    /// Sign-in settings.
    pub settings: Settings,
    /// Sources and their schedules.
    pub sources: Vec<WatchedSource>,
    /// The scheduler's jobs (`ingest:crm`, `report:weekly`, …) and their schedules.
    pub jobs: Vec<(String, Schedule)>,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    /// Drawn panels by (snapshot, viewer's scope, language, panel, parameters): HTML with the chart.
    drawn: Mutex<HashMap<String, (u64, Arc<str>)>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl App {
    /// The app over `engine` and `control`.
    pub fn new(
        engine: Arc<Engine>,
        control: Arc<ControlPlane>,
        catalog: Arc<Catalog>,
        settings: Settings,
        sources: Vec<WatchedSource>,
    ) -> App {
        App {
            engine,
            control,
            catalog,
            cache: AnswerCache::new(4096),
            settings,
            sources,
            jobs: Vec::new(),
            failures: Mutex::new(HashMap::new()),
            drawn: Mutex::new(HashMap::new()),
        }
    }

    /// The app with the scheduler's `jobs` shown on the system page.
    pub fn with_jobs(mut self, jobs: Vec<(String, Schedule)>) -> App {
        self.jobs = jobs;
        self
    }

    /// Record `event` in the audit log (when the engine has one).
    pub fn audit(&self, event: Event) -> crate::Result<()> {
        if let Some(log) = self.engine.audit() {
            log.append(event)
                .map_err(|e| crate::Error::Engine(e.to_string()))?;
        }
        Ok(())
    }

    /// Record a sign-in step's outcome: who (as typed), which step, from where.
    pub fn audit_sign_in(
        &self,
        login: &str,
        step: &str,
        ok: bool,
        ip: IpAddr,
        user_agent: &str,
    ) -> crate::Result<()> {
        // What was typed as a login is cut (a password typed into the wrong field should not sit in
        // the log whole) and kept to printable text.
        let typed: String = login.chars().filter(|c| !c.is_control()).take(64).collect();
        self.audit(Event {
            actor: typed.clone(),
            action: kartoteka_engine::audit::action::WEB_SIGN_IN.into(),
            target: typed,
            details: serde_json::json!({
                "step": step,
                "ip": ip.to_string(),
                "user_agent": user_agent.chars().take(256).collect::<String>(),
            }),
            outcome: if ok { Outcome::Ok } else { Outcome::Denied },
        })
    }

    /// Is sign-in refused for `login` or `ip` for now (too many recent failures)?
    pub fn throttled(&self, login: &str, ip: IpAddr) -> bool {
        let window = self.settings.throttle_window;
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut recent = |key: String| {
            let list = failures.entry(key).or_default();
            list.retain(|t| t.elapsed() < window);
            list.len()
        };
        recent(format!("login:{login}")) >= self.settings.failures_per_login
            || recent(format!("ip:{ip}")) >= self.settings.failures_per_ip
    }

    /// Count a failed attempt against `login` and `ip`.
    pub fn count_failure(&self, login: &str, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Logins sprayed at random must not grow the map without end: past a size, forget what
        // has left the window.
        if failures.len() > 10_000 {
            let window = self.settings.throttle_window;
            failures.retain(|_, times| {
                times.retain(|t| t.elapsed() < window);
                !times.is_empty()
            });
        }
        failures
            .entry(format!("login:{login}"))
            .or_default()
            .push(now);
        failures.entry(format!("ip:{ip}")).or_default().push(now);
    }

    /// Who `login` is now: the current snapshot and the principal resolved at it (role, staff
    /// record, status and team as the control plane and the snapshot say now).
    pub async fn viewer_now(&self, login: &str) -> crate::Result<(Snapshot, Principal)> {
        let snapshot = self
            .engine
            .lake()
            .current()
            .await
            .map_err(|e| crate::Error::Engine(e.to_string()))?;
        let principal = kartoteka_engine::principal::resolve(
            &self.engine,
            &self.control,
            login,
            None,
            &snapshot,
        )
        .await
        .map_err(|e| crate::Error::Engine(e.to_string()))?;
        Ok((snapshot, principal))
    }

    /// A query session for `principal` over `snapshot`, under the principal's policy.
    pub async fn session_for(
        &self,
        principal: &Principal,
        snapshot: &Snapshot,
    ) -> crate::Result<QuerySession> {
        self.engine
            .session_at(principal, snapshot.clone())
            .await
            .map_err(|e| crate::Error::Engine(e.to_string()))
    }

    /// A query session for `login` over the current snapshot.
    pub async fn query_session(&self, login: &str) -> crate::Result<QuerySession> {
        let (snapshot, principal) = self.viewer_now(login).await?;
        self.session_for(&principal, &snapshot).await
    }

    /// What the page frame says about `snapshot`: its id and time, and each scheduled source whose
    /// newest successful ingest is older than two of its periods.
    pub async fn data_as_of(&self, snapshot: &Snapshot) -> crate::Result<DataAsOf> {
        Ok(DataAsOf {
            snapshot: snapshot.id,
            at: snapshot.committed_at,
            zone: self.engine.config().time_zone,
            stale: self.stale_sources(Utc::now()).await?,
        })
    }

    /// A drawn piece of a page (a panel, the KPI tiles) for `key` over `snapshot`, or `None`.
    pub fn drawn(&self, snapshot: u64, key: &str) -> Option<Arc<str>> {
        let drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        drawn
            .get(key)
            .filter(|(s, _)| *s == snapshot)
            .map(|(_, html)| Arc::clone(html))
    }

    /// Keep a drawn piece for the next viewer with the same key (a newer snapshot drops the rest).
    pub fn keep_drawn(&self, snapshot: u64, key: String, html: Arc<str>) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if drawn.values().any(|(s, _)| *s < snapshot) || drawn.len() >= 4096 {
            drawn.retain(|_, (s, _)| *s >= snapshot);
            if drawn.len() >= 4096 {
                drawn.clear();
            }
        }
        drawn.insert(key, (snapshot, html));
    }

    /// Scheduled sources whose newest successful ingest is older than their schedule allows (two
    /// periods, so a run in progress or a slow one is not called stale), with when it was.
    pub async fn stale_sources(
        &self,
        now: DateTime<Utc>,
    ) -> crate::Result<Vec<(String, Option<DateTime<Utc>>)>> {
        if self.sources.iter().all(|s| s.schedule.is_none()) {
            return Ok(Vec::new());
        }
        let last = self
            .control
            .last_successful_ingests()
            .await
            .map_err(|e| crate::Error::Engine(e.to_string()))?;
        let mut out = Vec::new();
        for source in &self.sources {
            let Some(schedule) = &source.schedule else {
                continue;
            };
            let last_ok = last
                .iter()
                .find(|(name, _)| *name == source.name)
                .and_then(|(_, t)| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if is_stale(last_ok, schedule, now) {
                out.push((source.name.clone(), last_ok));
            }
        }
        Ok(out)
    }
}

/// Is a source whose newest successful ingest ended at `last_ok` stale at `now`: more than two of its
/// schedule's periods ago (or never)? A schedule that never fires again calls nothing stale.
pub fn is_stale(last_ok: Option<DateTime<Utc>>, schedule: &Schedule, now: DateTime<Utc>) -> bool {
    let period = schedule
        .next_after(now)
        .and_then(|a| schedule.next_after(a).map(|b| b - a));
    match period {
        Some(period) => last_ok.is_none_or(|t| now - t > period * 2),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_stale_after_two_missed_periods_of_its_schedule() {
        let every_15 = Schedule::parse("*/15 * * * *", "Europe/Moscow").expect("schedule");
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:07:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let ago = |minutes: i64| Some(now - chrono::Duration::minutes(minutes));
        assert!(!is_stale(ago(5), &every_15, now));
        assert!(
            !is_stale(ago(29), &every_15, now),
            "one slow run is not stale"
        );
        assert!(is_stale(ago(31), &every_15, now));
        assert!(is_stale(None, &every_15, now), "never loaded");
        let daily = Schedule::parse("0 6 * * *", "UTC").expect("schedule");
        assert!(!is_stale(ago(47 * 60), &daily, now));
        assert!(is_stale(ago(49 * 60), &daily, now));
    }
}
