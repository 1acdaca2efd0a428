//! The Kartoteka home: one directory holding the config, the lake, the key file, the control
//! database (`control.sqlite`: users) and the audit log (`audit/`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kartoteka_engine::audit::{AuditConfig, AuditLog, Sink};
use kartoteka_engine::control::ControlPlane;
use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Name of the config file inside the home.
pub(crate) const CONFIG_FILE: &str = "kartoteka.toml";
/// Name of the demo key file inside the home.
pub(crate) const KEY_FILE: &str = "master.key";
/// The audit log's directory inside the home.
pub(crate) const AUDIT_DIR: &str = "audit";
/// The control-plane database inside the home.
pub(crate) const CONTROL_FILE: &str = "control.sqlite";

/// The audit log this process opened, signed off when the command ends.
pub(crate) static OPEN_AUDIT: std::sync::OnceLock<Arc<AuditLog>> = std::sync::OnceLock::new();

/// The config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// A home made by `kartoteka demo`: its CRM is generated, its users' passwords were printed.
    /// Loading another source into it is refused unless the demo is replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) demo: bool,
    /// Lake settings.
    #[serde(default)]
    pub(crate) lake: LakeConfig,
    /// Query limits.
    #[serde(default)]
    pub(crate) query: QueryConfig,
    /// Source used by `kartoteka ingest` without `--source`.
    pub(crate) default_source: Option<String>,
    /// Sources by name.
    #[serde(default)]
    pub(crate) sources: std::collections::BTreeMap<String, SourceConfig>,
    /// Audit checkpoints.
    #[serde(default)]
    pub(crate) audit: AuditSettings,
    /// Ingest choices.
    #[serde(default)]
    pub(crate) ingest: IngestSettings,
    /// Report specs and the archive.
    #[serde(default)]
    pub(crate) reports: ReportsConfig,
    /// The web server `kartoteka serve` starts (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) web: Option<WebConfig>,
}

/// `[web]`: where `kartoteka serve` listens, and with which certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebConfig {
    /// Address and port (`127.0.0.1:8443`; port 0 picks a free one).
    pub(crate) listen: String,
    /// Certificate chain (PEM) and its key; without them a local CA and a certificate it signed are
    /// generated under `tls/` on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
    /// Host names and addresses a generated certificate is for.
    pub(crate) names: Vec<String>,
    /// Plain HTTP instead of TLS: refused unless `listen` is a loopback address.
    pub(crate) plain_http: bool,
    /// A second factor (TOTP) for every role; owner and admin need one whatever this says.
    pub(crate) second_factor_for_all: bool,
    /// A web session without a request for this long ends.
    pub(crate) session_idle_seconds: u64,
    /// A web session ends this long after sign-in, whatever happens.
    pub(crate) session_max_hours: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8443".into(),
            cert: None,
            key: None,
            names: vec!["localhost".into(), "127.0.0.1".into()],
            plain_http: false,
            second_factor_for_all: true,
            session_idle_seconds: 30 * 60,
            session_max_hours: 12,
        }
    }
}

/// Where report specs live and how long rendered copies are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ReportsConfig {
    /// Directory of report specs (`*.toml`), relative to the home unless absolute.
    #[serde(default = "default_reports_dir")]
    pub(crate) dir: PathBuf,
    /// Directory of the sealed archive of rendered copies.
    #[serde(default = "default_archive_dir")]
    pub(crate) archive: PathBuf,
    /// Rendered copies older than this many days are deleted (each recipient's newest stays).
    #[serde(default = "default_retention_days")]
    pub(crate) retention_days: u32,
    /// The SMTP server reports are e-mailed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) smtp: Option<SmtpConfig>,
}

