//! Administrative commands: users, audit, keys, privacy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, Int64Array};
use kartoteka_engine::audit::{self, Event, Outcome, PUBLIC_KEY_FILE, Sink};
use kartoteka_engine::control::NewUser;
use kartoteka_engine::model::{self, Class};
use kartoteka_engine::{Engine, MasterKeySource, Principal, Role};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::home::{self, Home};
use crate::output::Format;
use crate::{AuditCommand, KeysCommand, PrivacyCommand, UsersCommand};

/// The local CLI acts as the owner.
const CLI_ACTOR: &str = "owner";

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).with_context(|| {
        format!("unknown role {s:?}; the roles are owner, manager, team_lead, analyst, admin")
    })
}

/// The field names of `record` as it serialises them, in order.
fn field_order<T: Serialize>(record: &T) -> Result<Vec<String>> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a record")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let text = serde_json::to_string(record)?;
    Ok(serde_json::Deserializer::from_str(&text).deserialize_map(Keys)?)
}

fn print_records<T: Serialize>(rows: &[T], format: Format) -> Result<()> {
    let values: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => bail!("records print as objects"),
        })
        .collect::<Result<_>>()?;
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&values)?),
        Format::Csv | Format::Table => {
            let Some(first) = values.first() else {
                outln!("(none)");
                return Ok(());
            };
            // In the order the record declares its fields (a JSON map would sort them).
            let order = field_order(&rows[0])?;
            let headers: Vec<&String> = order.iter().filter(|k| first.contains_key(*k)).collect();
            let cell = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let table: Vec<Vec<String>> = values
                .iter()
                .map(|m| headers.iter().map(|h| cell(&m[*h])).collect())
                .collect();
            if format == Format::Csv {
                outln!(
                    "{}",
                    headers
                        .iter()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                );
                for row in &table {
                    let quoted: Vec<String> = row
                        .iter()
                        .map(|c| {
                            if c.contains([',', '"', '\n']) {
                                format!("\"{}\"", c.replace('"', "\"\""))
                            } else {
                                c.clone()
                            }
                        })
                        .collect();
                    outln!("{}", quoted.join(","));
                }
            } else {
                let widths: Vec<usize> = headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        table
                            .iter()
                            .map(|r| r[i].chars().count())
                            .max()
                            .unwrap_or(0)
                            .max(h.chars().count())
                    })
                    .collect();
                let line = |cells: Vec<&str>| {
                    cells
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                };
                outln!("{}", line(headers.iter().map(|h| h.as_str()).collect()));
                for row in &table {
                    outln!("{}", line(row.iter().map(String::as_str).collect()));
                }
            }
        }
    }
    Ok(())
}

pub(crate) async fn users(home: &Home, command: UsersCommand) -> Result<()> {
    let control = home.control().await?;
    match command {
        UsersCommand::Add {
            login,
            role,
            staff_id,
            team,
        } => {
            let (user, password) = control
                .add_user(
                    NewUser {
                        login,
                        role: parse_role(&role)?,
                        staff_id,
                        team,
                    },
                    CLI_ACTOR,
                )
                .await?;
            outln!(
                "user {} ({}) created. Initial password, shown once — hand it to the user, who must change it at first login:\n{}",
                user.login,
                user.role.as_str(),
                password.expose()
            );
        }
        UsersCommand::List { format } => print_records(&control.list_users().await?, format)?,
        UsersCommand::Disable { login } => {
            let u = control.disable(&login, CLI_ACTOR).await?;
            outln!("user {} is {}", u.login, u.status);
        }
        UsersCommand::SetRole { login, role } => {
            let u = control
                .set_role(&login, parse_role(&role)?, CLI_ACTOR)
                .await?;
            outln!("user {} now has the role {}", u.login, u.role.as_str());
        }
        UsersCommand::SetEmail { login, email } => {
            let u = control.set_email(&login, &email, CLI_ACTOR).await?;
            outln!(
                "reports for {} are e-mailed to {}",
                u.login,
                u.email.unwrap_or_default()
            );
        }
        UsersCommand::Reset { login } => {
            let password = control.reset_password(&login, CLI_ACTOR).await?;
            outln!(
                "new password for {login}, shown once — hand it to the user, who must change it at first login:\n{}",
                password.expose()
            );
        }
        UsersCommand::RevokeSessions { login } => {
            let n = control.revoke_sessions(&login, CLI_ACTOR).await?;
            outln!("{n} web session(s) of {login} ended; their next request signs them out");
        }
        UsersCommand::ResetSecondFactor { login } => {
            control.reset_second_factor(&login, CLI_ACTOR).await?;
            control.revoke_sessions(&login, CLI_ACTOR).await?;
            outln!(
                "the second factor of {login} is forgotten and their sessions ended; at the next \
                 sign-in they set up an authenticator again"
            );
        }
    }
    Ok(())
}

