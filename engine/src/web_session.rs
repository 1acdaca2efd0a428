//! Server-side sign-in sessions of the web door, kept in the control plane (`web_sessions`).
//!
//! A session id is 256 random bits, handed to the browser once; the database keeps only its SHA-256,
//! so whoever reads `control.sqlite` cannot sign in as anyone. A session is either half-way (the
//! password was right, the second factor is pending) or signed in; going from one to the other issues
//! a new id (no session fixation). Every lookup checks the idle and absolute limits and the user's
//! status, so a disabled user, an expired session or `kartoteka users revoke-sessions` ends it at the
//! next request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::control::{ControlPlane, UserStatus};
use crate::error::{Error, Result};

/// How far a session has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The password was right; the second factor (or a new password) is pending.
    Password,
    /// Signed in.
    Full,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Password => "password",
            Stage::Full => "full",
        }
    }

    fn parse(s: &str) -> Option<Stage> {
        match s {
            "password" => Some(Stage::Password),
            "full" => Some(Stage::Full),
            _ => None,
        }
    }
}

/// A session id as the browser holds it. Shown by nothing: its `Debug` is redacted.
pub struct SessionToken(String);

impl SessionToken {
    /// The id, for the cookie (and nowhere else).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn new() -> SessionToken {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SessionToken(hex::encode(bytes))
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// What the database keeps of an id.
fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How long a session lives.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Without a request for this long, it ends.
    pub idle: Duration,
    /// Whatever happens, it ends this long after sign-in.
    pub absolute: Duration,
}

impl Default for Limits {
    /// 30 minutes idle, 12 hours in all (a working day).
    fn default() -> Limits {
        Limits {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
        }
    }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// Whose.
    pub login: String,
    /// How far sign-in has got.
    pub stage: Stage,
    /// The token every state-changing form must carry (compared in constant time).
    pub csrf: String,
    /// When it began (the absolute limit counts from here).
    pub created_at: DateTime<Utc>,
    /// The request before this one.
    pub last_seen_at: DateTime<Utc>,
}

impl WebSession {
    /// Does `token` (from a form) match this session's CSRF token?
    pub fn csrf_matches(&self, token: &str) -> bool {
        crate::lake::constant_time_eq(self.csrf.as_bytes(), token.as_bytes())
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Control(format!("web_sessions holds a bad time {s:?}: {e}")))
}

