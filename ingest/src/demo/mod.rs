//! The demo CRM: a deterministic generator (seed, scale, end date) writing a realistic CRM database in
//! a CRM-like schema of its own ([`SCHEMA`]) into SQLite, and the [`MAPPING`] that turns it into the
//! canonical model.
//!
//! The story the metrics should tell: seasonality (summer and New-Year dips, spring and autumn peaks)
//! and growth; managers whose win rates range from ~10 % to ~40 %; deals that skip funnel steps; slow
//! responders; overdue tasks; managers who left and handed their clients to a successor; repeat buyers
//! on subscriptions who eventually churn; a marketing budget per channel; monthly targets.
//! Scale 1 ≈ 20 managers, 10 000 clients, 30 000 deals, 300 000 interactions, 60 000 payments,
//! 100 000 tasks; everything grows linearly with scale.

mod names;
pub mod servers;
pub mod users;

use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use crate::error::{Error, Result};
use names::*;

/// The demo CRM's own schema (SQLite DDL).
pub const SCHEMA: &str = include_str!("schema.sql");
/// The mapping from the demo schema to the canonical model (TOML).
pub const MAPPING: &str = include_str!("mapping.toml");
/// Report specs the demo home ships (file name, TOML): the owner's weekly report, each manager's
/// funnel, each team lead's team — so `kartoteka report list` shows what reports look like.
pub const REPORT_SPECS: &[(&str, &str)] = &[
    (
        "owner-weekly.toml",
        include_str!("reports/owner-weekly.toml"),
    ),
    (
        "manager-funnel.toml",
        include_str!("reports/manager-funnel.toml"),
    ),
    ("team-lead.toml", include_str!("reports/team-lead.toml")),
];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct DemoConfig {
    /// Random seed: the same seed, scale and end give the same database.
    pub seed: u64,
    /// Size factor (1 ≈ 10 000 clients).
    pub scale: f64,
    /// The day the data ends (exclusive): "today" of the demo company. Three years of history precede it.
    pub end: NaiveDate,
}

/// Row counts of a generated database.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DemoStats {
    /// Staff.
    pub users: u64,
    /// Clients.
    pub contacts: u64,
    /// Deals.
    pub leads: u64,
    /// Stage changes.
    pub status_changes: u64,
    /// Calls, e-mails, messages and meetings.
    pub interactions: u64,
    /// Tasks.
    pub tasks: u64,
    /// Invoices (paid or not).
    pub invoices: u64,
}

#[derive(Debug, Clone)]
enum V {
    Null,
    I(i64),
    T(String),
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::I(v)
    }
}
impl From<&str> for V {
    fn from(v: &str) -> V {
        V::T(v.to_string())
    }
}
impl From<String> for V {
    fn from(v: String) -> V {
        V::T(v)
    }
}
impl From<NaiveDateTime> for V {
    fn from(v: NaiveDateTime) -> V {
        V::T(v.format("%Y-%m-%d %H:%M:%S").to_string())
    }
}
impl From<NaiveDate> for V {
    fn from(v: NaiveDate) -> V {
        V::T(v.format("%Y-%m-%d").to_string())
    }
}
impl<T: Into<V>> From<Option<T>> for V {
    fn from(v: Option<T>) -> V {
        v.map_or(V::Null, Into::into)
    }
}

/// Buffers rows of one table and writes them with multi-row INSERTs.
struct Inserter {
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<V>>,
    written: u64,
}

