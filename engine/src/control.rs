//! The control plane's identity store: users, their system role, the CRM staff record they are, their
//! team and status, and who created or changed them. SQLite through sqlx by default
//! (`control.sqlite` in the Kartoteka home); migrations live here.
//!
//! Passwords are generated at random, returned once to the caller to hand to the user, and stored only
//! as argon2id hashes (m = 19 MiB, t = 2: OWASP's minimum for argon2id). Nobody chooses another user's
//! password; a reset issues a new random one and requires a change at first login. Every change is
//! written to the audit log (without the password).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use zeroize::Zeroizing;

use crate::audit::{AuditLog, Event, Outcome};
use crate::error::{Error, Result};
use crate::session::Role;

const MIGRATIONS: &[&str] = &[
    // 1: users
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        login TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('owner', 'manager', 'team_lead', 'analyst', 'admin')),
        staff_id INTEGER,
        team TEXT,
        status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
        password_hash TEXT NOT NULL,
        must_change_password INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        changed_by TEXT NOT NULL
    )",
    // 2: ingest runs
    "CREATE TABLE ingest_runs (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        mode TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'failed', 'mismatch', 'interrupted')),
        snapshot_id INTEGER,
        error TEXT,
        tables TEXT NOT NULL DEFAULT '[]'
    )",
    // 3: scheduled jobs: the newest schedule slot each job has handled (catch-up after downtime)
    "CREATE TABLE job_slots (
        job TEXT PRIMARY KEY,
        slot TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT,
        changed_at TEXT NOT NULL
    )",
    // 4: report runs: one row per rendered copy (report × recipient), its sealed files in the archive
    "CREATE TABLE report_runs (
        id INTEGER PRIMARY KEY,
        report TEXT NOT NULL,
        recipient TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
        snapshot_id INTEGER,
        params TEXT NOT NULL,
        content_hash TEXT,
        files TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        seconds REAL NOT NULL
    );
    CREATE INDEX report_runs_by_recipient ON report_runs (report, recipient, id)",
    // 5: where a user's reports are e-mailed, and every delivery attempt of a report copy
    "ALTER TABLE users ADD COLUMN email TEXT;
    CREATE TABLE report_deliveries (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        channel TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
        target TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped')),
        error TEXT,
        at TEXT NOT NULL
    )",
    // 6: every lake commit with its authentication code: the anchor outside the snapshot directory
    "CREATE TABLE lake_commits (
        id INTEGER PRIMARY KEY,
        mac TEXT NOT NULL,
        committed_at TEXT NOT NULL,
        operation TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )",
    // 7: web sign-in sessions (only the SHA-256 of an id is kept; see web_session.rs)
    "CREATE TABLE web_sessions (
        id_hash TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('password', 'full')),
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        ip TEXT NOT NULL,
        user_agent TEXT NOT NULL
    );
    CREATE INDEX web_sessions_by_login ON web_sessions (login)",
    // 8: the second factor (see second_factor.rs): a sealed TOTP secret and its newest accepted step
    // per user, and one-time recovery codes as argon2id hashes
    "ALTER TABLE users ADD COLUMN totp_sealed TEXT;
    ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
    CREATE TABLE recovery_codes (
        id INTEGER PRIMARY KEY,
        login TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        used_at TEXT
    );
    CREATE INDEX recovery_codes_by_login ON recovery_codes (login)",
    // 9: the language a user chose for the web pages (NULL: the default, Russian)
    "ALTER TABLE users ADD COLUMN language TEXT",
];

