//! The audit log: an append-only, hash-chained file of JSON lines with ed25519-signed checkpoints.
//!
//! `audit/audit.jsonl` in the Kartoteka home holds one entry per line:
//! `{seq, ts, actor, action, target, details, outcome, prev_hash, hash}`, where
//! `hash = sha256(prev_hash ‖ "\n" ‖ the entry's JSON without its hash)`. Changing, removing or
//! reordering any entry breaks the chain from that entry on. Removing entries from the *end* leaves a
//! valid chain, so every N entries, every T minutes and at the end of every CLI command a checkpoint
//! `{seq, hash, ts, signature}` signed with the log's ed25519 key is appended to
//! `audit/checkpoints.jsonl` and to every configured sink (a file path or an HTTP webhook the
//! administrator does not control). Verification needs only the public key: it recomputes the chain,
//! checks each checkpoint's signature and that the log still holds the checkpointed entry.
//!
//! One writer at a time: an OS lock (`audit/audit.lock`) serialises CLI, server and jobs, so the chain
//! never forks and lines are never torn. Every entry is fsynced before `append` returns.
//! Nothing secret enters an entry: callers pass logins, roles, query text and counts, never a password
//! or key.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Name of the audit log table in query sessions.
pub const AUDIT_TABLE: &str = "audit_log";
const LOG_FILE: &str = "audit.jsonl";
const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
const LOCK_FILE: &str = "audit.lock";
const SIGNING_KEY_FILE: &str = "checkpoint.key";
/// File holding the checkpoint public key (hex), to be copied wherever checkpoints are verified.
pub const PUBLIC_KEY_FILE: &str = "checkpoint.pub";
/// Every action the audit log records, named once (the owner queries them; security metrics filter
/// on them).
pub mod action {
    /// A statement, answered or refused.
    pub const QUERY: &str = "query";
    /// A session refused before any statement.
    pub const SESSION: &str = "session";
    /// An ingest run.
    pub const INGEST: &str = "ingest";
    /// A compaction.
    pub const COMPACT: &str = "compact";
    /// A garbage collection.
    pub const GC: &str = "gc";
    /// An erasure on request.
    pub const ERASE: &str = "erase";
    /// One report copy rendered (or failed).
    pub const REPORT_RUN: &str = "report.run";
    /// One delivery of a report copy.
    pub const REPORT_DELIVER: &str = "report.deliver";
    /// A report spec that cannot be scheduled.
    pub const REPORT_INVALID: &str = "report.invalid";
    /// `kartoteka serve` started its scheduler.
    pub const SERVE_START: &str = "serve.start";
    /// `kartoteka serve` stopped.
    pub const SERVE_STOP: &str = "serve.stop";
    /// The master key re-wrapped (or an interrupted rotation finished).
    pub const KEYS_ROTATE_MASTER: &str = "keys.rotate-master";
    /// New data keys, every file rewritten.
    pub const KEYS_ROTATE_DATA: &str = "keys.rotate-data";
    /// A user created.
    pub const USERS_ADD: &str = "users.add";
    /// A user's password reset.
    pub const USERS_RESET: &str = "users.reset";
    /// A user's role changed.
    pub const USERS_SET_ROLE: &str = "users.set-role";
    /// A user disabled.
    pub const USERS_SET_STATUS: &str = "users.set-status";
    /// A user's e-mail address set.
    pub const USERS_SET_EMAIL: &str = "users.set-email";
    /// A snapshot committed (with its authentication code).
    pub const LAKE_COMMIT: &str = "lake.commit";
    /// A user removed for good.
    pub const USERS_REMOVE: &str = "users.remove";
    /// A user chose a new password (nothing of it is recorded).
    pub const USERS_SET_PASSWORD: &str = "users.set-password";
    /// A sign-in attempt on the web door (each step: password, new password, second factor).
    pub const WEB_SIGN_IN: &str = "web.sign-in";
    /// A signed-in user ended their session.
    pub const WEB_SIGN_OUT: &str = "web.sign-out";
    /// A page of the web door was opened (who, which, over which snapshot).
    pub const WEB_VIEW: &str = "web.view";
    /// A table was downloaded from the web door as CSV.
    pub const WEB_EXPORT: &str = "web.export";
    /// Every web session of a user ended.
    pub const USERS_REVOKE_SESSIONS: &str = "users.revoke-sessions";
    /// A TOTP secret enrolled (never the secret).
    pub const USERS_TOTP_ENROL: &str = "users.totp-enrol";
    /// New recovery codes issued (never the codes).
    pub const USERS_RECOVERY_CODES: &str = "users.recovery-codes";
    /// A user's second factor forgotten (a lost phone).
    pub const USERS_SECOND_FACTOR_RESET: &str = "users.second-factor-reset";
    /// A new, empty home created by `kartoteka init`.
    pub const HOME_INIT: &str = "home.init";
    /// The owner accepted the newest snapshot after a restore (or sealed a legacy lake).
    pub const LAKE_TRUST: &str = "lake.trust";
    /// A torn last line of the log removed.
    pub const AUDIT_REPAIR: &str = "audit.repair";
}

