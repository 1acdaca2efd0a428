//! The second factor's state in the control plane: each user's TOTP secret — sealed with AES-256-GCM
//! under a key derived from the lake's keyring and bound to the login, so `control.sqlite` alone holds
//! nothing usable — the newest time step accepted (a code works once), and one-time recovery codes kept
//! as argon2id hashes. The codes themselves are computed by the web door (`dashboards/src/totp.rs`).

use chrono::Utc;
use sqlx::Row;
use zeroize::Zeroizing;

use crate::control::{ControlPlane, InitialPassword, db};
use crate::error::{Error, Result};

/// Recovery codes issued at a time.
pub const RECOVERY_CODES: usize = 10;

/// What the keyring binds a sealed TOTP secret to.
pub fn totp_aad(login: &str) -> Vec<u8> {
    format!("kartoteka/totp/{login}").into_bytes()
}

impl ControlPlane {
    /// Store `login`'s TOTP secret, already sealed ([`crate::Lake::seal_user_secret`] with
    /// [`totp_aad`]); an earlier one and its accepted steps are forgotten. Audited (no secret).
    pub async fn set_totp_secret(&self, login: &str, sealed: &[u8], by: &str) -> Result<()> {
        self.require(login).await?;
        self.write_totp_secret(login, Some(sealed)).await?;
        self.audit_event(
            by,
            crate::audit::action::USERS_TOTP_ENROL,
            login,
            serde_json::json!({}),
        )
    }