/// A way a report copy reaches someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// To the recipient's own address.
    Email,
    /// An announcement (no data) to the spec's webhook.
    Webhook,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// Delivered.
    Ok,
    /// Failed after every retry.
    Failed,
    /// Not attempted (e.g. no address, no server).
    Skipped,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// As stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            fn parse(s: &str) -> Option<$ty> {
                match s {
                    $($text => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(Channel { Email => "email", Webhook => "webhook" });
text_enum!(DeliveryOutcome { Ok => "ok", Failed => "failed", Skipped => "skipped" });
text_enum!(UserStatus { Active => "active", Disabled => "disabled" });
text_enum!(RunMode { Full => "full", Auto => "auto" });
text_enum!(SlotOutcome { Armed => "armed", Ok => "ok", Failed => "failed", Skipped => "skipped" });
text_enum!(RunOutcome {
    Running => "running",
    Ok => "ok",
    Failed => "failed",
    Mismatch => "mismatch",
    Interrupted => "interrupted",
});

/// One delivery of a report copy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportDelivery {
    /// The copy (`report_runs.id`).
    pub run_id: i64,
    /// E-mail or webhook.
    pub channel: Channel,
    /// Address or URL.
    pub target: String,
    /// Attempts made.
    pub attempts: i64,
    /// Delivered, failed after every retry, or skipped.
    pub outcome: DeliveryOutcome,
    /// The last error.
    pub error: Option<String>,
}

/// One rendered copy of a report for one recipient.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReportRun {
    /// Row id (0 before it is recorded).
    pub id: i64,
    /// Report id.
    pub report: String,
    /// Login it was rendered for (under whose policy).
    pub recipient: String,
    /// `schedule`, `manual` or `catch-up`.
    pub trigger: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: String,
    /// Rendered (`ok`) or `failed`.
    pub outcome: RunOutcome,
    /// The lake snapshot every panel read.
    pub snapshot_id: Option<i64>,
    /// Each panel's metric and parameters, as JSON.
    pub params: serde_json::Value,
    /// SHA-256 of the rendered files, in order.
    pub content_hash: Option<String>,
    /// Archive paths of the sealed files, relative to the archive root.
    pub files: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Render time.
    pub seconds: f64,
}

/// What a scheduled job last did (`kartoteka serve`'s scheduler).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSlot {
    /// Job id (`ingest:crm`, `report:weekly`, …).
    pub job: String,
    /// The newest schedule slot handled.
    pub slot: chrono::DateTime<chrono::Utc>,
    /// What became of the slot.
    pub outcome: SlotOutcome,
    /// The error, or why it was skipped.
    pub detail: Option<String>,
}

/// One recorded ingest run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestRun {
    /// Run number.
    pub id: i64,
    /// Source name.
    pub source: String,
    /// Full, or incremental where the mapping allows.
    pub mode: RunMode,
    /// Start (RFC 3339, UTC).
    pub started_at: String,
    /// End, once ended.
    pub ended_at: Option<String>,
    /// How it ended (or that it is still running).
    pub outcome: RunOutcome,
    /// Snapshot committed.
    pub snapshot_id: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// Per table: rows, seconds, cursors before/after, key fingerprints (JSON).
    pub tables: serde_json::Value,
}

/// How a run ended (an ingest run; a report copy is `ok` or `failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Still going (or its process died and no later run has noticed yet).
    Running,
    /// Committed, reconciled.
    Ok,
    /// Failed; nothing committed.
    Failed,
    /// The lake would not have held exactly the source's keys; nothing committed.
    Mismatch,
    /// The process ended before the run did; nothing committed.
    Interrupted,
}

/// What an ingest run was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Reload every table (`--full`).
    Full,
    /// Incremental where the mapping allows, full elsewhere.
    Auto,
}

/// What a scheduled job did with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotOutcome {
    /// A job new to this control plane: slots before this one are not run.
    Armed,
    /// Ran and succeeded.
    Ok,
    /// Ran and failed.
    Failed,
    /// Not run: the previous run was still going.
    Skipped,
}

/// Whether a user may sign in and be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Signs in; reports are rendered for them.
    Active,
    /// Refused everywhere.
    Disabled,
}

/// A user of Kartoteka (no credential material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Login name.
    pub login: String,
    /// System role.
    pub role: Role,
    /// The CRM staff record this user is.
    pub staff_id: Option<i64>,
    /// Team (team leads see their team's rows).
    pub team: Option<String>,
    /// Active or disabled.
    pub status: UserStatus,
    /// The password must be changed at next login.
    pub must_change_password: bool,
    /// When and by whom the user was created.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Last change.
    pub changed_at: String,
    /// Who changed it last.
    pub changed_by: String,
    /// Where reports are e-mailed.
    pub email: Option<String>,
}