impl Inserter {
    fn new(table: &'static str, columns: &'static [&'static str]) -> Inserter {
        Inserter {
            table,
            columns,
            rows: Vec::new(),
            written: 0,
        }
    }

    fn push(&mut self, row: Vec<V>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{}", self.table);
        self.rows.push(row);
    }

    async fn flush_if_full(&mut self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        if self.rows.len() >= 20_000 {
            self.flush(pool).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        let per_stmt = 30_000 / self.columns.len();
        let mut tx = pool.begin().await?;
        for chunk in self.rows.chunks(per_stmt) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {} ({}) ",
                self.table,
                self.columns.join(", ")
            ));
            q.push_values(chunk, |mut b, row| {
                for v in row {
                    match v {
                        V::Null => b.push_bind(Option::<i64>::None),
                        V::I(i) => b.push_bind(*i),
                        V::T(s) => b.push_bind(s.clone()),
                    };
                }
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.written += self.rows.len() as u64;
        self.rows.clear();
        Ok(())
    }
}

struct Staff {
    id: i64,
    team: usize,
    position: &'static str,
    hired: NaiveDateTime,
    left: Option<NaiveDateTime>,
    successor: Option<i64>,
    win_rate: f64,
    /// Mean minutes to answer an inbound message.
    response_mean_min: f64,
    /// Probability of doing the expected step work and finishing tasks on time.
    discipline: f64,
}

impl Staff {
    fn active_at(&self, t: NaiveDateTime) -> bool {
        self.hired <= t && self.left.is_none_or(|l| t < l)
    }
    fn sells(&self) -> bool {
        matches!(self.position, "manager" | "team_lead")
    }
}

struct Gen {
    rng: ChaCha8Rng,
    start: NaiveDateTime,
    end: NaiveDateTime,
}

impl Gen {
    fn unit(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.random_range(lo..=hi)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }
    fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u32 = items.iter().map(|i| i.1).sum();
        let mut x = self.rng.random_range(0..total);
        for (item, w) in items {
            if x < *w {
                return item;
            }
            x -= w;
        }
        &items[items.len() - 1].0
    }
    /// Exponentially distributed duration with the given mean, in seconds.
    fn exp_secs(&mut self, mean_secs: f64) -> Duration {
        let u = self.unit();
        Duration::seconds((-mean_secs * (1.0 - u).ln()).round() as i64 + 1)
    }
    /// A random instant in `[a, b)`.
    fn between(&mut self, a: NaiveDateTime, b: NaiveDateTime) -> NaiveDateTime {
        let span = (b - a).num_seconds().max(1);
        a + Duration::seconds(self.rng.random_range(0..span))
    }
    /// Seasonal demand factor for a day (summer and New-Year dips, spring and autumn peaks), with growth.
    fn demand(&self, t: NaiveDateTime) -> f64 {
        const SEASON: [f64; 12] = [
            0.65, 0.9, 1.2, 1.2, 1.0, 0.8, 0.65, 0.7, 1.2, 1.3, 1.25, 0.95,
        ];
        let progress =
            (t - self.start).num_days() as f64 / (self.end - self.start).num_days() as f64;
        SEASON[t.month0() as usize] * (0.8 + 0.5 * progress)
    }
    /// A client-creation instant drawn by the demand curve.
    fn creation_time(&mut self) -> NaiveDateTime {
        loop {
            let t = self.between(self.start, self.end);
            if self.unit() * 1.7 < self.demand(t) {
                // Business hours, Moscow (UTC+3): 06:00–16:00 UTC.
                let day = t.date();
                let secs = self.range(6 * 3600, 16 * 3600);
                return day.and_hms_opt(0, 0, 0).expect("midnight") + Duration::seconds(secs);
            }
        }
    }
}

fn month_start(t: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1).expect("first of month exists")
}

fn add_months(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_add_months(chrono::Months::new(n))
        .expect("date in range")
}

/// Pipelines: (funnel title, stages (title, status_type)); status_type 0 open, 1 won, 2 lost.
const PIPELINES: &[(&str, &[(&str, i64)])] = &[
    (
        "Продажи",
        &[
            ("Новая заявка", 0),
            ("Квалификация", 0),
            ("Встреча назначена", 0),
            ("Коммерческое предложение", 0),
            ("Переговоры", 0),
            ("Договор", 0),
            ("Успешно реализовано", 1),
            ("Закрыто и не реализовано", 2),
        ],
    ),
    (
        "Тендеры",
        &[
            ("Заявка на тендер", 0),
            ("Подготовка документов", 0),
            ("Подача", 0),
            ("Тендер выигран", 1),
            ("Тендер проигран", 2),
        ],
    ),
];

/// Mean days a deal spends in its n-th open stage.
const STAGE_DAYS: [f64; 6] = [1.5, 3.0, 5.0, 6.0, 7.0, 4.0];

/// Generate the demo CRM into a new SQLite database at `path` (replacing any file there atomically).
pub async fn generate(path: &Path, config: DemoConfig) -> Result<DemoStats> {
    let tmp = path.with_extension("sqlite.partial");
    let _ = std::fs::remove_file(&tmp);
    let db_err = |cause| Error::Demo {
        path: path.to_path_buf(),
        cause,
    };
    let options = SqliteConnectOptions::new()
        .filename(&tmp)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(db_err)?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(db_err)?;
    let stats = write_all(&pool, config).await.map_err(db_err)?;
    pool.close().await;
    std::fs::rename(&tmp, path).map_err(|e| Error::Demo {
        path: path.to_path_buf(),
        cause: sqlx::Error::Io(e),
    })?;
    Ok(stats)
}

struct Tables {
    ids: Ids,
    users: Inserter,
    contacts: Inserter,
    funnels: Inserter,
    statuses: Inserter,
    leads: Inserter,
    status_log: Inserter,
    calls: Inserter,
    emails: Inserter,
    chats: Inserter,
    meetings: Inserter,
    todo: Inserter,
    invoices: Inserter,
    responsible: Inserter,
    plan: Inserter,
    budget: Inserter,
}