/// `[reports.smtp]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmtpConfig {
    /// Host name.
    pub(crate) host: String,
    /// Port (default 587).
    #[serde(default = "default_smtp_port")]
    pub(crate) port: u16,
    /// `starttls` (default), `tls`, or `none` (a relay on the same machine or network only).
    #[serde(default = "default_smtp_security")]
    pub(crate) security: String,
    /// Sender address.
    pub(crate) from: String,
    /// Login, when the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) username: Option<String>,
    /// Environment variable holding the password (never the password itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password_env: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_security() -> String {
    "starttls".into()
}

impl SmtpConfig {
    /// The server, with the password read from its environment variable.
    pub(crate) fn resolve(&self) -> Result<kartoteka_reports::deliver::Smtp> {
        let credentials = match (&self.username, &self.password_env) {
            (Some(user), Some(var)) => Some((
                user.clone(),
                std::env::var(var).with_context(|| {
                    format!("the SMTP password is read from ${var}, which is not set")
                })?,
            )),
            (Some(_), None) => bail!("[reports.smtp] username needs password_env"),
            (None, _) => None,
        };
        Ok(kartoteka_reports::deliver::Smtp {
            host: self.host.clone(),
            port: self.port,
            security: self.security.clone(),
            from: self.from.clone(),
            credentials,
        })
    }
}

fn default_reports_dir() -> PathBuf {
    "reports".into()
}

fn default_archive_dir() -> PathBuf {
    "archive".into()
}

fn default_retention_days() -> u32 {
    90
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            dir: default_reports_dir(),
            archive: default_archive_dir(),
            retention_days: default_retention_days(),
            smtp: None,
        }
    }
}

/// When audit checkpoints are signed and where they are shipped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditSettings {
    /// Sign a checkpoint after this many entries …
    pub(crate) checkpoint_every: u64,
    /// … or when the last one is this many minutes old (and always when a command ends).
    pub(crate) checkpoint_minutes: u64,
    /// Second locations for checkpoints, out of the administrator's reach: file paths or
    /// `http://` or `https://` webhooks.
    pub(crate) sinks: Vec<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            checkpoint_every: 100,
            checkpoint_minutes: 10,
            sinks: Vec::new(),
        }
    }
}

/// Ingest choices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestSettings {
    /// Store no personal data of clients without recorded consent (152-FZ).
    #[serde(default)]
    pub(crate) refuse_pii_without_consent: bool,
    /// Cron schedule (in `[query] time_zone`) on which `kartoteka serve` compacts tables holding
    /// many small files; ingests also compact when a table passes 32 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) compact_schedule: Option<String>,
}

/// Where the lake lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LakeConfig {
    /// Directory, relative to the home unless absolute.
    pub(crate) path: PathBuf,
    /// Jurisdiction the lake's personal data is kept in (ISO 3166), declared for the privacy report.
    #[serde(default = "default_jurisdiction")]
    pub(crate) jurisdiction: String,
}

fn default_jurisdiction() -> String {
    "RU".into()
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            path: "lake".into(),
            jurisdiction: default_jurisdiction(),
        }
    }
}

/// Query limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QueryConfig {
    /// Memory all running queries may use together, MiB.
    pub(crate) memory_limit_mb: usize,
    /// Wall-clock limit of one statement, seconds.
    pub(crate) timeout_seconds: u64,
    /// Reporting time zone (IANA name): calendar days and months of the metrics, and what a date
    /// parameter means. Default UTC.
    #[serde(default = "default_time_zone")]
    pub(crate) time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_limit_mb: 2048,
            timeout_seconds: 300,
            time_zone: default_time_zone(),
        }
    }
}

/// A CRM database to ingest from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceConfig {
    /// `postgres://USER@HOST/DB?sslmode=verify-full&sslrootcert=CA.pem`, `mysql://…` or `mariadb://…`,
    /// or a SQLite file (relative to the home unless absolute). Never a password: see `password_env`.
    #[serde(alias = "path")]
    pub(crate) url: String,
    /// Environment variable holding the database password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password_env: Option<String>,
    /// Mapping file, relative to the home unless absolute.
    pub(crate) mapping: PathBuf,
    /// Written by earlier versions (`kind = "sqlite"`); the URL now says which database it is.
    #[serde(default, skip_serializing)]
    pub(crate) kind: Option<String>,
    /// Cron schedule for `kartoteka serve`: 5 fields (minute hour day month weekday) or 6 (seconds
    /// first), e.g. `"*/15 * * * *"`. Without it the source is ingested only by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) schedule: Option<String>,
    /// Time zone of the schedule (IANA name; default: `[query] time_zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time_zone: Option<String>,
}