    /// Replace `login`'s sealed secret (or forget it); the accepted steps go with the old one.
    async fn write_totp_secret(&self, login: &str, sealed: Option<&[u8]>) -> Result<()> {
        sqlx::query("UPDATE users SET totp_sealed = ?, totp_last_step = NULL WHERE login = ?")
            .bind(sealed.map(hex::encode))
            .bind(login)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// `login`'s sealed TOTP secret, when enrolled.
    pub async fn totp_secret(&self, login: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT totp_sealed FROM users WHERE login = ?")
            .bind(login)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        let Some(text) = row
            .map(|r| r.try_get::<Option<String>, _>(0))
            .transpose()
            .map_err(db)?
            .flatten()
        else {
            return Ok(None);
        };
        hex::decode(&text).map(Some).map_err(|e| {
            Error::Control(format!("the stored TOTP secret of {login} is damaged: {e}"))
        })
    }

    /// Accept time step `step` for `login` if it is newer than every step accepted before — in one
    /// statement, so two requests racing with one code cannot both pass.
    pub async fn accept_totp_step(&self, login: &str, step: u64) -> Result<bool> {
        let step =
            i64::try_from(step).map_err(|_| Error::Control("time step out of range".into()))?;
        let changed = sqlx::query(
            "UPDATE users SET totp_last_step = ? \
             WHERE login = ? AND totp_sealed IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?)",
        )
        .bind(step)
        .bind(login)
        .bind(step)
        .execute(self.pool())
        .await
        .map_err(db)?
        .rows_affected();
        Ok(changed == 1)
    }

    /// The newest step accepted for `login`.
    pub async fn last_totp_step(&self, login: &str) -> Result<Option<u64>> {
        let step: Option<Option<i64>> =
            sqlx::query_scalar("SELECT totp_last_step FROM users WHERE login = ?")
                .bind(login)
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
        Ok(step.flatten().and_then(|s| u64::try_from(s).ok()))
    }

    /// Issue [`RECOVERY_CODES`] new one-time recovery codes for `login` (the old ones stop working),
    /// returned once, stored as argon2id hashes.
    pub async fn new_recovery_codes(&self, login: &str, by: &str) -> Result<Vec<InitialPassword>> {
        self.require(login).await?;
        let codes: Vec<InitialPassword> = (0..RECOVERY_CODES)
            .map(|_| crate::control::generate_code(10))
            .collect();
        let mut tx = self.pool().begin().await.map_err(db)?;
        sqlx::query("DELETE FROM recovery_codes WHERE login = ?")
            .bind(login)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for code in &codes {
            sqlx::query("INSERT INTO recovery_codes (login, code_hash) VALUES (?, ?)")
                .bind(login)
                .bind(crate::control::hash_secret(code.expose())?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.audit_event(
            by,
            crate::audit::action::USERS_RECOVERY_CODES,
            login,
            serde_json::json!({ "codes": RECOVERY_CODES }),
        )?;
        Ok(codes)
    }

    /// Use one of `login`'s recovery codes: true (and the code spent) when `code` is one not used yet.
    pub async fn use_recovery_code(&self, login: &str, code: &str) -> Result<bool> {
        let code = Zeroizing::new(code.trim().to_string());
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, code_hash FROM recovery_codes WHERE login = ? AND used_at IS NULL",
        )
        .bind(login)
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        for (id, hash) in rows {
            if crate::control::verify_secret(&code, &hash)? {
                let spent = sqlx::query(
                    "UPDATE recovery_codes SET used_at = ? WHERE id = ? AND used_at IS NULL",
                )
                .bind(Utc::now().to_rfc3339())
                .bind(id)
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected();
                return Ok(spent == 1);
            }
        }
        Ok(false)
    }

    /// Forget `login`'s second factor (a lost phone): TOTP secret and recovery codes; the next sign-in
    /// enrols again. Audited.
    pub async fn reset_second_factor(&self, login: &str, by: &str) -> Result<()> {
        self.require(login).await?;
        self.write_totp_secret(login, None).await?;
        sqlx::query("DELETE FROM recovery_codes WHERE login = ?")
            .bind(login)
            .execute(self.pool())
            .await
            .map_err(db)?;
        self.audit_event(
            by,
            crate::audit::action::USERS_SECOND_FACTOR_RESET,
            login,
            serde_json::json!({}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::NewUser;
    use crate::session::Role;

    #[tokio::test]
    async fn secrets_are_sealed_steps_accepted_once_and_recovery_codes_spent_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = ControlPlane::open(&dir.path().join("control.sqlite"), None)
            .await
            .expect("control");
        for login in ["olga", "anna"] {
            control
                .add_user(
                    NewUser {
                        login: login.into(),
                        role: Role::Owner,
                        staff_id: None,
                        team: None,
                    },
                    "test",
                )
                .await
                .expect("user");
        }
        let store = crate::LakeStore::local(&dir.path().join("lake")).expect("store");
        let key =
            crate::MasterKeySource::create_key_file(&dir.path().join("master.key")).expect("key");
        let lake = crate::Lake::open_or_create(store, &key)
            .await
            .expect("lake");

        let secret = b"12345678901234567890";
        let sealed = lake.seal_user_secret(&totp_aad("olga"), secret).await;
        assert!(!sealed.windows(secret.len()).any(|w| w == secret), "sealed");
        control
            .set_totp_secret("olga", &sealed, "olga")
            .await
            .expect("enrol");
        let stored = control
            .totp_secret("olga")
            .await
            .expect("read")
            .expect("enrolled");
        let opened = lake
            .open_user_secret(&totp_aad("olga"), &stored)
            .await
            .expect("opens for olga");
        assert_eq!(opened.as_slice(), secret);
        // Bound to the login: copied onto another user's row it does not open.
        assert!(
            lake.open_user_secret(&totp_aad("anna"), &stored)
                .await
                .is_none()
        );
        assert_eq!(control.totp_secret("anna").await.expect("read"), None);

        // Each step once, and never an older one.
        assert!(control.accept_totp_step("olga", 100).await.expect("accept"));
        assert!(!control.accept_totp_step("olga", 100).await.expect("replay"));
        assert!(!control.accept_totp_step("olga", 99).await.expect("older"));
        assert!(control.accept_totp_step("olga", 101).await.expect("next"));
        assert_eq!(
            control.last_totp_step("olga").await.expect("last"),
            Some(101)
        );
        assert!(
            !control
                .accept_totp_step("anna", 5)
                .await
                .expect("not enrolled")
        );

        // Recovery codes: ten, each once; new ones replace the old.
        let codes = control
            .new_recovery_codes("olga", "olga")
            .await
            .expect("codes");
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(!format!("{:?}", codes[0]).contains(codes[0].expose()));
        assert!(
            control
                .use_recovery_code("olga", codes[3].expose())
                .await
                .expect("use")
        );
        assert!(
            !control
                .use_recovery_code("olga", codes[3].expose())
                .await
                .expect("reuse")
        );
        assert!(
            !control
                .use_recovery_code("anna", codes[4].expose())
                .await
                .expect("other user")
        );
        let fresh = control
            .new_recovery_codes("olga", "olga")
            .await
            .expect("codes");
        assert!(
            !control
                .use_recovery_code("olga", codes[4].expose())
                .await
                .expect("replaced")
        );
        assert!(
            control
                .use_recovery_code("olga", fresh[0].expose())
                .await
                .expect("new")
        );

        // A lost phone: everything forgotten.
        control
            .reset_second_factor("olga", "owner")
            .await
            .expect("reset");
        assert_eq!(control.totp_secret("olga").await.expect("read"), None);
        assert!(
            !control
                .use_recovery_code("olga", fresh[1].expose())
                .await
                .expect("gone")
        );
    }
}