/// Action of the entry recording a repaired torn tail.
pub const REPAIR_ACTION: &str = action::AUDIT_REPAIR;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused by a policy, a limit or a rule.
    Denied,
    /// Failed.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// What a caller records.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who acted (a login, or `owner` for the local CLI).
    pub actor: String,
    /// What was done (`query`, `users.add`, `keys.rotate`, `ingest`, …).
    pub action: String,
    /// What it was done to (a login, a table, `lake`).
    pub target: String,
    /// Details: no secret ever.
    pub details: serde_json::Value,
    /// How it ended.
    pub outcome: Outcome,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1-based, dense.
    pub seq: u64,
    /// UTC, microseconds, RFC 3339.
    pub ts: String,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Details.
    pub details: serde_json::Value,
    /// `ok`, `denied` or `error`.
    pub outcome: Outcome,
    /// Hash of the previous entry (64 zeros for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: &'a str,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    details: &'a serde_json::Value,
    outcome: Outcome,
    prev_hash: &'a str,
}

impl Entry {
    fn compute_hash(&self) -> String {
        let body = Body {
            seq: self.seq,
            ts: &self.ts,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            details: &self.details,
            outcome: self.outcome,
            prev_hash: &self.prev_hash,
        };
        let json = serde_json::to_string(&body).expect("audit entry serialises");
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(json.as_bytes());
        hex::encode(h.finalize())
    }
}

/// A signed statement "the log's entry `seq` has hash `hash`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the last entry covered.
    pub seq: u64,
    /// That entry's hash.
    pub hash: String,
    /// When the checkpoint was made.
    pub ts: String,
    /// ed25519 signature (hex) over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    fn message(seq: u64, hash: &str, ts: &str) -> String {
        format!("kartoteka audit checkpoint\n{seq}\n{hash}\n{ts}")
    }

    /// Check the signature with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        key.verify(
            Self::message(self.seq, &self.hash, &self.ts).as_bytes(),
            &sig,
        )
        .is_ok()
    }
}

/// Ships a checkpoint line somewhere the administrator cannot reach. The engine speaks no HTTP:
/// webhooks are shipped by an implementation the composition root provides
/// (`kartoteka_reports::http::WebhookSink`).
pub trait CheckpointShipper: Send + Sync + fmt::Debug {
    /// Deliver one checkpoint (a JSON line).
    fn ship(&self, line: &str) -> std::io::Result<()>;
    /// Where it goes, for messages.
    fn describe(&self) -> String;
}

/// A second location for checkpoints.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Appended to a file (e.g. on a mount the administrator cannot write).
    File(PathBuf),
    /// Shipped elsewhere (a webhook).
    Remote(Arc<dyn CheckpointShipper>),
}

impl Sink {
    fn ship(&self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::File(path) => {
                let mut f = private_append(path)?;
                // A checkpoint cut short (crash, full disk) is not one: drop it before appending,
                // so it cannot turn into a permanent false alarm.
                cut_torn_tail(&mut f)?;
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()
            }
            Sink::Remote(shipper) => shipper.ship(line),
        }
    }

    /// Where it goes, for messages.
    pub fn describe(&self) -> String {
        match self {
            Sink::File(path) => path.display().to_string(),
            Sink::Remote(shipper) => shipper.describe(),
        }
    }
}