impl SourceConfig {
    /// How to reach the source: the URL, a SQLite path resolved against the home, the password
    /// taken from its environment variable.
    pub(crate) fn spec(&self, home: &Home) -> Result<kartoteka_ingest::SourceSpec> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "sqlite") {
            bail!(
                "source kind {kind:?}: `kind` is no longer used; the url says which database it is"
            );
        }
        let url = if let Some(dir) = self.url.strip_prefix("files://") {
            format!("files://{}", home.path(std::path::Path::new(dir)).display())
        } else if self.url.contains("://") {
            self.url.clone()
        } else {
            home.path(std::path::Path::new(&self.url))
                .to_string_lossy()
                .into_owned()
        };
        source_spec(&url, self.password_env.as_deref())
    }
}

/// How to reach the source at `location`, the password read from the environment variable `password_env`.
pub(crate) fn source_spec(
    location: &str,
    password_env: Option<&str>,
) -> Result<kartoteka_ingest::SourceSpec> {
    let mut spec = kartoteka_ingest::SourceSpec::new(location);
    if let Some(var) = password_env {
        spec.password = Some(std::env::var(var).with_context(|| {
            format!("the source's password is read from ${var}, which is not set")
        })?);
    }
    Ok(spec)
}

impl SourceConfig {}

impl Config {
    /// A demo home (marked by `kartoteka demo`; homes made before the mark have its `demo` source).
    pub(crate) fn is_demo(&self) -> bool {
        self.demo || self.sources.contains_key("demo")
    }

    /// The config a new home starts with.
    pub(crate) fn new_home() -> Config {
        Config {
            demo: false,
            lake: LakeConfig::default(),
            query: QueryConfig::default(),
            default_source: None,
            sources: Default::default(),
            audit: AuditSettings::default(),
            ingest: IngestSettings::default(),
            reports: ReportsConfig::default(),
            web: None,
        }
    }
}

/// Every setting with its default, commented out, written under the config on every save: each key
/// stands alone (a section with one key takes the defaults for the rest).
const CONFIG_REFERENCE: &str = r#"# ---- Every setting, with its default (uncomment a line to change it) ----
# [lake]
# path = "lake"                  # the encrypted lake, relative to this directory
# jurisdiction = "RU"            # where its personal data is kept (ISO 3166), for `privacy report`
# [query]
# time_zone = "UTC"              # reporting zone (IANA): days, weeks and months of every metric
# memory_limit_mb = 2048         # memory all running queries may use together
# timeout_seconds = 300          # wall-clock limit of one statement
# [ingest]
# refuse_pii_without_consent = false
# compact_schedule = "0 3 * * *" # cron, in [query] time_zone, for `kartoteka serve`
# [audit]
# checkpoint_every = 100         # sign a checkpoint after this many entries …
# checkpoint_minutes = 10        # … or this many minutes
# sinks = []                     # second places for checkpoints: files or http(s):// webhooks
# [reports]
# dir = "reports"                # report specs (*.toml)
# archive = "archive"            # sealed rendered copies
# retention_days = 90
# [reports.smtp]                 # host, port = 587, security = "starttls", from, username, password_env
# [sources.NAME]                 # url, mapping, password_env, schedule = "*/15 * * * *", time_zone
# [web]                          # the HTTPS server of `kartoteka serve` (absent: none)
# listen = "127.0.0.1:8443"
# cert = "…", key = "…"          # PEM; without them a local CA + certificate are made under tls/
# names = ["localhost", "127.0.0.1"]
# plain_http = false             # only on loopback
# second_factor_for_all = true   # TOTP for every role (owner and admin always)
# session_idle_seconds = 1800    # a session without a request for this long ends
# session_max_hours = 12         # and in any case this long after sign-in
"#;