impl Tables {
    fn new() -> Tables {
        Tables {
            ids: Ids::default(),
            users: Inserter::new(
                "users",
                &[
                    "id",
                    "full_name",
                    "email",
                    "job_title",
                    "department",
                    "hired_on",
                    "fired_on",
                    "successor_user_id",
                    "modified_at",
                ],
            ),
            contacts: Inserter::new(
                "contacts",
                &[
                    "id",
                    "contact_type",
                    "display_name",
                    "phone",
                    "email",
                    "city",
                    "country_code",
                    "industry",
                    "lead_source",
                    "responsible_user_id",
                    "created_at",
                    "pd_consent_at",
                    "modified_at",
                ],
            ),
            funnels: Inserter::new("funnels", &["id", "title"]),
            statuses: Inserter::new(
                "funnel_statuses",
                &["id", "funnel_id", "title", "sort", "status_type"],
            ),
            leads: Inserter::new(
                "leads",
                &[
                    "id",
                    "contact_id",
                    "responsible_user_id",
                    "funnel_id",
                    "status_id",
                    "price_kopecks",
                    "product",
                    "created_at",
                    "closed_at",
                    "closed_by_user_id",
                    "expected_close_on",
                    "loss_reason",
                    "modified_at",
                ],
            ),
            status_log: Inserter::new(
                "lead_status_log",
                &[
                    "id",
                    "lead_id",
                    "old_status_id",
                    "new_status_id",
                    "changed_at",
                    "user_id",
                ],
            ),
            calls: Inserter::new(
                "calls",
                &[
                    "id",
                    "contact_id",
                    "lead_id",
                    "user_id",
                    "direction",
                    "started_at",
                    "duration_sec",
                    "result",
                    "note",
                    "modified_at",
                ],
            ),
            emails: Inserter::new(
                "emails",
                &[
                    "id",
                    "contact_id",
                    "lead_id",
                    "user_id",
                    "direction",
                    "sent_at",
                    "subject",
                    "modified_at",
                ],
            ),
            chats: Inserter::new(
                "chat_messages",
                &[
                    "id",
                    "contact_id",
                    "lead_id",
                    "user_id",
                    "direction",
                    "sent_at",
                    "messenger",
                    "body",
                    "modified_at",
                ],
            ),
            meetings: Inserter::new(
                "meetings",
                &[
                    "id",
                    "contact_id",
                    "lead_id",
                    "user_id",
                    "held_at",
                    "duration_min",
                    "summary",
                    "modified_at",
                ],
            ),
            todo: Inserter::new(
                "todo",
                &[
                    "id",
                    "assignee_id",
                    "contact_id",
                    "lead_id",
                    "todo_type",
                    "created_at",
                    "deadline_at",
                    "done_at",
                    "modified_at",
                ],
            ),
            invoices: Inserter::new(
                "invoices",
                &[
                    "id",
                    "contact_id",
                    "lead_id",
                    "total_kopecks",
                    "status",
                    "issued_at",
                    "paid_at",
                    "modified_at",
                ],
            ),
            responsible: Inserter::new(
                "responsible_log",
                &[
                    "id",
                    "contact_id",
                    "old_user_id",
                    "new_user_id",
                    "changed_at",
                    "reason",
                ],
            ),
            plan: Inserter::new("sales_plan", &["id", "month", "user_id", "plan_kopecks"]),
            budget: Inserter::new("ad_budget", &["id", "month", "channel", "spent_kopecks"]),
        }
    }

    fn all(&mut self) -> [&mut Inserter; 15] {
        [
            &mut self.users,
            &mut self.contacts,
            &mut self.funnels,
            &mut self.statuses,
            &mut self.leads,
            &mut self.status_log,
            &mut self.calls,
            &mut self.emails,
            &mut self.chats,
            &mut self.meetings,
            &mut self.todo,
            &mut self.invoices,
            &mut self.responsible,
            &mut self.plan,
            &mut self.budget,
        ]
    }

    async fn flush_if_full(&mut self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        for t in self.all() {
            t.flush_if_full(pool).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        for t in self.all() {
            t.flush(pool).await?;
        }
        Ok(())
    }
}

/// Ids of one kind, handed out in order.
#[derive(Default)]
struct Ids {
    call: i64,
    email: i64,
    chat: i64,
    meeting: i64,
    todo: i64,
    invoice: i64,
    status_log: i64,
    responsible: i64,
}

fn next(id: &mut i64) -> i64 {
    *id += 1;
    *id
}

#[derive(Clone, Copy, PartialEq)]
enum Channel {
    Call,
    Email,
    Chat,
    Meeting,
}

/// The client an activity is with, and who owned them when.
struct ClientRef<'a> {
    id: i64,
    name: &'a str,
    ownership: &'a Ownership,
}