pub(crate) fn audit(dir: &Path, command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify {
            log,
            checkpoints,
            public_key,
        } => {
            // Verification needs no master key and no lake: the public key and the files suffice.
            let home = Home::open(dir).ok();
            let audit_dir = dir.join(home::AUDIT_DIR);
            let log = log.unwrap_or_else(|| audit_dir.join("audit.jsonl"));
            let key_path = public_key.unwrap_or_else(|| audit_dir.join(PUBLIC_KEY_FILE));
            let key = audit::read_public_key(&key_path)?;
            let mut files: Vec<PathBuf> = checkpoints;
            if files.is_empty() {
                files.push(audit_dir.join("checkpoints.jsonl"));
                for s in home.iter().flat_map(|h| h.config.audit.sinks.iter()) {
                    if let Sink::File(p) = home::sink(s) {
                        files.push(p);
                    }
                }
            }
            let report = audit::verify(&log, &files, &key)?;
            for repair in &report.repairs {
                outln!("repair recorded in the chain: {repair}");
            }
            for note in &report.notes {
                outln!("note: {note}");
            }
            match &report.broken {
                None => {
                    outln!(
                        "audit log intact: {} entries, {} signed checkpoints verified (newest covers entry {})",
                        report.entries,
                        report.checkpoints,
                        report
                            .newest_checkpoint
                            .map_or("none".to_string(), |n| n.to_string())
                    );
                    Ok(())
                }
                Some(problem) => bail!(
                    "audit log BROKEN: {problem}\n{} entries before it are intact. Keep the damaged file \
                     for investigation and tell the owner.",
                    report.entries
                ),
            }
        }
        AuditCommand::Tail { lines } => {
            let home = Home::open(dir)?;
            let log = home.audit()?;
            let entries = log.entries()?;
            for e in entries.iter().skip(entries.len().saturating_sub(lines)) {
                outln!("{}", serde_json::to_string(e)?);
            }
            Ok(())
        }
    }
}

/// Record the owner's `action` on `target` with the outcome of `result`: `details` of the success, or
/// the error's text.
pub(crate) fn record<T, E: std::fmt::Display>(
    home: &Home,
    action: &str,
    target: &str,
    result: &std::result::Result<T, E>,
    details: impl FnOnce(&T) -> serde_json::Value,
) -> Result<()> {
    let (details, outcome) = match result {
        Ok(v) => (details(v), Outcome::Ok),
        Err(e) => (
            serde_json::json!({ "error": e.to_string() }),
            Outcome::Error,
        ),
    };
    home.audit()?.append(Event {
        actor: CLI_ACTOR.into(),
        action: action.into(),
        target: target.into(),
        details,
        outcome,
    })?;
    Ok(())
}