/// Environment variables override the config file.
fn env_override<T: std::str::FromStr>(name: &str, value: &mut T) -> Result<()> {
    if let Ok(text) = std::env::var(name) {
        *value = text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not a valid number"))?;
    }
    Ok(())
}

/// An opened home directory.
#[derive(Debug)]
pub(crate) struct Home {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// Its config.
    pub(crate) config: Config,
}

impl Home {
    /// Open an existing home.
    pub(crate) fn open(dir: &Path) -> Result<Home> {
        check_private(dir)?;
        let file = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "{} is not a Kartoteka home (no {CONFIG_FILE}); create one for your CRM with \
                 `kartoteka init --dir {}` (or try the demo: `kartoteka demo --dir DIR`), or pass --dir",
                dir.display(),
                dir.display()
            )
        })?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("config file {}", file.display()))?;
        env_override(
            "KARTOTEKA_QUERY_TIMEOUT_SECONDS",
            &mut config.query.timeout_seconds,
        )?;
        env_override(
            "KARTOTEKA_MEMORY_LIMIT_MB",
            &mut config.query.memory_limit_mb,
        )?;
        if config.query.memory_limit_mb == 0 {
            bail!(
                "{}: [query] memory_limit_mb = 0 (or KARTOTEKA_MEMORY_LIMIT_MB=0) would refuse every query; \
                 give the memory all running queries may use together, in MiB (default 2048)",
                file.display()
            );
        }
        if config.query.timeout_seconds == 0 {
            bail!(
                "{}: [query] timeout_seconds = 0 (or KARTOTEKA_QUERY_TIMEOUT_SECONDS=0) would stop every \
                 query at once; give a limit in seconds (default 300)",
                file.display()
            );
        }
        Ok(Home {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Open a home, creating the directory (0700: it holds password hashes, the audit log and maybe
    /// the key file) and a default config when missing.
    pub(crate) fn open_or_init(dir: &Path) -> Result<Home> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            set_mode(dir, 0o700)?;
        }
        if !dir.join(CONFIG_FILE).exists() {
            Home {
                dir: dir.to_path_buf(),
                config: Config::new_home(),
            }
            .save()?;
        }
        Home::open(dir)
    }

    /// Write the config file.
    pub(crate) fn save(&self) -> Result<()> {
        let text = format!(
            "# Kartoteka home configuration. Paths are relative to this directory.\n{}\n{CONFIG_REFERENCE}",
            toml::to_string_pretty(&self.config).context("config serialises")?
        );
        let file = self.dir.join(CONFIG_FILE);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        set_mode(&file, 0o600)
    }

    /// Resolve a path from the config.
    pub(crate) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The lake's storage.
    pub(crate) fn lake_store(&self) -> Result<LakeStore> {
        Ok(LakeStore::local(&self.path(&self.config.lake.path))?)
    }

    /// The master key source: `KARTOTEKA_PASSPHRASE` if set, else the home's key file. With
    /// `create_key_file`, a new home without either gets a fresh key file (0600), announced on stderr.
    pub(crate) fn master_key(&self, create_key_file: bool) -> Result<MasterKeySource> {
        if let Ok(p) = std::env::var("KARTOTEKA_PASSPHRASE") {
            if p.is_empty() {
                bail!("KARTOTEKA_PASSPHRASE is set but empty");
            }
            return Ok(MasterKeySource::Passphrase(Zeroizing::new(p)));
        }
        let key_file = self.dir.join(KEY_FILE);
        if key_file.exists() {
            return Ok(MasterKeySource::from_key_file(&key_file)?);
        }
        if create_key_file {
            let source = MasterKeySource::create_key_file(&key_file)?;
            eprintln!(
                "No KARTOTEKA_PASSPHRASE was set, so a random master key was generated and stored in {} \
                 (permissions 0600). Keep it safe: without it the lake cannot be read. For production, \
                 set KARTOTEKA_PASSPHRASE instead.",
                key_file.display()
            );
            return Ok(source);
        }
        bail!(
            "no master key: set KARTOTEKA_PASSPHRASE, or put the key file at {}",
            key_file.display()
        )
    }

    /// Open the lake (it must exist), its commits anchored in the control plane.
    pub(crate) async fn lake(&self) -> Result<Arc<Lake>> {
        let store = self.lake_store()?;
        let key = self.master_key(false)?;
        let lake = match Lake::open(store.clone(), &key).await {
            Err(kartoteka_engine::Error::WrongMasterKey { .. })
                if self.dir.join(STAGED_KEY_FILE).exists() =>
            {
                self.finish_interrupted_rotation(store).await?
            }
            other => other?,
        };
        Ok(Arc::new(lake.with_ledger(Arc::new(self.control().await?))))
    }

    /// Open the lake, creating it (and with `create_key_file`, a key file) when the home has none.
    pub(crate) async fn lake_or_create(&self, create_key_file: bool) -> Result<Arc<Lake>> {
        let store = self.lake_store()?;
        if kartoteka_engine::keyring::Keyring::exists(&store).await? {
            return self.lake().await;
        }
        // The control plane first: a new lake's keyring makes a missing control database an error.
        let control = self.control().await?;
        let key = self.master_key(create_key_file)?;
        let lake = Lake::open_or_create(store, &key).await?;
        Ok(Arc::new(lake.with_ledger(Arc::new(control))))
    }

    /// `keys rotate` re-wraps the keyring under a staged key file, then moves it over the old one.
    /// Interrupted between the two, only the staged key opens the lake: the rotation is finished
    /// here (the old key opens nothing any more), announced and audited.
    async fn finish_interrupted_rotation(&self, store: LakeStore) -> Result<Lake> {
        let staged = self.dir.join(STAGED_KEY_FILE);
        let live = self.dir.join(KEY_FILE);
        let key = MasterKeySource::from_key_file(&staged)?;
        let lake = Lake::open(store, &key).await.map_err(|e| {
            anyhow::anyhow!(
                "the master key in {} does not open this lake, and {} (left by an interrupted \
                 `kartoteka keys rotate`) does not either ({e}); restore the key file from a backup",
                live.display(),
                staged.display()
            )
        })?;
        std::fs::rename(&staged, &live).with_context(|| {
            format!(
                "an interrupted `kartoteka keys rotate` left the lake's key in {}; moving it over {} failed",
                staged.display(),
                live.display()
            )
        })?;
        sync_dir(&self.dir)?;
        eprintln!(
            "note: an earlier `kartoteka keys rotate` was interrupted after the keyring was re-wrapped; \
             its new key ({}) was moved over {} to finish it. Back up the new key file.",
            staged.display(),
            live.display()
        );
        self.audit()?.append(kartoteka_engine::audit::Event {
            actor: "owner".into(),
            action: kartoteka_engine::audit::action::KEYS_ROTATE_MASTER.into(),
            target: "keyring".into(),
            details: serde_json::json!({ "kind": "key file", "finished_after_interruption": true }),
            outcome: kartoteka_engine::audit::Outcome::Ok,
        })?;
        Ok(lake)
    }

    /// The engine over this home's lake, auditing into the home's log.
    pub(crate) fn engine(&self, lake: Arc<Lake>) -> Result<Engine> {
        let zone = &self.config.query.time_zone;
        let time_zone = zone.parse().map_err(|_| {
            anyhow::anyhow!(
                "[query] time_zone = {zone:?} is not an IANA time zone (e.g. \"Europe/Moscow\", \"UTC\")"
            )
        })?;
        Ok(Engine::new(
            lake,
            EngineConfig {
                memory_limit_bytes: self.config.query.memory_limit_mb << 20,
                query_timeout: Duration::from_secs(self.config.query.timeout_seconds),
                time_zone,
                ..EngineConfig::default()
            },
        )?
        .with_audit(self.audit()?))
    }

    /// The home's audit log (opened once per process; the CLI signs a checkpoint when it ends).
    pub(crate) fn audit(&self) -> Result<Arc<AuditLog>> {
        if let Some(log) = OPEN_AUDIT.get() {
            return Ok(Arc::clone(log));
        }
        let sinks = self.config.audit.sinks.iter().map(|s| sink(s)).collect();
        let log = Arc::new(AuditLog::open(
            &self.dir.join(AUDIT_DIR),
            AuditConfig {
                checkpoint_every: self.config.audit.checkpoint_every.max(1),
                checkpoint_interval: Duration::from_secs(self.config.audit.checkpoint_minutes * 60),
                sinks,
            },
        )?);
        Ok(Arc::clone(OPEN_AUDIT.get_or_init(|| log)))
    }

    /// The home's identity store (and commit ledger). A home that already holds a lake or an audit
    /// log but no control database lost it: users, run history and the commit anchor would be
    /// silently replaced by empty ones, so it is refused.
    pub(crate) async fn control(&self) -> Result<ControlPlane> {
        let path = self.dir.join(CONTROL_FILE);
        if !path.exists() {
            let lake_has_data = kartoteka_engine::keyring::Keyring::exists(&self.lake_store()?)
                .await
                .unwrap_or(true);
            let audit_has_entries = std::fs::metadata(self.dir.join(AUDIT_DIR).join("audit.jsonl"))
                .is_ok_and(|m| m.len() > 0);
            if lake_has_data || audit_has_entries {
                bail!(
                    "the control database {} is missing, but this home already has a lake or an audit \
                     log: users, their roles, run history and the lake's commit record would be lost. \
                     Restore {CONTROL_FILE} from a backup; nothing was changed",
                    path.display()
                );
            }
        }
        let control = ControlPlane::open(&path, Some(self.audit()?)).await?;
        for file in [
            path.clone(),
            path.with_extension("sqlite-wal"),
            path.with_extension("sqlite-shm"),
        ] {
            if file.exists() {
                set_mode(&file, 0o600)?;
            }
        }
        Ok(control)
    }
}

