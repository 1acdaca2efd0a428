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
use crate::session::{Principal, Role};

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
];

/// One recorded ingest run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestRun {
    /// Run number.
    pub id: i64,
    /// Source name.
    pub source: String,
    /// `full` or `incremental`.
    pub mode: String,
    /// Start (RFC 3339, UTC).
    pub started_at: String,
    /// End, once ended.
    pub ended_at: Option<String>,
    /// `running`, `ok`, `failed`, `mismatch` (committed, but reconciliation disagreed) or
    /// `interrupted` (the process died).
    pub outcome: String,
    /// Snapshot committed.
    pub snapshot_id: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// Per table: rows, seconds, cursors before/after, key fingerprints (JSON).
    pub tables: serde_json::Value,
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
    /// `active` or `disabled`.
    pub status: String,
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
    use rand::Rng;
    let mut rng = rand::rng();
    let p: String = (0..PASSWORD_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    InitialPassword(Zeroizing::new(p))
}

fn argon() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

fn hash_password(p: &InitialPassword) -> Result<String> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Control(format!("salt: {e}")))?;
    Ok(argon()
        .hash_password(p.expose().as_bytes(), &salt)
        .map_err(|e| Error::Control(format!("cannot hash password: {e}")))?
        .to_string())
}

fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 64
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn db(e: sqlx::Error) -> Error {
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
    pub async fn start_ingest_run(&self, source: &str, mode: &str) -> Result<i64> {
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
        .bind(mode)
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
        outcome: &str,
        snapshot_id: Option<u64>,
        error: Option<&str>,
        tables: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE ingest_runs SET ended_at = ?, outcome = ?, snapshot_id = ?, error = ?, tables = ? WHERE id = ?",
        )
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(outcome)
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
                    mode: r.try_get(2).map_err(db)?,
                    started_at: r.try_get(3).map_err(db)?,
                    ended_at: r.try_get(4).map_err(db)?,
                    outcome: r.try_get(5).map_err(db)?,
                    snapshot_id: r.try_get(6).map_err(db)?,
                    error: r.try_get(7).map_err(db)?,
                    tables: serde_json::from_str(&r.try_get::<String, _>(8).map_err(db)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
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
            "users.add",
            &new.login,
            serde_json::json!({ "role": new.role.as_str(), "staff_id": new.staff_id, "team": new.team }),
        )?;
        Ok((self.require(&new.login).await?, password))
    }

    /// All users, by login.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT login, role, staff_id, team, status, must_change_password, created_at, created_by,
                    changed_at, changed_by FROM users ORDER BY login",
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
                    changed_at, changed_by FROM users WHERE login = ?",
        )
        .bind(login)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn require(&self, login: &str) -> Result<User> {
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
        let old = if set == "role" {
            before.role.as_str().to_string()
        } else {
            before.status
        };
        self.audit(
            by,
            &format!("users.set-{set}"),
            login,
            serde_json::json!({ "from": old, "to": value }),
        )?;
        Ok(after)
    }

    /// Disable a user: they can no longer sign in or be previewed.
    pub async fn disable(&self, login: &str, by: &str) -> Result<User> {
        self.update(login, "status", "disabled", by).await
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
        let hash = hash_password(&password)?;
        sqlx::query(
            "UPDATE users SET password_hash = ?, must_change_password = 1, changed_at = ?, changed_by = ?
             WHERE login = ?",
        )
        .bind(&hash)
        .bind(crate::audit::now_ts())
        .bind(by)
        .bind(login)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.audit(by, "users.reset", login, serde_json::json!({}))?;
        Ok(password)
    }

    /// Check a password (the login flow comes with the web server).
    pub async fn check_password(&self, login: &str, password: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT password_hash FROM users WHERE login = ? AND status = 'active'")
                .bind(login)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let Some(row) = row else { return Ok(false) };
        let stored: String = row.try_get(0).map_err(db)?;
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| Error::Control(format!("stored hash of {login} is damaged: {e}")))?;
        Ok(argon()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    }

    /// The principal of an active user, as the owner `preview_by` previews them (`--as`). Team
    /// members are resolved by the caller from the lake's staff table.
    pub async fn principal(&self, login: &str, preview_by: Option<&str>) -> Result<Principal> {
        let user = self.require(login).await?;
        if user.status != "active" {
            return Err(Error::Denied(format!("user {login} is {}", user.status)));
        }
        Ok(Principal {
            user: user.login,
            role: user.role,
            staff_id: user.staff_id,
            team: Vec::new(),
            preview_by: preview_by.map(str::to_string),
        })
    }
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User> {
    let role: String = row.try_get("role").map_err(db)?;
    Ok(User {
        login: row.try_get("login").map_err(db)?,
        role: Role::parse(&role)
            .ok_or_else(|| Error::Control(format!("unknown role {role:?} in the control plane")))?,
        staff_id: row.try_get("staff_id").map_err(db)?,
        team: row.try_get("team").map_err(db)?,
        status: row.try_get("status").map_err(db)?,
        must_change_password: row.try_get::<i64, _>("must_change_password").map_err(db)? != 0,
        created_at: row.try_get("created_at").map_err(db)?,
        created_by: row.try_get("created_by").map_err(db)?,
        changed_at: row.try_get("changed_at").map_err(db)?,
        changed_by: row.try_get("changed_by").map_err(db)?,
    })
}