/// `kartoteka runs`: recent ingest runs from the control plane.
pub(crate) async fn runs(home: &Home, limit: u32, format: Format) -> Result<()> {
    let runs = home.control().await?.ingest_runs(limit).await?;
    if matches!(format, Format::Json) {
        outln!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    #[derive(Serialize)]
    struct Line<'a> {
        id: i64,
        source: &'a str,
        mode: &'a str,
        started_at: &'a str,
        ended_at: &'a str,
        outcome: &'a str,
        snapshot: String,
        rows: u64,
        error: &'a str,
    }
    let lines: Vec<Line<'_>> = runs
        .iter()
        .map(|r| Line {
            id: r.id,
            source: &r.source,
            mode: r.mode.as_str(),
            started_at: &r.started_at,
            ended_at: r.ended_at.as_deref().unwrap_or(""),
            outcome: r.outcome.as_str(),
            snapshot: r.snapshot_id.map_or(String::new(), |s| s.to_string()),
            rows: r.tables.as_array().map_or(0, |ts| {
                ts.iter().filter_map(|t| t["rows_written"].as_u64()).sum()
            }),
            error: r.error.as_deref().unwrap_or(""),
        })
        .collect();
    print_records(&lines, format)
}

pub(crate) async fn keys(home: &Home, command: KeysCommand) -> Result<()> {
    let lake = home.lake().await?;
    match command {
        KeysCommand::List => {
            print_records(&lake.keys().await, Format::Table)?;
        }
        KeysCommand::Rotate { data } => {
            let new_source = new_master_key(home)?;
            let outcome = lake.rotate_master(&new_source.source).await;
            record(
                home,
                audit::action::KEYS_ROTATE_MASTER,
                "keyring",
                &outcome,
                |_| serde_json::json!({ "kind": new_source.kind }),
            )?;
            outcome?;
            new_source.install()?;
            outln!(
                "master key rotated ({}): data keys re-wrapped, no data rewritten",
                new_source.kind
            );
            if data {
                let engine = home.engine(Arc::clone(&lake))?;
                let outcome = engine.rotate_data_keys().await;
                record(
                    home,
                    audit::action::KEYS_ROTATE_DATA,
                    "keyring",
                    &outcome,
                    |(ids, snap)| serde_json::json!({ "new_keys": ids, "snapshot": snap.id }),
                )?;
                let (ids, snapshot) = outcome?;
                outln!(
                    "data keys rotated: {} new keys, every file rewritten in snapshot {}. Old key versions \
                     are forgotten by `kartoteka gc` once no snapshot uses them.",
                    ids.len(),
                    snapshot.id
                );
            }
        }
    }
    Ok(())
}

/// The next master key: a new passphrase from `KARTOTEKA_NEW_PASSPHRASE` when the lake is sealed with
/// one, else a new key file that replaces the old one once the keyring is re-wrapped.
struct NewMaster {
    source: MasterKeySource,
    kind: &'static str,
    staged: Option<(PathBuf, PathBuf)>,
}

impl NewMaster {
    fn install(&self) -> Result<()> {
        if let Some((staged, live)) = &self.staged {
            std::fs::rename(staged, live).with_context(|| {
                format!("cannot move {} to {}", staged.display(), live.display())
            })?;
        }
        Ok(())
    }
}

fn new_master_key(home: &Home) -> Result<NewMaster> {
    if std::env::var_os("KARTOTEKA_PASSPHRASE").is_some() {
        let p = std::env::var("KARTOTEKA_NEW_PASSPHRASE").context(
            "this lake is opened with a passphrase: set KARTOTEKA_NEW_PASSPHRASE to the new one",
        )?;
        if p.chars().count() < 15 {
            bail!("the new passphrase must have at least 15 characters");
        }
        return Ok(NewMaster {
            source: MasterKeySource::Passphrase(Zeroizing::new(p)),
            kind: "passphrase",
            staged: None,
        });
    }
    let live = home.dir.join(home::KEY_FILE);
    let staged = home.dir.join(home::STAGED_KEY_FILE);
    // The lake is open with the live key here, so a staged key left by a rotation interrupted
    // before the keyring was re-wrapped protects nothing (one interrupted after it was re-wrapped is
    // finished when the lake is opened): it is replaced.
    if staged.exists() {
        std::fs::remove_file(&staged)
            .with_context(|| format!("cannot remove the unused {}", staged.display()))?;
        eprintln!(
            "note: {} from an interrupted rotation was never used by the keyring; replaced",
            staged.display()
        );
    }
    let source = MasterKeySource::create_key_file(&staged)?;
    Ok(NewMaster {
        source,
        kind: "key file",
        staged: Some((staged, live)),
    })
}