/// A new user's attributes.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name: 1–64 of `a-z 0-9 . _ -`.
    pub login: String,
    /// System role.
    pub role: Role,
    /// Linked staff record.
    pub staff_id: Option<i64>,
    /// Team.
    pub team: Option<String>,
}

/// A generated password, shown once. `Debug` prints nothing of it; memory is wiped on drop.
pub struct InitialPassword(Zeroizing<String>);

impl fmt::Debug for InitialPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitialPassword(<redacted>)")
    }
}

impl InitialPassword {
    /// The password, to be handed to its user.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Letters and digits without look-alikes (no 0/O, 1/l/I): 20 of them carry ≈ 113 bits.
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const PASSWORD_LEN: usize = 20;

fn generate_password() -> InitialPassword {
    generate_code(PASSWORD_LEN)
}

/// `len` random characters of [`ALPHABET`] (passwords, recovery codes).
pub(crate) fn generate_code(len: usize) -> InitialPassword {
    use rand::Rng;
    let mut rng = rand::rng();
    let p: String = (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    InitialPassword(Zeroizing::new(p))
}

fn argon() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

fn hash_password(p: &InitialPassword) -> Result<String> {
    hash_secret(p.expose())
}

/// An argon2id hash (PHC string) of `secret` with a random salt.
pub(crate) fn hash_secret(secret: &str) -> Result<String> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Control(format!("salt: {e}")))?;
    Ok(argon()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| Error::Control(format!("cannot hash password: {e}")))?
        .to_string())
}

/// Does `secret` match the argon2id hash `stored`?
pub(crate) fn verify_secret(secret: &str, stored: &str) -> Result<bool> {
    let parsed = PasswordHash::new(stored)
        .map_err(|e| Error::Control(format!("a stored hash is damaged: {e}")))?;
    Ok(argon().verify_password(secret.as_bytes(), &parsed).is_ok())
}

fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 64
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

pub(crate) fn db(e: sqlx::Error) -> Error {
    Error::Control(format!("control-plane database: {e}"))
}

/// The identity store.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pool: SqlitePool,
    audit: Option<Arc<AuditLog>>,
}