/// When checkpoints are made and where they go.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// A checkpoint after this many entries…
    pub checkpoint_every: u64,
    /// …or when the last one is this old.
    pub checkpoint_interval: Duration,
    /// Second locations for checkpoints.
    pub sinks: Vec<Sink>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(600),
            sinks: Vec::new(),
        }
    }
}

/// The audit log of one Kartoteka home.
pub struct AuditLog {
    dir: PathBuf,
    signing: SigningKey,
    config: AuditConfig,
    /// Serialises this process's threads; the OS lock serialises processes.
    local: Mutex<()>,
    /// Entries this process appended since its last checkpoint.
    unsigned: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ts() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    Error::io(action, path)
}

/// The last complete line of `file` (`None` for an empty file), read backwards in chunks.
fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let start = end.saturating_sub(8192);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        // Skip the final newline, find the one before it.
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(pos) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(String::from_utf8_lossy(&body[pos + 1..]).into_owned()));
        }
        if start == 0 {
            return Ok(Some(String::from_utf8_lossy(body).into_owned()));
        }
        end = start;
    }
}

/// Open `path` for reading and appending, created readable by its owner only.
fn private_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).read(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// A line cut short at the end of an append-only file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TornTail {
    /// Where it started.
    offset: u64,
    /// Its bytes' SHA-256.
    sha256: String,
    /// How many bytes.
    bytes: u64,
}

/// When `file` does not end with a newline, its last line was never completed (a crash or a full
/// disk during an append): truncate it away, fsynced, and say what it was.
fn cut_torn_tail(file: &mut File) -> std::io::Result<Option<TornTail>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    // Find the start of the torn line: just after the previous newline, or the file's start.
    let mut end = len;
    let mut start_of_tail = 0;
    'search: while end > 0 {
        let start = end.saturating_sub(8192);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(pos) = chunk.iter().rposition(|&b| b == b'\n') {
            start_of_tail = start + pos as u64 + 1;
            break 'search;
        }
        end = start;
    }
    let mut torn = vec![0u8; (len - start_of_tail) as usize];
    file.seek(SeekFrom::Start(start_of_tail))?;
    file.read_exact(&mut torn)?;
    file.set_len(start_of_tail)?;
    file.sync_all()?;
    Ok(Some(TornTail {
        offset: start_of_tail,
        sha256: hex::encode(Sha256::digest(&torn)),
        bytes: torn.len() as u64,
    }))
}