#[derive(Debug, Serialize)]
struct PiiColumn {
    table: &'static str,
    column: &'static str,
    stored_in: String,
    jurisdiction: String,
    encrypted_with: String,
    files: usize,
    rows: u64,
}

#[derive(Debug, Serialize)]
struct PrivacyReport {
    jurisdiction: String,
    lake: String,
    pii_columns: Vec<PiiColumn>,
    clients: u64,
    clients_without_consent: u64,
    client_ids_without_consent: Vec<i64>,
}

pub(crate) async fn privacy(home: &Home, command: PrivacyCommand) -> Result<()> {
    let PrivacyCommand::Report { format } = command;
    let lake = home.lake().await?;
    let snapshot = lake.current().await?;
    let lake_dir = std::path::absolute(home.path(&home.config.lake.path))
        .unwrap_or_else(|_| home.path(&home.config.lake.path));
    let keys = lake.keys().await;
    let jurisdiction = home.config.lake.jurisdiction.clone();
    let mut pii_columns = Vec::new();
    for t in model::tables() {
        for c in t.pii_columns() {
            let state = snapshot.table(t.name);
            pii_columns.push(PiiColumn {
                table: t.name,
                column: c.name,
                stored_in: lake_dir.join("tables").join(t.name).display().to_string(),
                jurisdiction: jurisdiction.clone(),
                encrypted_with: keys
                    .iter()
                    .find(|k| k.table == t.name && k.class == Class::Pii && k.current)
                    .map_or("-".into(), |k| k.id.clone()),
                files: state.map_or(0, |s| s.files.len()),
                rows: state.map_or(0, |s| s.rows()),
            });
        }
    }
    let engine: Engine = home.engine(Arc::clone(&lake))?;
    let session = engine.session(&Principal::local_owner()).await?;
    let result = session
        .sql("SELECT client_id, consent_at IS NULL AS missing FROM clients ORDER BY client_id")
        .await?;
    let mut without = Vec::new();
    let mut clients = 0u64;
    for b in &result.batches {
        let ids = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("client_id is BIGINT")?;
        let missing = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .context("a boolean")?;
        for i in 0..b.num_rows() {
            clients += 1;
            if missing.value(i) {
                without.push(ids.value(i));
            }
        }
    }
    let report = PrivacyReport {
        jurisdiction,
        lake: lake_dir.display().to_string(),
        clients,
        clients_without_consent: without.len() as u64,
        client_ids_without_consent: without,
        pii_columns,
    };
    if format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!(
        "Personal data of this lake is declared as kept in jurisdiction {} (lake: {}).",
        report.jurisdiction,
        report.lake
    );
    print_records(&report.pii_columns, format)?;
    outln!(
        "\n{} of {} clients have no recorded consent{}",
        report.clients_without_consent,
        report.clients,
        if report.client_ids_without_consent.is_empty() {
            ".".to_string()
        } else {
            format!(
                " (client ids: {}{})",
                report
                    .client_ids_without_consent
                    .iter()
                    .take(50)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if report.client_ids_without_consent.len() > 50 {
                    ", …; --format json lists all"
                } else {
                    ""
                }
            )
        }
    );
    Ok(())
}

/// Ask the person at the terminal to type `expected`; without a terminal, refuse (scripts pass
/// `--yes`).
pub(crate) fn confirm(prompt: &str, expected: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!(
            "nothing was changed: confirmation needed and no terminal to ask; pass --yes to confirm"
        );
    }
    eprint!("{prompt}: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    if answer.trim() != expected {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// `1–4, 7` for a sorted list of ids.
pub(crate) fn id_ranges(ids: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}–{end}")
        });
        i += 1;
    }
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(", ")
    }
}