/// Record one call, e-mail, message or meeting with `c`, handled by whoever owned the client at `at`.
fn touch(
    g: &mut Gen,
    t: &mut Tables,
    c: &ClientRef<'_>,
    deal: Option<i64>,
    at: NaiveDateTime,
    inbound: bool,
    channel: Channel,
) {
    let dir = if inbound { "in" } else { "out" };
    let staff = c.ownership.at(at);
    match channel {
        Channel::Call => {
            let connected = g.chance(0.7);
            let (secs, result) = if connected {
                (g.range(40, 1200), "answered")
            } else {
                (0, *g.pick(&["no_answer", "busy", "voicemail"]))
            };
            let note = connected.then(|| format!("Разговор с клиентом {}", c.name));
            let id = next(&mut t.ids.call);
            t.calls.push(vec![
                id.into(),
                c.id.into(),
                deal.into(),
                staff.into(),
                dir.into(),
                at.into(),
                secs.into(),
                result.into(),
                note.into(),
                at.into(),
            ]);
        }
        Channel::Email => {
            let id = next(&mut t.ids.email);
            let subject = format!("{}: {}", g.pick(EMAIL_SUBJECTS), c.name);
            t.emails.push(vec![
                id.into(),
                c.id.into(),
                deal.into(),
                staff.into(),
                dir.into(),
                at.into(),
                subject.into(),
                at.into(),
            ]);
        }
        Channel::Chat => {
            let id = next(&mut t.ids.chat);
            let messenger = *g.pick(&["telegram", "whatsapp", "vk"]);
            t.chats.push(vec![
                id.into(),
                c.id.into(),
                deal.into(),
                staff.into(),
                dir.into(),
                at.into(),
                messenger.into(),
                (*g.pick(CHAT_TEXTS)).into(),
                at.into(),
            ]);
        }
        Channel::Meeting => {
            let id = next(&mut t.ids.meeting);
            t.meetings.push(vec![
                id.into(),
                c.id.into(),
                deal.into(),
                staff.into(),
                at.into(),
                g.range(30, 120).into(),
                format!("Встреча с {}", c.name).into(),
                at.into(),
            ]);
        }
    }
}

fn outbound_channel(g: &mut Gen, meetings_ok: bool) -> Channel {
    let x = g.unit();
    if x < 0.45 {
        Channel::Call
    } else if x < 0.7 {
        Channel::Email
    } else if x < 0.9 || !meetings_ok {
        Channel::Chat
    } else {
        Channel::Meeting
    }
}

/// The owner of a client over time: (from, staff) segments, ascending.
struct Ownership(Vec<(NaiveDateTime, i64)>);

impl Ownership {
    fn at(&self, t: NaiveDateTime) -> i64 {
        self.0
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .unwrap_or(&self.0[0])
            .1
    }
}