impl ControlPlane {
    /// Start a session for `login` at `stage`, from `ip` with `user_agent`; the id is returned once.
    pub async fn create_session(
        &self,
        login: &str,
        stage: Stage,
        ip: &str,
        user_agent: &str,
        now: DateTime<Utc>,
    ) -> Result<(SessionToken, WebSession)> {
        let token = SessionToken::new();
        let csrf = SessionToken::new().0;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, login, stage, csrf, created_at, last_seen_at, ip, user_agent) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(hash(&token.0))
        .bind(login)
        .bind(stage.as_str())
        .bind(&csrf)
        .bind(ts(now))
        .bind(ts(now))
        .bind(ip)
        .bind(user_agent)
        .execute(self.pool())
        .await
        .map_err(crate::control::db)?;
        Ok((
            token,
            WebSession {
                login: login.into(),
                stage,
                csrf,
                created_at: now,
                last_seen_at: now,
            },
        ))
    }

    /// The live session `token` names, its last-seen time moved to `now`; `None` — and the session
    /// deleted — when it is unknown, idle or too old, or its user is disabled or gone.
    pub async fn session(
        &self,
        token: &str,
        limits: Limits,
        now: DateTime<Utc>,
    ) -> Result<Option<WebSession>> {
        let id = hash(token);
        let row: Option<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT login, stage, csrf, created_at, last_seen_at FROM web_sessions WHERE id_hash = ?",
        )
        .bind(&id)
        .fetch_optional(self.pool())
        .await
        .map_err(crate::control::db)?;
        let Some((login, stage, csrf, created_at, last_seen_at)) = row else {
            return Ok(None);
        };
        let session = WebSession {
            login,
            stage: Stage::parse(&stage)
                .ok_or_else(|| Error::Control(format!("web_sessions holds stage {stage:?}")))?,
            csrf,
            created_at: parse_ts(&created_at)?,
            last_seen_at: parse_ts(&last_seen_at)?,
        };
        let within = |since: DateTime<Utc>, limit: Duration| {
            (now - since)
                .to_std()
                .map_or(true, |elapsed| elapsed <= limit)
        };
        let active = self
            .user(&session.login)
            .await?
            .is_some_and(|u| u.status == UserStatus::Active);
        if !active
            || !within(session.last_seen_at, limits.idle)
            || !within(session.created_at, limits.absolute)
        {
            sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
                .bind(&id)
                .execute(self.pool())
                .await
                .map_err(crate::control::db)?;
            return Ok(None);
        }
        // The last-seen time moves in steps of a tenth of the idle limit (at most a minute): a page
        // read is then not a database write (and an fsync) each time, and the idle limit is still
        // kept to within that step.
        let step = (limits.idle / 10).min(Duration::from_secs(60));
        if (now - session.last_seen_at)
            .to_std()
            .is_ok_and(|d| d >= step)
        {
            sqlx::query("UPDATE web_sessions SET last_seen_at = ? WHERE id_hash = ?")
                .bind(ts(now))
                .bind(&id)
                .execute(self.pool())
                .await
                .map_err(crate::control::db)?;
        }
        Ok(Some(session))
    }

    /// Move the session `token` to `stage` under a new id (the old one stops working), keeping when it
    /// began; `None` when `token` names no session.
    pub async fn advance_session(
        &self,
        token: &str,
        stage: Stage,
        now: DateTime<Utc>,
    ) -> Result<Option<(SessionToken, WebSession)>> {
        let new = SessionToken::new();
        let csrf = SessionToken::new().0;
        let changed = sqlx::query(
            "UPDATE web_sessions SET id_hash = ?, stage = ?, csrf = ?, last_seen_at = ? WHERE id_hash = ?",
        )
        .bind(hash(&new.0))
        .bind(stage.as_str())
        .bind(&csrf)
        .bind(ts(now))
        .bind(hash(token))
        .execute(self.pool())
        .await
        .map_err(crate::control::db)?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        let row: (String, String) =
            sqlx::query_as("SELECT login, created_at FROM web_sessions WHERE id_hash = ?")
                .bind(hash(&new.0))
                .fetch_one(self.pool())
                .await
                .map_err(crate::control::db)?;
        Ok(Some((
            new,
            WebSession {
                login: row.0,
                stage,
                csrf,
                created_at: parse_ts(&row.1)?,
                last_seen_at: now,
            },
        )))
    }

    /// Sign out: the session `token` ends.
    pub async fn end_session(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
            .bind(hash(token))
            .execute(self.pool())
            .await
            .map_err(crate::control::db)?;
        Ok(())
    }

    /// Remember the language `login` chose for the pages (`ru` or `en`).
    pub async fn set_language(&self, login: &str, language: &str) -> Result<()> {
        if !matches!(language, "ru" | "en") {
            return Err(Error::Control(format!(
                "language {language:?}: the pages speak ru and en"
            )));
        }
        sqlx::query("UPDATE users SET language = ? WHERE login = ?")
            .bind(language)
            .bind(login)
            .execute(self.pool())
            .await
            .map_err(crate::control::db)?;
        Ok(())
    }

    /// The language `login` chose, if any.
    pub async fn language(&self, login: &str) -> Result<Option<String>> {
        let chosen: Option<Option<String>> =
            sqlx::query_scalar("SELECT language FROM users WHERE login = ?")
                .bind(login)
                .fetch_optional(self.pool())
                .await
                .map_err(crate::control::db)?;
        Ok(chosen.flatten())
    }

    /// End every session of `login` (audited as `by`'s act); how many there were.
    pub async fn revoke_sessions(&self, login: &str, by: &str) -> Result<u64> {
        self.require(login).await?;
        let n = sqlx::query("DELETE FROM web_sessions WHERE login = ?")
            .bind(login)
            .execute(self.pool())
            .await
            .map_err(crate::control::db)?
            .rows_affected();
        self.audit_event(
            by,
            crate::audit::action::USERS_REVOKE_SESSIONS,
            login,
            serde_json::json!({ "sessions": n }),
        )?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::NewUser;
    use crate::session::Role;

    async fn control() -> (tempfile::TempDir, ControlPlane) {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = ControlPlane::open(&dir.path().join("control.sqlite"), None)
            .await
            .expect("control");
        control
            .add_user(
                NewUser {
                    login: "olga".into(),
                    role: Role::Owner,
                    staff_id: None,
                    team: None,
                },
                "test",
            )
            .await
            .expect("user");
        (dir, control)
    }

    #[tokio::test]
    async fn a_session_lives_within_its_limits_and_ends_on_revoke_disable_or_sign_out() {
        let (_dir, control) = control().await;
        let limits = Limits::default();
        let t0 = Utc::now();
        let (token, s) = control
            .create_session("olga", Stage::Password, "127.0.0.1", "test", t0)
            .await
            .expect("create");
        assert_eq!(s.stage, Stage::Password);
        assert!(!format!("{token:?}").contains(token.expose()));
        // The database keeps no usable id.
        let stored: Vec<(String,)> = sqlx::query_as("SELECT id_hash FROM web_sessions")
            .fetch_all(control.pool())
            .await
            .expect("rows");
        assert!(stored.iter().all(|(h,)| h != token.expose()));

        // The second factor: a new id; the old one is gone.
        let (full, s) = control
            .advance_session(token.expose(), Stage::Full, t0)
            .await
            .expect("advance")
            .expect("known");
        assert_eq!((s.stage, s.login.as_str()), (Stage::Full, "olga"));
        assert!(
            control
                .session(token.expose(), limits, t0)
                .await
                .expect("lookup")
                .is_none(),
            "the half-way id no longer works"
        );
        // Requests within the idle limit keep it alive, up to the absolute limit.
        let mut t = t0;
        while t - t0 < chrono::Duration::hours(11) {
            t += chrono::Duration::minutes(29);
            let live = control
                .session(full.expose(), limits, t)
                .await
                .expect("lookup");
            assert!(
                live.is_some_and(|s| s.csrf_matches(&s.csrf.clone())),
                "alive at {t}"
            );
        }
        let late = t0 + chrono::Duration::hours(12) + chrono::Duration::minutes(1);
        assert!(
            control
                .session(full.expose(), limits, late)
                .await
                .expect("lookup")
                .is_none(),
            "absolute limit"
        );

        // Idle: 31 minutes without a request.
        let (idle, _) = control
            .create_session("olga", Stage::Full, "127.0.0.1", "test", t0)
            .await
            .expect("create");
        let later = t0 + chrono::Duration::minutes(31);
        assert!(
            control
                .session(idle.expose(), limits, later)
                .await
                .expect("lookup")
                .is_none()
        );

        // Revoked: every session of the user, at the next request.
        let (a, _) = control
            .create_session("olga", Stage::Full, "127.0.0.1", "test", t0)
            .await
            .expect("create");
        let (b, _) = control
            .create_session("olga", Stage::Full, "10.0.0.2", "test", t0)
            .await
            .expect("create");
        assert_eq!(
            control
                .revoke_sessions("olga", "owner")
                .await
                .expect("revoke"),
            2
        );
        for token in [&a, &b] {
            assert!(
                control
                    .session(token.expose(), limits, t0)
                    .await
                    .expect("lookup")
                    .is_none()
            );
        }

        // Disabled: the session ends at the next request.
        let (c, _) = control
            .create_session("olga", Stage::Full, "127.0.0.1", "test", t0)
            .await
            .expect("create");
        control.disable("olga", "owner").await.expect("disable");
        assert!(
            control
                .session(c.expose(), limits, t0)
                .await
                .expect("lookup")
                .is_none()
        );

        // Signed out.
        let (_dir2, control) = super::tests::control().await;
        let (d, _) = control
            .create_session("olga", Stage::Full, "127.0.0.1", "test", t0)
            .await
            .expect("create");
        control.end_session(d.expose()).await.expect("end");
        assert!(
            control
                .session(d.expose(), limits, t0)
                .await
                .expect("lookup")
                .is_none()
        );
        // A CSRF token is compared exactly.
        let (_, s) = control
            .create_session("olga", Stage::Full, "127.0.0.1", "test", t0)
            .await
            .expect("create");
        assert!(
            s.csrf_matches(&s.csrf.clone()) && !s.csrf_matches("") && !s.csrf_matches(&s.csrf[1..])
        );
    }
}