impl AuditLog {
    /// Open (creating on first use) the audit log in `dir`, with its checkpoint signing key.
    pub fn open(dir: &Path, config: AuditConfig) -> Result<AuditLog> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("cannot create audit directory", dir))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("cannot restrict", dir))?;
            }
        }
        let key_path = dir.join(SIGNING_KEY_FILE);
        let has_history = [LOG_FILE, CHECKPOINT_FILE]
            .iter()
            .any(|f| std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0));
        if !key_path.exists() && has_history {
            // A new key would sign checkpoints that contradict every earlier one: never replace it
            // silently.
            return Err(Error::Audit(format!(
                "the checkpoint signing key {} is missing, but the log in {} already has entries. \
                 Restore the key file from a backup. If it is lost for good, move the directory {} \
                 aside (its {PUBLIC_KEY_FILE} still verifies it with `kartoteka audit verify --log \
                 … --checkpoints … --public-key …`); a new log with a new key then starts",
                key_path.display(),
                dir.display(),
                dir.display()
            )));
        }
        let signing = if key_path.exists() {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key_path).map_err(io("cannot read", &key_path))?,
            );
            let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
                Error::Audit(format!("{} is not a hex ed25519 key", key_path.display()))
            })?);
            let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                Error::Audit(format!("{} is not a 32-byte key", key_path.display()))
            })?;
            SigningKey::from_bytes(&arr)
        } else {
            use rand::RngCore;
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(seed.as_mut());
            let key = SigningKey::from_bytes(&seed);
            write_private(&key_path, &hex::encode(seed.as_ref()))?;
            let pub_path = dir.join(PUBLIC_KEY_FILE);
            std::fs::write(
                &pub_path,
                format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
            )
            .map_err(io("cannot write", &pub_path))?;
            key
        };
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            signing,
            config,
            local: Mutex::new(()),
            unsigned: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Path of the log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Path of the local checkpoint file.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    /// The checkpoint verification key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    fn lock(&self) -> Result<(std::sync::MutexGuard<'_, ()>, File)> {
        let guard = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        f.lock().map_err(io("cannot lock", &path))?;
        Ok((guard, f))
    }

    /// Append one entry (fsynced), and a checkpoint when one is due.
    pub fn append(&self, event: Event) -> Result<Entry> {
        let (_guard, _lock) = self.lock()?;
        let path = self.log_path();
        let mut file = private_append(&path).map_err(io("cannot open", &path))?;
        // A line cut short by a crash or a full disk was never an entry: it is cut away, its hash
        // kept in a repair entry that continues the chain.
        if let Some(torn) = cut_torn_tail(&mut file).map_err(io("cannot repair", &path))? {
            self.append_line(
                &mut file,
                &path,
                Event {
                    actor: "kartoteka".into(),
                    action: REPAIR_ACTION.into(),
                    target: "audit log".into(),
                    details: serde_json::json!({
                        "torn_bytes": torn.bytes,
                        "torn_sha256": torn.sha256,
                        "offset": torn.offset,
                        "reason": "an append was cut short (crash or full disk); the incomplete line was removed",
                    }),
                    outcome: Outcome::Ok,
                },
            )?;
        }
        let entry = self.append_line(&mut file, &path, event)?;
        if self.checkpoint_due(entry.seq)? {
            self.write_checkpoint(entry.seq, &entry.hash)?;
        }
        Ok(entry)
    }

    fn append_line(&self, file: &mut File, path: &Path, event: Event) -> Result<Entry> {
        let (seq, prev_hash) = match last_line(file).map_err(io("cannot read", path))? {
            None => (1, GENESIS.to_string()),
            Some(line) => {
                let last: Entry = serde_json::from_str(&line).map_err(|e| {
                    Error::Audit(format!(
                        "the last entry of {} is damaged ({e}); run `kartoteka audit verify`",
                        path.display()
                    ))
                })?;
                (last.seq + 1, last.hash)
            }
        };
        let mut entry = Entry {
            seq,
            ts: now_ts(),
            actor: event.actor,
            action: event.action,
            target: event.target,
            details: event.details,
            outcome: event.outcome,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let mut line = serde_json::to_string(&entry).expect("audit entry serialises");
        line.push('\n');
        file.write_all(line.as_bytes())
            .map_err(io("cannot append to", path))?;
        file.sync_data().map_err(io("cannot sync", path))?;
        self.unsigned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(entry)
    }

    fn last_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let path = self.checkpoint_path();
        let Ok(mut f) = File::open(&path) else {
            return Ok(None);
        };
        match last_line(&mut f).map_err(io("cannot read", &path))? {
            None => Ok(None),
            Some(line) => Ok(serde_json::from_str(&line).ok()),
        }
    }

    fn checkpoint_due(&self, seq: u64) -> Result<bool> {
        let Some(last) = self.last_checkpoint()? else {
            return Ok(seq >= self.config.checkpoint_every);
        };
        let age = DateTime::parse_from_rfc3339(&last.ts)
            .map(|t| Utc::now().signed_duration_since(t))
            .ok()
            .and_then(|d| d.to_std().ok())
            .unwrap_or(Duration::MAX);
        Ok(
            seq >= last.seq + self.config.checkpoint_every
                || age >= self.config.checkpoint_interval,
        )
    }

    fn write_checkpoint(&self, seq: u64, hash: &str) -> Result<Checkpoint> {
        let ts = now_ts();
        let signature = self
            .signing
            .sign(Checkpoint::message(seq, hash, &ts).as_bytes());
        let cp = Checkpoint {
            seq,
            hash: hash.to_string(),
            ts,
            signature: hex::encode(signature.to_bytes()),
        };
        let line = serde_json::to_string(&cp).expect("checkpoint serialises");
        let local = Sink::File(self.checkpoint_path());
        local
            .ship(&line)
            .map_err(io("cannot write checkpoint to", &self.checkpoint_path()))?;
        for sink in &self.config.sinks {
            // The local checkpoint is written; a sink that is down must not stop the work being
            // audited. It is reported, and the next checkpoint covers everything before it.
            if let Err(e) = sink.ship(&line) {
                tracing::warn!(sink = %sink.describe(), error = %e, "audit checkpoint not shipped");
                eprintln!(
                    "warning: audit checkpoint {seq} not shipped to {}: {e}",
                    sink.describe()
                );
            }
        }
        self.unsigned.store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(cp)
    }

    /// Sign a checkpoint of the newest entry now, if this process appended entries since its last
    /// one. The CLI calls it before it exits, so the log's end is always covered.
    pub fn checkpoint_now(&self) -> Result<Option<Checkpoint>> {
        if self.unsigned.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return Ok(None);
        }
        let (_guard, _lock) = self.lock()?;
        let path = self.log_path();
        let mut file = File::open(&path).map_err(io("cannot open", &path))?;
        if std::fs::read(&path)
            .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
            .unwrap_or(false)
        {
            // A torn last line (this process's append failed): the next append repairs it and the
            // checkpoint after it covers everything.
            return Ok(None);
        }
        let Some(line) = last_line(&mut file).map_err(io("cannot read", &path))? else {
            return Ok(None);
        };
        let last: Entry = serde_json::from_str(&line)
            .map_err(|e| Error::Audit(format!("the last audit entry is damaged: {e}")))?;
        self.write_checkpoint(last.seq, &last.hash).map(Some)
    }

    /// All entries, in order (for `audit tail` and the audit table). Damaged lines are an error.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let path = self.log_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        // A torn last line (no newline) was never an entry.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    Error::Audit(format!(
                        "audit line {} is damaged ({e}); run `kartoteka audit verify`",
                        i + 1
                    ))
                })
            })
            .collect()
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io("cannot create", path))?;
    f.write_all(text.as_bytes())
        .map_err(io("cannot write", path))?;
    f.sync_all().map_err(io("cannot sync", path))
}