impl ControlPlane {
    /// Open (creating and migrating when needed) the SQLite control plane at `path`.
    pub async fn open(path: &Path, audit: Option<Arc<AuditLog>>) -> Result<ControlPlane> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(db)?;
        let cp = ControlPlane { pool, audit };
        cp.migrate().await?;
        Ok(cp)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let version: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::Control(format!(
                "the control plane has schema version {version}, newer than this build knows ({}); use a newer kartoteka",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::query(*m).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Record the start of an ingest run of `source`; runs of processes that died are marked
    /// `interrupted` first.
    pub async fn start_ingest_run(&self, source: &str, mode: RunMode) -> Result<i64> {
        let running: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, pid FROM ingest_runs WHERE outcome = 'running'")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        for (id, pid) in running {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                sqlx::query(
                    "UPDATE ingest_runs SET outcome = 'interrupted', error = 'the process ended before the run did' WHERE id = ?",
                )
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
            }
        }
        let id = sqlx::query(
            "INSERT INTO ingest_runs (source, mode, pid, started_at, outcome) VALUES (?, ?, ?, ?, 'running')",
        )
        .bind(source)
        .bind(mode.as_str())
        .bind(i64::from(std::process::id()))
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(db)?
        .last_insert_rowid();
        Ok(id)
    }

    /// Record how ingest run `id` ended.
    pub async fn finish_ingest_run(
        &self,
        id: i64,
        outcome: RunOutcome,
        snapshot_id: Option<u64>,
        error: Option<&str>,
        tables: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE ingest_runs SET ended_at = ?, outcome = ?, snapshot_id = ?, error = ?, tables = ? WHERE id = ?",
        )
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(outcome.as_str())
        .bind(snapshot_id.map(|s| s as i64))
        .bind(error)
        .bind(tables.to_string())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The newest `limit` ingest runs, newest first.
    /// When each source's newest successful ingest ended (RFC 3339, UTC): one grouped read, for the
    /// staleness check every page makes.
    pub async fn last_successful_ingests(&self) -> Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT source, MAX(ended_at) FROM ingest_runs
             WHERE outcome = 'ok' AND ended_at IS NOT NULL GROUP BY source",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// The newest `limit` ingest runs, newest first.
    pub async fn ingest_runs(&self, limit: u32) -> Result<Vec<IngestRun>> {
        let rows = sqlx::query(
            "SELECT id, source, mode, started_at, ended_at, outcome, snapshot_id, error, tables
             FROM ingest_runs ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(IngestRun {
                    id: r.try_get(0).map_err(db)?,
                    source: r.try_get(1).map_err(db)?,
                    mode: {
                        let text: String = r.try_get(2).map_err(db)?;
                        RunMode::parse(&text).ok_or_else(|| {
                            Error::Control(format!(
                                "unknown run mode {text:?} in the control plane"
                            ))
                        })?
                    },
                    started_at: r.try_get(3).map_err(db)?,
                    ended_at: r.try_get(4).map_err(db)?,
                    outcome: {
                        let text: String = r.try_get(5).map_err(db)?;
                        RunOutcome::parse(&text).ok_or_else(|| {
                            Error::Control(format!(
                                "unknown run outcome {text:?} in the control plane"
                            ))
                        })?
                    },
                    snapshot_id: r.try_get(6).map_err(db)?,
                    error: r.try_get(7).map_err(db)?,
                    tables: serde_json::from_str(&r.try_get::<String, _>(8).map_err(db)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    /// The newest slot job `job` has handled, if it ever ran under this control plane.
    pub async fn job_slot(&self, job: &str) -> Result<Option<JobSlot>> {
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT slot, outcome, detail FROM job_slots WHERE job = ?")
                .bind(job)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.map(|(slot, outcome, detail)| {
            let slot = chrono::DateTime::parse_from_rfc3339(&slot)
                .map_err(|e| Error::Control(format!("job {job}: bad slot {slot:?}: {e}")))?
                .with_timezone(&chrono::Utc);
            Ok(JobSlot {
                job: job.into(),
                slot,
                outcome: SlotOutcome::parse(&outcome).ok_or_else(|| {
                    Error::Control(format!("job {job}: unknown slot outcome {outcome:?}"))
                })?,
                detail,
            })
        })
        .transpose()
    }

    /// Record that job `job` handled schedule slot `slot` with `outcome`. The recorded slot never
    /// moves back (a long run finishing after a later slot was skipped keeps the later slot).
    pub async fn set_job_slot(
        &self,
        job: &str,
        slot: chrono::DateTime<chrono::Utc>,
        outcome: SlotOutcome,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_slots (job, slot, outcome, detail, changed_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (job) DO UPDATE SET slot = excluded.slot, outcome = excluded.outcome,
                 detail = excluded.detail, changed_at = excluded.changed_at
             WHERE excluded.slot >= job_slots.slot",
        )
        .bind(job)
        .bind(slot.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(outcome.as_str())
        .bind(detail)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Record a rendered report copy; returns its id.
    pub async fn add_report_run(&self, run: &ReportRun) -> Result<i64> {
        let id = sqlx::query(
            "INSERT INTO report_runs (report, recipient, trigger, started_at, ended_at, outcome, snapshot_id,
                 params, content_hash, files, error, seconds)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.report)
        .bind(&run.recipient)
        .bind(&run.trigger)
        .bind(&run.started_at)
        .bind(&run.ended_at)
        .bind(run.outcome.as_str())
        .bind(run.snapshot_id)
        .bind(run.params.to_string())
        .bind(&run.content_hash)
        .bind(serde_json::to_string(&run.files).expect("strings serialise"))
        .bind(&run.error)
        .bind(run.seconds)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .last_insert_rowid();
        Ok(id)
    }

    /// Report runs, newest first: of `report` (all when `None`), for `recipient` (all when `None`).
    pub async fn report_runs(
        &self,
        report: Option<&str>,
        recipient: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportRun>> {
        self.select_report_runs(report, recipient, None, limit)
            .await
    }

    async fn select_report_runs(
        &self,
        report: Option<&str>,
        recipient: Option<&str>,
        id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ReportRun>> {
        let rows = sqlx::query(
            "SELECT id, report, recipient, trigger, started_at, ended_at, outcome, snapshot_id, params,
                    content_hash, files, error, seconds
             FROM report_runs
             WHERE (?1 IS NULL OR report = ?1) AND (?2 IS NULL OR recipient = ?2)
               AND (?3 IS NULL OR id = ?3)
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(report)
        .bind(recipient)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(ReportRun {
                    id: r.try_get(0).map_err(db)?,
                    report: r.try_get(1).map_err(db)?,
                    recipient: r.try_get(2).map_err(db)?,
                    trigger: r.try_get(3).map_err(db)?,
                    started_at: r.try_get(4).map_err(db)?,
                    ended_at: r.try_get(5).map_err(db)?,
                    outcome: {
                        let text: String = r.try_get(6).map_err(db)?;
                        RunOutcome::parse(&text).ok_or_else(|| {
                            Error::Control(format!(
                                "unknown report run outcome {text:?} in the control plane"
                            ))
                        })?
                    },
                    snapshot_id: r.try_get(7).map_err(db)?,
                    params: serde_json::from_str(&r.try_get::<String, _>(8).map_err(db)?)
                        .unwrap_or(serde_json::Value::Null),
                    content_hash: r.try_get(9).map_err(db)?,
                    files: serde_json::from_str(&r.try_get::<String, _>(10).map_err(db)?)
                        .unwrap_or_default(),
                    error: r.try_get(11).map_err(db)?,
                    seconds: r.try_get(12).map_err(db)?,
                })
            })
            .collect()
    }

    /// Forget every report run rendered from a snapshot older than `snapshot` (an erasure: those
    /// copies may show the erased person). Returns them, for the caller to delete their files.
    pub async fn take_report_runs_before_snapshot(&self, snapshot: u64) -> Result<Vec<ReportRun>> {
        let old: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM report_runs WHERE snapshot_id < ? ORDER BY id")
                .bind(snapshot as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        self.take_report_runs(old).await
    }

    async fn take_report_runs(&self, ids: Vec<i64>) -> Result<Vec<ReportRun>> {
        let mut gone = Vec::new();
        for id in ids {
            let mut runs = self.select_report_runs(None, None, Some(id), 1).await?;
            sqlx::query("DELETE FROM report_runs WHERE id = ?")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
            gone.append(&mut runs);
        }
        Ok(gone)
    }

    /// Forget report runs started before `before`, except the newest successful run of each
    /// report for each recipient (what the dashboard shows). Returns the forgotten runs, whose files
    /// the caller deletes.
    pub async fn prune_report_runs(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ReportRun>> {
        let cutoff = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let old: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM report_runs r
             WHERE started_at < ?
               AND id <> COALESCE((SELECT MAX(id) FROM report_runs n
                                   WHERE n.report = r.report AND n.recipient = r.recipient
                                     AND n.outcome = 'ok'), -1)",
        )
        .bind(&cutoff)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        self.take_report_runs(old).await
    }

    /// The pool (for the control plane's other modules).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Record an act in the audit log (for the control plane's other modules).
    pub(crate) fn audit_event(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        self.audit(actor, action, target, details)
    }

    fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        if let Some(a) = &self.audit {
            a.append(Event {
                actor: actor.into(),
                action: action.into(),
                target: target.into(),
                details,
                outcome: Outcome::Ok,
            })?;
        }
        Ok(())
    }

    /// Create a user with a random password, returned once.
    pub async fn add_user(&self, new: NewUser, by: &str) -> Result<(User, InitialPassword)> {
        if !valid_login(&new.login) {
            return Err(Error::Control(format!(
                "login {:?} is not valid: use 1–64 of a-z, 0-9, '.', '_', '-'",
                new.login
            )));
        }
        if matches!(new.role, Role::Manager | Role::TeamLead) && new.staff_id.is_none() {
            return Err(Error::Control(format!(
                "a {} must be linked to their CRM staff record (--staff-id)",
                new.role.as_str()
            )));
        }
        let password = generate_password();
        let hash = hash_password(&password)?;
        let now = crate::audit::now_ts();
        let inserted = sqlx::query(
            "INSERT INTO users (login, role, staff_id, team, status, password_hash, must_change_password,
                                created_at, created_by, changed_at, changed_by)
             VALUES (?, ?, ?, ?, 'active', ?, 1, ?, ?, ?, ?)",
        )
        .bind(&new.login)
        .bind(new.role.as_str())
        .bind(new.staff_id)
        .bind(&new.team)
        .bind(&hash)
        .bind(&now)
        .bind(by)
        .bind(&now)
        .bind(by)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::Control(format!(
                    "user {:?} already exists",
                    new.login
                )));
            }
            Err(e) => return Err(db(e)),
        }
        self.audit(
            by,
            crate::audit::action::USERS_ADD,
            &new.login,
            serde_json::json!({ "role": new.role.as_str(), "staff_id": new.staff_id, "team": new.team }),
        )?;
        Ok((self.require(&new.login).await?, password))
    }

    /// All users, by login.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT login, role, staff_id, team, status, must_change_password, created_at, created_by,
                    changed_at, changed_by, email FROM users ORDER BY login",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(user_from_row).collect()
    }

    /// One user.
    pub async fn user(&self, login: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT login, role, staff_id, team, status, must_change_password, created_at, created_by,
                    changed_at, changed_by, email FROM users WHERE login = ?",
        )
        .bind(login)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub(crate) async fn require(&self, login: &str) -> Result<User> {
        self.user(login).await?.ok_or_else(|| {
            Error::Control(format!(
                "no user {login:?}; `kartoteka users list` shows them"
            ))
        })
    }

    async fn update(&self, login: &str, set: &'static str, value: &str, by: &str) -> Result<User> {
        let before = self.require(login).await?;
        let now = crate::audit::now_ts();
        // `set` is one of this module's constant column assignments, never user text.
        let sql = match set {
            "role" => "UPDATE users SET role = ?, changed_at = ?, changed_by = ? WHERE login = ?",
            "status" => {
                "UPDATE users SET status = ?, changed_at = ?, changed_by = ? WHERE login = ?"
            }
            "email" => "UPDATE users SET email = ?, changed_at = ?, changed_by = ? WHERE login = ?",
            _ => return Err(Error::Control(format!("unknown user attribute {set}"))),
        };
        sqlx::query(sql)
            .bind(value)
            .bind(&now)
            .bind(by)
            .bind(login)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let after = self.require(login).await?;
        let old = match set {
            "role" => before.role.as_str().to_string(),
            "email" => before.email.unwrap_or_default(),
            _ => before.status.as_str().to_string(),
        };
        self.audit(
            by,
            match set {
                "role" => crate::audit::action::USERS_SET_ROLE,
                "status" => crate::audit::action::USERS_SET_STATUS,
                _ => crate::audit::action::USERS_SET_EMAIL,
            },
            login,
            serde_json::json!({ "from": old, "to": value }),
        )?;
        Ok(after)
    }

    /// Remove a user for good (the demo's logins, when the demo is replaced by a real CRM).
    pub async fn remove_user(&self, login: &str, by: &str) -> Result<()> {
        let before = self.require(login).await?;
        sqlx::query("DELETE FROM users WHERE login = ?")
            .bind(login)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        self.audit(
            by,
            crate::audit::action::USERS_REMOVE,
            login,
            serde_json::json!({ "role": before.role.as_str() }),
        )?;
        Ok(())
    }

    /// Set where a user's reports are e-mailed.
    pub async fn set_email(&self, login: &str, email: &str, by: &str) -> Result<User> {
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
        });
        if !valid {
            return Err(Error::Control(format!(
                "{email:?} is not an e-mail address"
            )));
        }
        self.update(login, "email", email, by).await
    }

    /// Record a delivery of report copy `d.run_id`.
    pub async fn add_report_delivery(&self, d: &ReportDelivery) -> Result<()> {
        sqlx::query(
            "INSERT INTO report_deliveries (run_id, channel, target, attempts, outcome, error, at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.run_id)
        .bind(d.channel.as_str())
        .bind(&d.target)
        .bind(d.attempts)
        .bind(d.outcome.as_str())
        .bind(&d.error)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The deliveries of report copy `run_id`.
    pub async fn report_deliveries(&self, run_id: i64) -> Result<Vec<ReportDelivery>> {
        let rows: Vec<(i64, String, String, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT run_id, channel, target, attempts, outcome, error FROM report_deliveries
             WHERE run_id = ? ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(run_id, channel, target, attempts, outcome, error)| {
                let bad = |what: &str, v: &str| {
                    Error::Control(format!(
                        "unknown delivery {what} {v:?} in the control plane"
                    ))
                };
                Ok(ReportDelivery {
                    run_id,
                    channel: Channel::parse(&channel).ok_or_else(|| bad("channel", &channel))?,
                    target,
                    attempts,
                    outcome: DeliveryOutcome::parse(&outcome)
                        .ok_or_else(|| bad("outcome", &outcome))?,
                    error,
                })
            })
            .collect()
    }

    /// Disable a user: they can no longer sign in or be previewed.
    pub async fn disable(&self, login: &str, by: &str) -> Result<User> {
        self.update(login, "status", UserStatus::Disabled.as_str(), by)
            .await
    }

    /// Change a user's system role.
    pub async fn set_role(&self, login: &str, role: Role, by: &str) -> Result<User> {
        let user = self.require(login).await?;
        if matches!(role, Role::Manager | Role::TeamLead) && user.staff_id.is_none() {
            return Err(Error::Control(format!(
                "{login} has no staff record, so cannot be a {}",
                role.as_str()
            )));
        }
        self.update(login, "role", role.as_str(), by).await
    }

    /// Issue a new random password (returned once); it must be changed at next login.
    pub async fn reset_password(&self, login: &str, by: &str) -> Result<InitialPassword> {
        self.require(login).await?;
        let password = generate_password();
        self.store_password(
            login,
            &hash_password(&password)?,
            true,
            by,
            crate::audit::action::USERS_RESET,
        )
        .await?;
        Ok(password)
    }

    /// Store a password hash for `login` (with or without the must-change mark) as `by`'s act,
    /// audited as `action` with nothing of the password.
    async fn store_password(
        &self,
        login: &str,
        hash: &str,
        must_change: bool,
        by: &str,
        action: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE users SET password_hash = ?, must_change_password = ?, changed_at = ?, changed_by = ?
             WHERE login = ?",
        )
        .bind(hash)
        .bind(i64::from(must_change))
        .bind(crate::audit::now_ts())
        .bind(by)
        .bind(login)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.audit(by, action, login, serde_json::json!({}))
    }

    /// `login` chooses a new password (the web door's forced change after a generated one): checked
    /// against the rules ([`crate::password::check`]; `second_factor` says whether they sign in with
    /// one) and against the password it replaces; stored as argon2id, the must-change mark cleared,
    /// audited without any of it. `Ok(Err(why))` when the rules refuse it (nothing changed).
    pub async fn set_password(
        &self,
        login: &str,
        new: &str,
        second_factor: bool,
    ) -> Result<std::result::Result<(), crate::password::Weakness>> {
        self.require(login).await?;
        if let Err(weak) = crate::password::check(login, new, second_factor) {
            return Ok(Err(weak));
        }
        let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE login = ?")
            .bind(login)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        if verify_secret(new, &stored)? {
            return Ok(Err(crate::password::Weakness::Unchanged));
        }
        self.store_password(
            login,
            &hash_secret(new)?,
            false,
            login,
            crate::audit::action::USERS_SET_PASSWORD,
        )
        .await?;
        Ok(Ok(()))
    }

    /// Check a password (the login flow comes with the web server).
    pub async fn check_password(&self, login: &str, password: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT password_hash FROM users WHERE login = ? AND status = 'active'")
                .bind(login)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let Some(row) = row else {
            // No such (active) user: the same argon2 work as for a real one, so the time taken does
            // not tell which logins exist.
            static DUMMY: std::sync::LazyLock<Option<String>> =
                std::sync::LazyLock::new(|| hash_secret("kartoteka: no such user").ok());
            if let Some(dummy) = DUMMY.as_deref() {
                let _ = verify_secret(password, dummy);
            }
            return Ok(false);
        };
        let stored: String = row.try_get(0).map_err(db)?;
        verify_secret(password, &stored)
            .map_err(|_| Error::Control(format!("the stored password hash of {login} is damaged")))
    }
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User> {
    let role: String = row.try_get("role").map_err(db)?;
    let status: String = row.try_get("status").map_err(db)?;
    Ok(User {
        login: row.try_get("login").map_err(db)?,
        role: Role::parse(&role)
            .ok_or_else(|| Error::Control(format!("unknown role {role:?} in the control plane")))?,
        staff_id: row.try_get("staff_id").map_err(db)?,
        team: row.try_get("team").map_err(db)?,
        status: UserStatus::parse(&status).ok_or_else(|| {
            Error::Control(format!(
                "unknown user status {status:?} in the control plane"
            ))
        })?,
        must_change_password: row.try_get::<i64, _>("must_change_password").map_err(db)? != 0,
        created_at: row.try_get("created_at").map_err(db)?,
        created_by: row.try_get("created_by").map_err(db)?,
        changed_at: row.try_get("changed_at").map_err(db)?,
        changed_by: row.try_get("changed_by").map_err(db)?,
        email: row.try_get("email").map_err(db)?,
    })
}

#[async_trait::async_trait]
impl crate::lake::CommitLedger for ControlPlane {
    async fn newest(&self) -> Result<Option<crate::lake::CommitRecord>> {
        let row = sqlx::query(
            "SELECT id, mac, committed_at, operation FROM lake_commits ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let committed_at: String = row.try_get(2).map_err(db)?;
        Ok(Some(crate::lake::CommitRecord {
            id: row.try_get::<i64, _>(0).map_err(db)? as u64,
            mac: row.try_get(1).map_err(db)?,
            committed_at: chrono::DateTime::parse_from_rfc3339(&committed_at)
                .map_err(|e| {
                    Error::Control(format!("lake_commits: bad time {committed_at:?}: {e}"))
                })?
                .with_timezone(&chrono::Utc),
            operation: row.try_get(3).map_err(db)?,
        }))
    }

    async fn record(&self, commit: &crate::lake::CommitRecord) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO lake_commits (id, mac, committed_at, operation, recorded_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(commit.id as i64)
        .bind(&commit.mac)
        .bind(commit.committed_at.to_rfc3339())
        .bind(&commit.operation)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 1 {
            self.audit(
                "kartoteka",
                crate::audit::action::LAKE_COMMIT,
                &format!("snapshot {}", commit.id),
                serde_json::json!({ "snapshot": commit.id, "mac": commit.mac, "operation": commit.operation }),
            )?;
        }
        Ok(())
    }

    async fn reanchor(&self, commit: &crate::lake::CommitRecord) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM lake_commits WHERE id >= ?")
            .bind(commit.id as i64)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO lake_commits (id, mac, committed_at, operation, recorded_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(commit.id as i64)
        .bind(&commit.mac)
        .bind(commit.committed_at.to_rfc3339())
        .bind(&commit.operation)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.audit(
            "owner",
            crate::audit::action::LAKE_TRUST,
            &format!("snapshot {}", commit.id),
            serde_json::json!({ "snapshot": commit.id, "mac": commit.mac }),
        )
    }
}