/// An `[audit] sinks` entry: an `http(s)://` webhook, or a file path (`file:` prefix optional).
pub(crate) fn sink(entry: &str) -> Sink {
    match kartoteka_reports::http::WebhookSink::new(entry) {
        Some(webhook) => Sink::Remote(Arc::new(webhook)),
        None => Sink::File(PathBuf::from(entry.strip_prefix("file:").unwrap_or(entry))),
    }
}

/// The staged key file of a `keys rotate` in progress.
pub(crate) const STAGED_KEY_FILE: &str = "master.key.new";

/// Set a file's or directory's permission bits (Unix).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    }
    let _ = (path, mode);
    Ok(())
}

/// The home's secrets must not be readable by other users: a key file that is, is refused; a
/// home directory others may enter is warned about.
fn check_private(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in [
            dir.join(KEY_FILE),
            dir.join(AUDIT_DIR).join("checkpoint.key"),
        ] {
            if let Ok(meta) = std::fs::metadata(&secret)
                && meta.permissions().mode() & 0o077 != 0
            {
                bail!(
                    "{} is readable by other users (mode {:o}): anyone who read it holds the key. \
                     Restrict it with `chmod 600 {}` (and consider rotating the key with \
                     `kartoteka keys rotate`)",
                    secret.display(),
                    meta.permissions().mode() & 0o777,
                    secret.display()
                );
            }
        }
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: the home {} can be entered by other users (mode {:o}); it holds password \
                 hashes and the audit log: `chmod 700 {}`",
                dir.display(),
                meta.permissions().mode() & 0o777,
                dir.display()
            );
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