/// Read a public key file (hex).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(io("cannot read", path))?;
    let bytes = hex::decode(text.trim())
        .map_err(|_| Error::Audit(format!("{} is not a hex public key", path.display())))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::Audit(format!("{} is not a 32-byte key", path.display())))?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|_| Error::Audit(format!("{} is not an ed25519 public key", path.display())))
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Entries read and found intact (up to the first problem).
    pub entries: u64,
    /// Checkpoints whose signature and entry matched.
    pub checkpoints: u64,
    /// The newest checkpointed sequence number.
    pub newest_checkpoint: Option<u64>,
    /// The first problem: (line of the log or checkpoint file, explanation).
    pub broken: Option<String>,
    /// Repairs of torn tails recorded in the chain (entry, bytes removed, their hash).
    pub repairs: Vec<String>,
    /// Things worth knowing that are not tampering (a torn last line not yet repaired).
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Verify the log at `log` against the checkpoint files `checkpoints` with `key` alone.
pub fn verify(log: &Path, checkpoints: &[PathBuf], key: &VerifyingKey) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let bytes = match std::fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("cannot read", log)(e)),
    };
    let mut hashes: Vec<String> = Vec::new();
    let mut prev = GENESIS.to_string();
    // A last line without its newline was cut short (crash, full disk): it was never an entry. The
    // next append removes it and records the repair; until then it is reported, not counted.
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &bytes[..0],
    };
    if complete.len() < bytes.len() {
        report.notes.push(format!(
            "{}: the last line is incomplete ({} bytes: an append cut short by a crash or a full \
             disk); it is not an entry, and the next audited command removes it and records the repair",
            log.display(),
            bytes.len() - complete.len()
        ));
    }
    // Lines end with a newline; without the final one, an empty log has no lines at all.
    let body = complete.strip_suffix(b"\n").unwrap_or(complete);
    let lines = (!body.is_empty()).then(|| body.split(|&b| b == b'\n'));
    for (i, raw) in lines.into_iter().flatten().enumerate() {
        if report.broken.is_some() {
            break;
        }
        let line = i + 1;
        let expected_seq = hashes.len() as u64 + 1;
        let entry: Entry = match std::str::from_utf8(raw)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(t).map_err(|e| e.to_string()))
        {
            Ok(e) => e,
            Err(e) => {
                report.broken = Some(format!(
                    "line {line} (entry {expected_seq}): unreadable: {e}"
                ));
                break;
            }
        };
        let problem = if entry.seq != expected_seq {
            Some(format!(
                "has seq {} where {expected_seq} belongs: entries were removed or reordered",
                entry.seq
            ))
        } else if entry.prev_hash != prev {
            Some(
                "does not link to the entry before it: an entry before it was changed or removed"
                    .to_string(),
            )
        } else if entry.hash != entry.compute_hash() {
            Some("its content does not match its hash: it was edited".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            report.broken = Some(format!("line {line} (entry {expected_seq}) {p}"));
            break;
        }
        if entry.action == REPAIR_ACTION {
            report.repairs.push(format!(
                "entry {} ({}): removed a torn line of {} bytes (sha256 {})",
                entry.seq,
                entry.ts,
                entry.details["torn_bytes"],
                entry.details["torn_sha256"].as_str().unwrap_or("?")
            ));
        }
        prev = entry.hash.clone();
        hashes.push(entry.hash);
        report.entries += 1;
    }
    for path in checkpoints {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("cannot read", path)(e)),
        };
        let torn = !text.is_empty() && !text.ends_with('\n');
        let count = text.lines().count();
        for (i, l) in text.lines().enumerate() {
            let at = format!("{} line {}", path.display(), i + 1);
            if torn && i + 1 == count {
                report.notes.push(format!(
                    "{at}: an incomplete checkpoint (a write cut short) is ignored; the next \
                     checkpoint replaces it"
                ));
                continue;
            }
            let cp: Checkpoint = match serde_json::from_str(l) {
                Ok(c) => c,
                Err(e) => {
                    report
                        .broken
                        .get_or_insert(format!("{at}: unreadable checkpoint: {e}"));
                    continue;
                }
            };
            if !cp.verify(key) {
                report
                    .broken
                    .get_or_insert(format!("{at}: checkpoint signature is invalid"));
                continue;
            }
            report.newest_checkpoint = report.newest_checkpoint.max(Some(cp.seq));
            match hashes.get(cp.seq.saturating_sub(1) as usize) {
                Some(h) if *h == cp.hash && cp.seq > 0 => report.checkpoints += 1,
                Some(_) => {
                    report.broken.get_or_insert(format!(
                        "{at}: the signed checkpoint of entry {} does not match the log: the log was rewritten",
                        cp.seq
                    ));
                }
                None => {
                    report.broken.get_or_insert(format!(
                        "{at}: a signed checkpoint covers entry {} but the log (intact) ends at entry {}: the log was truncated",
                        cp.seq,
                        hashes.len()
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// The audit log as a read-only table (`audit_log`), optionally restricted to one actor's entries.
pub(crate) struct AuditTable {
    log: Arc<AuditLog>,
    actor: Option<String>,
    schema: SchemaRef,
}

impl fmt::Debug for AuditTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditTable")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl AuditTable {
    pub(crate) fn new(log: Arc<AuditLog>, actor: Option<String>) -> AuditTable {
        let text = |n: &str| Field::new(n, DataType::Utf8, false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            text("actor"),
            text("action"),
            text("target"),
            text("outcome"),
            text("details"),
            text("prev_hash"),
            text("hash"),
        ]));
        AuditTable { log, actor, schema }
    }

    fn batch(&self) -> Result<RecordBatch> {
        let entries: Vec<Entry> = self
            .log
            .entries()?
            .into_iter()
            .filter(|e| self.actor.as_ref().is_none_or(|a| *a == e.actor))
            .collect();
        let strings = |f: &dyn Fn(&Entry) -> String| -> ArrayRef {
            Arc::new(entries.iter().map(|e| Some(f(e))).collect::<StringArray>())
        };
        let ts: TimestampMicrosecondArray = entries
            .iter()
            .map(|e| crate::time::parse_timestamp(&e.ts).map(|t| t.timestamp_micros()))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        Ok(RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(entries.iter().map(|e| e.seq as i64).collect::<Int64Array>()),
                Arc::new(ts),
                strings(&|e| e.actor.clone()),
                strings(&|e| e.action.clone()),
                strings(&|e| e.target.clone()),
                strings(&|e| e.outcome.as_str().to_string()),
                strings(&|e| e.details.to_string()),
                strings(&|e| e.prev_hash.clone()),
                strings(&|e| e.hash.clone()),
            ],
        )?)
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch = self
            .batch()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        Event {
            actor: format!("user{}", i % 3),
            action: "query".into(),
            target: "lake".into(),
            details: serde_json::json!({ "sql": format!("SELECT {i} — «досье»"), "rows": i }),
            outcome: if i.is_multiple_of(4) {
                Outcome::Denied
            } else {
                Outcome::Ok
            },
        }
    }

    /// A log of 7 entries with checkpoints every 3 entries and one at the end.
    fn sample() -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(
            dir.path(),
            AuditConfig {
                checkpoint_every: 3,
                checkpoint_interval: Duration::from_secs(3600),
                sinks: vec![Sink::File(dir.path().join("shipped.jsonl"))],
            },
        )
        .expect("open");
        for i in 1..=7 {
            log.append(event(i)).expect("append");
        }
        log.checkpoint_now().expect("checkpoint");
        (dir, log)
    }

    fn check(log: &AuditLog) -> VerifyReport {
        verify(&log.log_path(), &[log.checkpoint_path()], &log.public_key()).expect("verify runs")
    }

    #[test]
    fn an_untouched_log_verifies_with_the_public_key_alone() {
        let (dir, log) = sample();
        let report = check(&log);
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.entries, 7);
        assert_eq!(report.newest_checkpoint, Some(7));
        assert_eq!(report.checkpoints, 3, "after 3, 6 and at the end");
        // Elsewhere, with only the public key file and copies of the log and the shipped checkpoints.
        let other = tempfile::tempdir().expect("tempdir");
        for f in [LOG_FILE, PUBLIC_KEY_FILE, "shipped.jsonl"] {
            std::fs::copy(dir.path().join(f), other.path().join(f)).expect("copy");
        }
        let key = read_public_key(&other.path().join(PUBLIC_KEY_FILE)).expect("key");
        let report = verify(
            &other.path().join(LOG_FILE),
            &[other.path().join("shipped.jsonl")],
            &key,
        )
        .expect("verify");
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.checkpoints, 3);
        // A different key does not verify these checkpoints.
        let stranger = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let report = verify(&log.log_path(), &[log.checkpoint_path()], &stranger).expect("verify");
        assert!(
            report
                .broken
                .expect("broken")
                .contains("signature is invalid")
        );
    }

    #[test]
    fn flipping_any_byte_of_the_log_is_detected() {
        let (_dir, log) = sample();
        let original = std::fs::read(log.log_path()).expect("read");
        for i in 0..original.len() {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            std::fs::write(log.log_path(), &bytes).expect("write");
            let report = check(&log);
            assert!(
                !report.ok(),
                "flipping byte {i} ({:?}) went unnoticed",
                original[i] as char
            );
        }
        std::fs::write(log.log_path(), &original).expect("restore");
        assert!(check(&log).ok());
    }

    #[test]
    fn deleting_reordering_or_truncating_entries_is_detected() {
        let (_dir, log) = sample();
        let original = std::fs::read_to_string(log.log_path()).expect("read");
        let lines: Vec<&str> = original.lines().collect();
        let write = |ls: &[&str]| {
            let mut text = ls.join("\n");
            if !ls.is_empty() {
                text.push('\n');
            }
            std::fs::write(log.log_path(), text).expect("write");
        };
        for i in 0..lines.len() {
            let mut ls = lines.clone();
            ls.remove(i);
            write(&ls);
            let report = check(&log);
            assert!(!report.ok(), "deleting entry {} went unnoticed", i + 1);
        }
        for i in 0..lines.len() - 1 {
            let mut ls = lines.clone();
            ls.swap(i, i + 1);
            write(&ls);
            let report = check(&log);
            let broken = report.broken.expect("swap detected");
            assert!(broken.contains(&format!("line {}", i + 1)), "{broken}");
        }
        for keep in 0..lines.len() {
            write(&lines[..keep]);
            let report = check(&log);
            assert!(
                report
                    .broken
                    .as_deref()
                    .is_some_and(|b| b.contains("truncated")),
                "truncating to {keep} entries went unnoticed: {report:?}"
            );
        }
        // A torn last line is not an entry: the ones before it count, and since a signed checkpoint
        // covers the torn one, its loss is a truncation.
        std::fs::write(log.log_path(), &original[..original.len() - 10]).expect("write");
        let report = check(&log);
        assert_eq!(report.entries, lines.len() as u64 - 1, "{report:?}");
        assert!(
            report.notes.iter().any(|n| n.contains("incomplete")),
            "{report:?}"
        );
        assert!(
            report
                .broken
                .as_deref()
                .is_some_and(|b| b.contains("truncated")),
            "{report:?}"
        );
        // The first broken entry is named: editing entry 5's details.
        let edited = original.replacen("SELECT 5", "SELECT 6", 1);
        std::fs::write(log.log_path(), edited).expect("write");
        let broken = check(&log).broken.expect("edit detected");
        assert!(
            broken.contains("entry 5") && broken.contains("edited"),
            "{broken}"
        );
    }

    #[test]
    fn appends_continue_the_chain_across_opens() {
        let (dir, log) = sample();
        drop(log);
        let log = AuditLog::open(dir.path(), AuditConfig::default()).expect("reopen");
        let e = log.append(event(8)).expect("append");
        assert_eq!(e.seq, 8);
        log.checkpoint_now().expect("checkpoint");
        assert!(check(&log).ok());
        assert_eq!(log.entries().expect("entries").len(), 8);
    }
}