async fn write_all(pool: &SqlitePool, config: DemoConfig) -> Result<DemoStats, sqlx::Error> {
    let end = config.end.and_hms_opt(0, 0, 0).expect("midnight");
    let start = config
        .end
        .checked_sub_months(chrono::Months::new(36))
        .expect("date in range")
        .and_hms_opt(0, 0, 0)
        .expect("midnight");
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(config.seed),
        start,
        end,
    };
    let mut t = Tables::new();

    // Pipelines.
    let mut status_ids: Vec<Vec<i64>> = Vec::new();
    let mut sid = 0;
    for (fi, (title, stages)) in PIPELINES.iter().enumerate() {
        t.funnels
            .push(vec![(fi as i64 + 1).into(), (*title).into()]);
        let mut ids_here = Vec::new();
        for (pos, (stage, kind)) in stages.iter().enumerate() {
            sid += 1;
            t.statuses.push(vec![
                sid.into(),
                (fi as i64 + 1).into(),
                (*stage).into(),
                (pos as i64 + 1).into(),
                (*kind).into(),
            ]);
            ids_here.push(sid);
        }
        status_ids.push(ids_here);
    }

    // Staff: the owner, team leads and managers, support.
    let sellers = ((20.0 * config.scale).round() as usize).max(4);
    let teams = sellers.div_ceil(7).min(TEAMS.len());
    let mut staff: Vec<Staff> = Vec::new();
    let mut staff_names = Vec::new();
    let long_ago = start - Duration::days(400);
    staff.push(Staff {
        id: 1,
        team: 0,
        position: "owner",
        hired: long_ago - Duration::days(2000),
        left: None,
        successor: None,
        win_rate: 0.0,
        response_mean_min: 60.0,
        discipline: 0.9,
    });
    // Win rates spread evenly from 10 % to 40 %, then shuffled across people.
    let mut rates: Vec<f64> = (0..sellers)
        .map(|i| 0.10 + 0.30 * i as f64 / (sellers - 1) as f64)
        .collect();
    for i in (1..rates.len()).rev() {
        let j = g.rng.random_range(0..=i);
        rates.swap(i, j);
    }
    for (i, rate) in rates.iter().enumerate() {
        let team = i % teams;
        let lead = i < teams;
        let hired = if lead || g.chance(0.6) {
            g.between(long_ago, start)
        } else {
            g.between(start, start + Duration::days(540))
        };
        let slow = g.chance(0.2);
        staff.push(Staff {
            id: staff.len() as i64 + 1,
            team,
            position: if lead { "team_lead" } else { "manager" },
            hired,
            left: None,
            successor: None,
            win_rate: *rate,
            response_mean_min: if slow {
                60.0 * g.range(6, 30) as f64
            } else {
                g.range(10, 90) as f64
            },
            discipline: 0.55 + 0.4 * g.unit(),
        });
    }
    for _ in 0..2 {
        staff.push(Staff {
            id: staff.len() as i64 + 1,
            team: 0,
            position: "support",
            hired: g.between(long_ago, start),
            left: None,
            successor: None,
            win_rate: 0.0,
            response_mean_min: 30.0,
            discipline: 0.8,
        });
    }
    // Leavers: about one manager in seven leaves, handing clients to a teammate who stays.
    let leavers = (sellers / 7).max(1);
    let managers: Vec<usize> = (0..staff.len())
        .filter(|&i| staff[i].position == "manager")
        .collect();
    for k in 0..leavers.min(managers.len().saturating_sub(1)) {
        let i = managers[(k * 3 + 1) % managers.len()];
        if staff[i].left.is_some() {
            continue;
        }
        let lo = staff[i].hired.max(start) + Duration::days(150);
        let left = g
            .between(lo, end - Duration::days(45))
            .date()
            .and_hms_opt(9, 0, 0)
            .expect("valid");
        let team = staff[i].team;
        let successor = staff
            .iter()
            .filter(|s| {
                s.sells()
                    && s.team == team
                    && s.id != staff[i].id
                    && s.left.is_none()
                    && s.hired < left
            })
            .map(|s| s.id)
            .next()
            .or_else(|| {
                staff
                    .iter()
                    .find(|s| s.position == "team_lead")
                    .map(|s| s.id)
            });
        staff[i].left = Some(left);
        staff[i].successor = successor;
    }
    for s in &staff {
        let female = g.chance(0.5);
        let (first, first_lat) = *g.pick(if female { FEMALE_FIRST } else { MALE_FIRST });
        let (last, last_lat) = *g.pick(SURNAMES);
        let last = if female {
            format!("{last}а")
        } else {
            last.to_string()
        };
        let name = format!("{first} {last}");
        let email = format!("{first_lat}.{last_lat}{}@kartoteka-demo.ru", s.id);
        let modified = s.left.unwrap_or(s.hired);
        t.users.push(vec![
            s.id.into(),
            name.clone().into(),
            email.into(),
            s.position.into(),
            TEAMS[s.team].into(),
            s.hired.date().into(),
            s.left.map(|l| l.date()).into(),
            s.successor.into(),
            modified.into(),
        ]);
        staff_names.push(name);
    }
    let sellers_idx: Vec<usize> = (0..staff.len()).filter(|&i| staff[i].sells()).collect();
    let active_seller = |g: &mut Gen, at: NaiveDateTime| -> usize {
        let active: Vec<usize> = sellers_idx
            .iter()
            .copied()
            .filter(|&i| staff[i].active_at(at))
            .collect();
        if active.is_empty() {
            sellers_idx[0]
        } else {
            active[g.rng.random_range(0..active.len())]
        }
    };
    let idx_of = |id: i64| (id - 1) as usize;

    // Clients, in order of creation.
    let n_clients = ((10_000.0 * config.scale).round() as i64).max(20);
    let mut created: Vec<NaiveDateTime> = (0..n_clients).map(|_| g.creation_time()).collect();
    created.sort();
    let mut deal_id = 0i64;
    let mut stats = DemoStats::default();
    // Won revenue per (closer's staff id, month), kopecks: the plans below are set from it.
    let mut won_by: std::collections::HashMap<(i64, NaiveDate), i64> =
        std::collections::HashMap::new();
    for (ci, &created_at) in created.iter().enumerate() {
        let client = ci as i64 + 1;
        let person = g.chance(0.55);
        let (name, email) = if person {
            let female = g.chance(0.5);
            let (first, first_lat) = *g.pick(if female { FEMALE_FIRST } else { MALE_FIRST });
            let (last, last_lat) = *g.pick(SURNAMES);
            let last = if female {
                format!("{last}а")
            } else {
                last.to_string()
            };
            (
                format!("{last} {first}"),
                format!("{first_lat}.{last_lat}.{client}@mail-demo.ru"),
            )
        } else {
            let w1 = g.pick(COMPANY_WORDS);
            let w2 = g.pick(COMPANY_WORDS);
            let form = g.pick(COMPANY_FORMS);
            (
                format!("{form} «{w1}{}»", w2.to_lowercase()),
                format!("info{client}@company-demo.ru"),
            )
        };
        let phone = format!(
            "+7 9{:02} {:03}-{:02}-{:02}",
            client % 100,
            (client / 100) % 1000,
            g.range(0, 99),
            g.range(0, 99)
        );
        let (country, city, _) = *g.weighted(&CITIES.iter().map(|c| (c, c.2)).collect::<Vec<_>>());
        let industry = *g.pick(INDUSTRIES);
        let source = *g.weighted(SOURCES);
        let consent = g
            .chance(0.88)
            .then(|| created_at + Duration::minutes(g.range(1, 30)));
        let phone = (!g.chance(0.05)).then_some(phone);
        let email = (!g.chance(0.08)).then_some(email);

        // Ownership: first owner, occasional rebalancing, then departures hand clients to successors.
        let first_owner = staff[active_seller(&mut g, created_at)].id;
        let mut owners = vec![(created_at, first_owner, "")];
        if g.chance(0.04) {
            let at = g.between(created_at, end);
            let to = staff[active_seller(&mut g, at)].id;
            if to != first_owner {
                owners.push((
                    at,
                    to,
                    if g.chance(0.5) {
                        "rebalance"
                    } else {
                        "request"
                    },
                ));
            }
        }
        let mut i = 0;
        while i < owners.len() {
            let (from, owner, _) = owners[i];
            let until = owners.get(i + 1).map_or(end, |o| o.0);
            let s = &staff[idx_of(owner)];
            if let (Some(left), Some(successor)) = (s.left, s.successor)
                && left >= from
                && left < until
            {
                owners.insert(i + 1, (left, successor, "departure"));
                // Later segments of a leaver who is gone stay with the successor.
                for o in owners.iter_mut().skip(i + 2) {
                    if o.1 == owner {
                        o.1 = successor;
                    }
                }
            }
            i += 1;
        }
        owners.dedup_by(|b, a| a.1 == b.1);
        for w in owners.windows(2) {
            let id = next(&mut t.ids.responsible);
            t.responsible.push(vec![
                id.into(),
                client.into(),
                w[0].1.into(),
                w[1].1.into(),
                w[1].0.into(),
                w[1].2.into(),
            ]);
        }
        let ownership = Ownership(owners.iter().map(|o| (o.0, o.1)).collect());
        let cl = ClientRef {
            id: client,
            name: &name,
            ownership: &ownership,
        };
        let current_owner = ownership.at(end - Duration::seconds(1));
        t.contacts.push(vec![
            client.into(),
            (if person { "person" } else { "company" }).into(),
            name.clone().into(),
            phone.into(),
            email.into(),
            (*city).into(),
            (*country).into(),
            industry.into(),
            source.into(),
            current_owner.into(),
            created_at.into(),
            consent.into(),
            owners.last().map_or(created_at, |o| o.0).into(),
        ]);

        // First contact: most clients hear from their manager within a day.
        let first_contact = if g.chance(0.75) {
            created_at + g.exp_secs(4.0 * 3600.0).min(Duration::hours(23))
        } else {
            created_at + Duration::hours(g.range(25, 96))
        };
        if first_contact < end {
            let channel = if g.chance(0.7) {
                Channel::Call
            } else {
                Channel::Email
            };
            touch(&mut g, &mut t, &cl, None, first_contact, false, channel);
        }
        // A few contacts outside any deal over the client's life.
        for _ in 0..g.range(0, 4) {
            let at = g.between(created_at, end);
            let inbound = g.chance(0.3);
            let channel = outbound_channel(&mut g, false);
            touch(&mut g, &mut t, &cl, None, at, inbound, channel);
        }

        // Follow-up tasks outside deals.
        for _ in 0..g.range(0, 2) {
            let created_t = g.between(created_at, end);
            let due = created_t + Duration::hours(g.range(24, 240));
            let who = ownership.at(created_t);
            let done = g
                .chance(staff[idx_of(who)].discipline)
                .then(|| created_t + Duration::hours(g.range(1, 200)))
                .filter(|d| *d < end);
            let tid = next(&mut t.ids.todo);
            t.todo.push(vec![
                tid.into(),
                who.into(),
                client.into(),
                V::Null,
                "follow_up".into(),
                created_t.into(),
                due.into(),
                done.into(),
                done.unwrap_or(created_t).into(),
            ]);
        }

        // Deals: most clients get one within a month, many come back for more.
        let mut deal_at = created_at + g.exp_secs(7.0 * 86400.0);
        let mut won_any: Option<NaiveDateTime> = None;
        let n_deals = if g.chance(0.9) {
            1 + (-(3.2f64) * (1.0 - g.unit()).ln()).floor() as i64
        } else {
            0
        };
        for _ in 0..n_deals {
            if deal_at >= end {
                break;
            }
            deal_id += 1;
            let deal = deal_id;
            let (fi, pipeline_stages) = if g.chance(0.85) {
                (0, PIPELINES[0].1)
            } else {
                (1, PIPELINES[1].1)
            };
            let open_stages = pipeline_stages.iter().filter(|s| s.1 == 0).count();
            let won_pos = open_stages; // 0-based index of the won stage
            let lost_pos = open_stages + 1;
            let owner = ownership.at(deal_at);
            let me = &staff[idx_of(owner)];
            let p_win = if fi == 0 {
                me.win_rate
            } else {
                me.win_rate * 0.8
            };
            let will_win = g.chance(p_win);
            // Where a lost deal drops out.
            let lose_after = g.range(0, open_stages as i64 - 1) as usize;
            let (product, lo, hi) = *g.pick(PRODUCTS);
            let mut amount = g.range(lo / 100, hi / 100) * 100 * 100 * if fi == 1 { 2 } else { 1 };
            let mut pos = 0usize;
            let mut at = deal_at;
            let sid_of = |p: usize| status_ids[fi][p];
            let log =
                |t: &mut Tables, from: Option<usize>, to: usize, at: NaiveDateTime, by: i64| {
                    let id = next(&mut t.ids.status_log);
                    t.status_log.push(vec![
                        id.into(),
                        deal.into(),
                        from.map(sid_of).into(),
                        sid_of(to).into(),
                        at.into(),
                        by.into(),
                    ]);
                };
            log(&mut t, None, 0, at, owner);
            let mut closed: Option<(NaiveDateTime, i64)> = None;
            let mut last_change = at;
            loop {
                let step_owner = ownership.at(at);
                let so = &staff[idx_of(step_owner)];
                let slow = if so.discipline < 0.7 { 1.6 } else { 1.0 };
                let next_at = at + g.exp_secs(STAGE_DAYS[pos.min(5)] * 86400.0 * slow);
                let horizon = next_at.min(end);
                // Work during the stage: outbound touches (skipped now and then by undisciplined managers).
                if !g.chance((1.0 - so.discipline) * 0.6) {
                    for _ in 0..g.range(1, 3) {
                        let when = g.between(at, horizon);
                        let channel = outbound_channel(&mut g, pos >= 2);
                        touch(&mut g, &mut t, &cl, Some(deal), when, false, channel);
                    }
                }
                // The client writes in; someone answers after the manager's usual delay (or never).
                if g.chance(0.35) {
                    let when = g.between(at, horizon);
                    let channel = if g.chance(0.5) {
                        Channel::Email
                    } else {
                        Channel::Chat
                    };
                    let who = ownership.at(when);
                    touch(&mut g, &mut t, &cl, Some(deal), when, true, channel);
                    if g.chance(0.93) {
                        let mean = staff[idx_of(who)].response_mean_min * 60.0;
                        let answer = when + g.exp_secs(mean);
                        if answer < end {
                            touch(&mut g, &mut t, &cl, Some(deal), answer, false, channel);
                        }
                    }
                }
                // A task per stage, mostly.
                if g.chance(0.85) {
                    let tid = next(&mut t.ids.todo);
                    let created_t = g.between(at, horizon);
                    let due = created_t + Duration::hours(g.range(4, 96));
                    let who = ownership.at(created_t);
                    let disc = staff[idx_of(who)].discipline;
                    let done = if g.chance(disc) {
                        Some(created_t + (due - created_t) / 2)
                    } else if g.chance(0.75) {
                        Some(due + Duration::hours(g.range(1, 72)))
                    } else {
                        None
                    };
                    let done = done.filter(|d| *d < end);
                    let kind = *g.pick(&["call", "email", "meeting", "follow_up"]);
                    t.todo.push(vec![
                        tid.into(),
                        who.into(),
                        client.into(),
                        deal.into(),
                        kind.into(),
                        created_t.into(),
                        due.into(),
                        done.into(),
                        done.unwrap_or(created_t).into(),
                    ]);
                }
                if next_at >= end {
                    break; // still open today
                }
                at = next_at;
                let by = ownership.at(at);
                if !will_win && pos == lose_after {
                    log(&mut t, Some(pos), lost_pos, at, by);
                    pos = lost_pos;
                    closed = Some((at, by));
                    last_change = at;
                    break;
                }
                // Advance, skipping a step now and then.
                let step = if pos + 2 < won_pos && g.chance(0.15) {
                    2
                } else {
                    1
                };
                let to = (pos + step).min(won_pos);
                log(&mut t, Some(pos), to, at, by);
                pos = to;
                last_change = at;
                if pos == won_pos {
                    closed = Some((at, by));
                    break;
                }
            }
            let status = status_ids[fi][pos];
            let is_open = closed.is_none();
            if is_open && g.chance(0.04) {
                amount = 0; // sloppy records
            }
            let amount = if g.chance(0.01) { None } else { Some(amount) };
            let expected_close = (is_open || g.chance(0.7))
                .then(|| (deal_at + Duration::days(g.range(14, 120))).date())
                .filter(|_| !g.chance(0.12));
            let loss_reason = (pos == lost_pos && !g.chance(0.05)).then(|| *g.pick(LOSS_REASONS));
            t.leads.push(vec![
                deal.into(),
                client.into(),
                current_owner.into(),
                (fi as i64 + 1).into(),
                status.into(),
                amount.into(),
                product.into(),
                deal_at.into(),
                closed.map(|c| c.0).into(),
                closed.map(|c| c.1).into(),
                expected_close.into(),
                loss_reason.into(),
                last_change.into(),
            ]);
            // Invoices for won deals: one to three instalments that add up exactly.
            if pos == won_pos
                && let (Some((won_at, _)), Some(total)) = (closed, amount)
            {
                won_any.get_or_insert(won_at);
                if let Some((_, by)) = closed {
                    *won_by.entry((by, month_start(won_at.date()))).or_default() += total;
                }
                let parts = if g.chance(0.7) {
                    1
                } else if g.chance(0.66) {
                    2
                } else {
                    3
                };
                let mut left = total;
                let mut when = won_at + Duration::days(g.range(0, 20));
                for k in 0..parts {
                    let part = if k == parts - 1 { left } else { total / parts };
                    left -= part;
                    let iid = next(&mut t.ids.invoice);
                    let paid = (when < end).then_some(when);
                    let status = if paid.is_some() { "paid" } else { "issued" };
                    t.invoices.push(vec![
                        iid.into(),
                        client.into(),
                        deal.into(),
                        part.into(),
                        status.into(),
                        won_at.into(),
                        paid.into(),
                        paid.unwrap_or(won_at).into(),
                    ]);
                    when += Duration::days(30);
                }
                if g.chance(0.03) {
                    let iid = next(&mut t.ids.invoice);
                    t.invoices.push(vec![
                        iid.into(),
                        client.into(),
                        deal.into(),
                        (total / 10).into(),
                        "cancelled".into(),
                        won_at.into(),
                        V::Null,
                        won_at.into(),
                    ]);
                }
            }
            deal_at += g.exp_secs(45.0 * 86400.0);
        }
        // Repeat buyers: a subscription paid monthly until the client churns.
        if let Some(first_win) = won_any
            && g.chance(0.75)
        {
            let fee = g.range(50, 500) * 100 * 100;
            let mut when = first_win + Duration::days(g.range(25, 40));
            while when < end && !g.chance(0.035) {
                let iid = next(&mut t.ids.invoice);
                t.invoices.push(vec![
                    iid.into(),
                    client.into(),
                    V::Null,
                    fee.into(),
                    "paid".into(),
                    when.into(),
                    when.into(),
                    when.into(),
                ]);
                when += Duration::days(30) + Duration::hours(g.range(-48, 48));
            }
        }
        t.flush_if_full(pool).await?;
    }

    // Targets: per seller per month employed, and the company's, three months ahead too. A plan is
    // set the way an owner sets one: from what the seller brings in a typical month (their mean over
    // the months they worked, at least half the team's), shaped by the season and stretched a little,
    // so attainment lands around 80–120 % — not a number unrelated to the business.
    let season_of = |g: &Gen, m: NaiveDate| {
        g.demand(
            m.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .min(end - Duration::days(1)),
        )
    };
    let mut months = Vec::new();
    let mut month = month_start(start.date());
    while month < month_start(end.date()) {
        months.push(month);
        month = add_months(month, 1);
    }
    let mean_season =
        months.iter().map(|&m| season_of(&g, m)).sum::<f64>() / months.len().max(1) as f64;
    let typical: Vec<f64> = sellers_idx
        .iter()
        .map(|&i| {
            let s = &staff[i];
            let worked: Vec<&NaiveDate> = months
                .iter()
                .filter(|m| s.active_at(m.and_hms_opt(0, 0, 0).expect("midnight")))
                .collect();
            let total: i64 = worked
                .iter()
                .map(|&&m| won_by.get(&(s.id, m)).copied().unwrap_or(0))
                .sum();
            total as f64 / worked.len().max(1) as f64
        })
        .collect();
    let team_typical = typical.iter().sum::<f64>() / typical.len().max(1) as f64;
    let mut month = month_start(start.date());
    let last_month = add_months(month_start(end.date()), 3);
    let mut plan_id = 0i64;
    while month < last_month {
        let m_at = month.and_hms_opt(0, 0, 0).expect("midnight");
        let season = season_of(&g, month) / mean_season.max(1e-9);
        let mut company = 0i64;
        for (k, &i) in sellers_idx.iter().enumerate() {
            let s = &staff[i];
            if !s.active_at(m_at) {
                continue;
            }
            let stretch = 0.95 + 0.2 * g.unit();
            let base = typical[k].max(team_typical / 2.0).max(100_000.0 * 100.0);
            // Whole thousands of roubles (kopecks in the source).
            let plan = (base * season * stretch / 100_000.0).round() as i64 * 100_000;
            company += plan;
            plan_id += 1;
            t.plan.push(vec![
                plan_id.into(),
                month.format("%Y-%m").to_string().into(),
                s.id.into(),
                plan.into(),
            ]);
        }
        plan_id += 1;
        t.plan.push(vec![
            plan_id.into(),
            month.format("%Y-%m").to_string().into(),
            V::Null,
            company.into(),
        ]);
        month = add_months(month, 1);
    }
    // Marketing spend per channel and month; referrals cost nothing and have no rows.
    let mut month = month_start(start.date());
    let mut budget_id = 0i64;
    while month < month_start(end.date()) {
        let season = g.demand(month.and_hms_opt(0, 0, 0).expect("midnight"));
        let mut spend = |g: &mut Gen, channel: &str, lo: i64, hi: i64| {
            budget_id += 1;
            let rub =
                (g.range(lo, hi) as f64 * scale_budget(config.scale) * season).round() as i64 * 100;
            t.budget.push(vec![
                budget_id.into(),
                month.format("%Y-%m").to_string().into(),
                channel.into(),
                (rub * 100).into(),
            ]);
        };
        spend(&mut g, "ads", 1_500, 4_000);
        spend(&mut g, "website", 500, 1_000);
        spend(&mut g, "cold_call", 700, 900);
        if matches!(month.month(), 3 | 10) {
            spend(&mut g, "exhibition", 3_000, 6_000);
        }
        month = add_months(month, 1);
    }
    t.flush(pool).await?;
    stats.users = t.users.written;
    stats.contacts = t.contacts.written;
    stats.leads = t.leads.written;
    stats.status_changes = t.status_log.written;
    stats.interactions = t.calls.written + t.emails.written + t.chats.written + t.meetings.written;
    stats.tasks = t.todo.written;
    stats.invoices = t.invoices.written;
    Ok(stats)
}

/// Marketing budgets grow with the company's size.
fn scale_budget(scale: f64) -> f64 {
    scale.max(0.01)
}