#[cfg(test)]
mod sink_tests {
    use super::*;

    /// A remote sink that records what it was sent, or refuses everything.
    #[derive(Debug, Default)]
    struct Recorder {
        lines: Mutex<Vec<String>>,
        refuse: bool,
    }

    impl CheckpointShipper for Recorder {
        fn ship(&self, line: &str) -> std::io::Result<()> {
            if self.refuse {
                return Err(std::io::Error::other("answered 500"));
            }
            self.lines.lock().expect("lines").push(line.to_string());
            Ok(())
        }

        fn describe(&self) -> String {
            "recorder".into()
        }
    }

    fn log_shipping_to(recorder: Arc<Recorder>, every: u64) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(
            dir.path(),
            AuditConfig {
                checkpoint_every: every,
                checkpoint_interval: Duration::from_secs(3600),
                sinks: vec![Sink::Remote(recorder)],
            },
        )
        .expect("open");
        (dir, log)
    }

    fn entry(i: usize) -> Event {
        Event {
            actor: "owner".into(),
            action: "query".into(),
            target: "lake".into(),
            details: serde_json::json!({ "i": i }),
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn checkpoints_reach_a_remote_sink_and_verify_there() {
        let recorder = Arc::new(Recorder::default());
        let (_dir, log) = log_shipping_to(recorder.clone(), 1000);
        for i in 0..3 {
            log.append(entry(i)).expect("append");
        }
        let cp = log
            .checkpoint_now()
            .expect("checkpoint")
            .expect("one was due");
        let lines = recorder.lines.lock().expect("lines").clone();
        assert_eq!(lines.len(), 1);
        let received: Checkpoint = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(received, cp);
        assert_eq!(received.seq, 3);
        assert!(received.verify(&log.public_key()));
        // Nothing new since: no second checkpoint.
        assert!(log.checkpoint_now().expect("no-op").is_none());
    }

    #[test]
    fn a_failing_remote_sink_does_not_stop_the_audited_work() {
        let recorder = Arc::new(Recorder {
            refuse: true,
            ..Recorder::default()
        });
        let (_dir, log) = log_shipping_to(recorder, 1);
        log.append(entry(0))
            .expect("the entry is written although the sink refused the checkpoint");
        let report =
            verify(&log.log_path(), &[log.checkpoint_path()], &log.public_key()).expect("verify");
        assert!(report.ok() && report.checkpoints == 1, "{report:?}");
    }
}
