//! `kartoteka`: the command line. One subcommand per job; every command works on a Kartoteka home
//! (`--dir`, env `KARTOTEKA_HOME`) and acts as the local owner — whoever holds the lake's key.

/// `println!` that returns a write error instead of panicking (a closed pipe, a full disk).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::output::OutputError)?
    }};
}

/// `print!` that returns a write error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*).map_err($crate::output::OutputError)?
    }};
}

mod admin;
mod home;
mod output;
mod own;
mod progress;
mod report;
mod serve;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Datelike;
use clap::{Parser, Subcommand};
use kartoteka_engine::{Lake, Principal};
use kartoteka_ingest::demo::{self, DemoConfig};
use kartoteka_queries::Catalog;

use crate::home::{Home, SourceConfig};
use crate::output::Format;

/// Secure analytics and reporting over CRM data: an encrypted Parquet lake queried with DataFusion.
#[derive(Debug, Parser)]
#[command(name = "kartoteka", version, about)]
struct Cli {
    /// The Kartoteka home: config, lake, key file, control database and audit log.
    #[arg(
        long,
        global = true,
        env = "KARTOTEKA_HOME",
        default_value = "kartoteka-home"
    )]
    dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the demo CRM, ingest it into an encrypted lake, print the metrics and draw a chart.
    Demo {
        /// Size: 1 ≈ 20 managers, 10 000 clients, 30 000 deals, 300 000 interactions.
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Random seed; the same seed, scale and end date give the same CRM.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Last day of the demo's history, exclusive (default: today, UTC).
        #[arg(long)]
        end: Option<chrono::NaiveDate>,
        /// Then serve it: the web door on https://127.0.0.1:8443 (a `[web]` section is added when the
        /// config has none) and the scheduled jobs, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// Create an empty home for your own CRM: config (every default written out), lake and keyring,
    /// control database, audit log. Then `mapping scaffold`, `mapping check`, `ingest`.
    Init,
    /// Write a first mapping from a source's schema (`scaffold`), or try one without loading
    /// anything (`check`).
    Mapping {
        #[command(subcommand)]
        command: own::MappingCommand,
    },
    /// Load a source (a CRM database with a mapping) into the lake as a new snapshot.
    Ingest {
        /// Source name in the config (default: `default_source`).
        #[arg(long)]
        source: Option<String>,
        /// Or: a SQLite file to read ...
        #[arg(long, requires = "mapping", conflicts_with_all = ["source", "url"])]
        sqlite: Option<PathBuf>,
        /// ... or a database URL (postgres://USER@HOST/DB, mysql://…, mariadb://…; no password in it) ...
        #[arg(long, requires = "mapping", conflicts_with = "source")]
        url: Option<String>,
        /// ... with this mapping file; the source is then registered in the config (under --name).
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Name to register a new source under (default: the file's or database's name).
        #[arg(long, requires = "mapping")]
        name: Option<String>,
        /// Environment variable holding the database password (kept out of the config file).
        #[arg(long, requires = "mapping")]
        password_env: Option<String>,
        /// Reload every table in full (by default, tables mapped `incremental` read only what
        /// changed since the lake's cursor).
        #[arg(long)]
        full: bool,
        /// In a demo home: load this source instead of the demo, removing the demo's source and
        /// users (without it, another source is refused there).
        #[arg(long, requires = "mapping")]
        replace_demo: bool,
    },
    /// Run one SQL query (SELECT/WITH/EXPLAIN only) over the current snapshot.
    Query {
        /// The SQL text.
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Run under this user's policy: see exactly what they see (audited as the owner's preview).
        #[arg(long = "as", value_name = "LOGIN")]
        as_user: Option<String>,
    },
    /// Run a catalog metric (`kartoteka metric list` lists them; `metric docs` prints the catalog).
    Metric {
        /// Metric name, `list`, or `docs` (the catalog as Markdown).
        name: String,
        /// Parameters, `name=value`, repeatable.
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also draw the metric's chart to this SVG file.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Run under this user's policy (a manager gets their own rows).
        #[arg(long = "as", value_name = "LOGIN")]
        as_user: Option<String>,
    },
    /// Manage users: logins, system roles, staff links, status.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Inspect and verify the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Rotate and list the lake's keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Residency and consent.
    Privacy {
        #[command(subcommand)]
        command: PrivacyCommand,
    },
    /// List the lake's snapshots (`snapshots trust` accepts a deliberate restore from backup).
    Snapshots {
        #[command(subcommand)]
        command: Option<SnapshotsCommand>,
    },
    /// Run the scheduler: every source with a `schedule` is ingested on it, every report spec
    /// rendered on its own (and compaction on `[ingest] compact_schedule`), missed runs caught up
    /// once, until Ctrl-C or SIGTERM.
    Serve,
    /// Report specs: list them, render one now, list archived copies.
    Report {
        #[command(subcommand)]
        command: report::ReportCommand,
    },
    /// Recent ingest runs: start, end, outcome, snapshot, rows and reconciliation per table.
    Runs {
        /// How many (newest first).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Output format (`json` includes the per-table details).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Erase a client on request: their rows and their deals' rows leave every table and every
    /// file, older snapshots are expired, and no later ingest brings them back.
    Erase {
        /// The client's id (`clients.client_id`) …
        #[arg(
            long,
            required_unless_present = "client_key",
            conflicts_with = "client_key"
        )]
        client: Option<i64>,
        /// … or their key as the CRM writes it, for a mapping with `[keys] text = true` (`C-1005`).
        #[arg(long)]
        client_key: Option<String>,
        /// Do not ask: erase what the plan shows (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Rewrite tables that incremental runs left in many small files, or with rows marked deleted,
    /// into few large files of live rows only.
    Compact {
        /// Compact tables holding more than this many files.
        #[arg(long, default_value_t = 1)]
        max_files: usize,
    },
    /// Delete data files no snapshot references (left by crashed or failed writes).
    Gc {
        /// Only files older than this many seconds.
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotsCommand {
    /// Accept the newest snapshot on disk as current after restoring the lake from a backup on
    /// purpose (it must authenticate and its files must be there); recorded in the audit log.
    Trust {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user; their random initial password is printed once.
    Add {
        /// Login (a-z, 0-9, '.', '_', '-').
        login: String,
        /// System role: owner, manager, team_lead, analyst, admin.
        #[arg(long)]
        role: String,
        /// The CRM staff record this user is (required for managers and team leads).
        #[arg(long)]
        staff_id: Option<i64>,
        /// Team (a team lead sees the rows of every staff member in it).
        #[arg(long)]
        team: Option<String>,
    },
    /// List users.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Disable a user.
    Disable {
        /// Login.
        login: String,
    },
    /// Change a user's system role.
    SetRole {
        /// Login.
        login: String,
        /// New role.
        role: String,
    },
    /// Set where a user's reports are e-mailed.
    SetEmail {
        /// Login.
        login: String,
        /// Address.
        email: String,
    },
    /// Issue a new random password (printed once; must be changed at next login).
    Reset {
        /// Login.
        login: String,
    },
    /// End every web session of a user (at their next request).
    RevokeSessions {
        /// Login.
        login: String,
    },
    /// Forget a user's second factor (a lost phone): their authenticator secret and recovery codes;
    /// their sessions end and the next sign-in enrols a new one.
    ResetSecondFactor {
        /// Login.
        login: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain, check checkpoint signatures, name the first broken entry.
    Verify {
        /// The log file (default: the home's).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Checkpoint files to check against (default: the home's and the configured file sinks).
        #[arg(long = "checkpoints")]
        checkpoints: Vec<PathBuf>,
        /// The checkpoint public key file (default: the home's `audit/checkpoint.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print the newest entries.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// New master key (re-wraps data keys, no data rewritten); with --data, new data keys and every
    /// file rewritten.
    Rotate {
        /// Also issue new data keys and rewrite all data files with them.
        #[arg(long)]
        data: bool,
    },
    /// List data keys (ids and versions, never key material).
    List,
}

#[derive(Debug, Subcommand)]
enum PrivacyCommand {
    /// Where personal data is stored, and which clients have no recorded consent.
    Report {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KARTOTEKA_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Planning and evaluating an expression walks its tree recursively: room for the deepest
        // statement the engine accepts, with a margin (tokio's default is 2 MiB).
        .thread_stack_size(8 << 20)
        .build()
        .expect("a tokio runtime can be built");
    let outcome = runtime.block_on(run(cli));
    // A query task still inside an operator when its statement timed out ends at its next batch;
    // the process does not wait for it longer than this.
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Sign off what this command appended, so truncating the log's end is detectable.
    if let Some(audit) = home::OPEN_AUDIT.get()
        && let Err(e) = audit.checkpoint_now()
    {
        eprintln!("warning: the audit checkpoint could not be written: {e}");
    }
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`… | head`): nothing more to say, and nobody to say it to.
        Err(e) if output::is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            scale,
            seed,
            end,
            serve,
        } => {
            demo(&cli.dir, scale, seed, end).await?;
            if serve {
                let mut home = Home::open(&cli.dir)?;
                if home.config.web.is_none() {
                    home.config.web = Some(home::WebConfig::default());
                    home.save()?;
                }
                outln!(
                    "\nserving the demo: open the address below and sign in as `owner` with the password \
                     above (you will choose your own and set up a code app); Ctrl-C stops"
                );
                serve::serve(&cli.dir).await?;
            }
            Ok(())
        }
        Command::Init => own::init(&cli.dir).await,
        Command::Mapping { command } => own::mapping(&cli.dir, command).await,
        Command::Ingest {
            source,
            sqlite,
            url,
            mapping,
            name,
            password_env,
            full,
            replace_demo,
        } => {
            let mut home = Home::open(&cli.dir)?;
            let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            let location = own::location(sqlite, url)?;
            if location.is_some() {
                own::refuse_demo(&home, replace_demo)?;
            }
            let lake = home.lake_or_create(false).await?;
            match (source, location, mapping) {
                (_, Some(location), Some(mapping)) => {
                    // A new source is registered in the config only once it has loaded successfully.
                    let name =
                        name.unwrap_or_else(|| kartoteka_ingest::source::default_name(&location));
                    let source = SourceConfig {
                        url: location,
                        password_env,
                        mapping: abs(mapping),
                        kind: None,
                        schedule: None,
                        time_zone: None,
                    };
                    // Replacing the demo reloads every table from the new source.
                    ingest(&home, &lake, &name, &source, full || replace_demo, "owner").await?;
                    if replace_demo && home.config.is_demo() {
                        own::replace_demo(&mut home).await?;
                    }
                    home.config.sources.insert(name.clone(), source);
                    home.config.default_source.get_or_insert(name);
                    home.save()?;
                }
                (_, None, Some(_)) => {
                    bail!("--mapping registers a new source: give it --sqlite FILE or --url URL")
                }
                (name, _, None) => {
                    let name = name.or_else(|| home.config.default_source.clone()).context(
                        "no source given and no default_source in the config; pass --source NAME or --sqlite FILE --mapping FILE",
                    )?;
                    let source = home.config.sources.get(&name).cloned().with_context(|| {
                        format!(
                            "no source {name:?} in {}; known sources: {}",
                            home.dir.join(home::CONFIG_FILE).display(),
                            home.config
                                .sources
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                    ingest(&home, &lake, &name, &source, full, "owner").await?;
                }
            }
            Ok(())
        }
        Command::Query {
            sql,
            format,
            as_user,
        } => {
            let home = Home::open(&cli.dir)?;
            let engine = home.engine(home.lake().await?)?;
            let session = session_as(&home, &engine, as_user.as_deref()).await?;
            let result = session.sql(&sql).await?;
            output::print(&result, format, None)?;
            // An empty table the mapping never loaded reads like an empty CRM: say which.
            if let Ok(unmapped) = session.unmapped_reads(&sql, &Default::default()).await
                && !unmapped.is_empty()
            {
                eprintln!(
                    "note: this reads {}, which the source's mapping does not provide (stored empty / NULL)",
                    unmapped.join(", ")
                );
            }
            Ok(())
        }
        Command::Metric {
            name,
            params,
            format,
            chart,
            as_user,
        } => {
            let catalog = Catalog::builtin()?;
            if name == "list" {
                return list_metrics(&catalog);
            }
            if name == "docs" {
                out!("{}", catalog.markdown());
                return Ok(());
            }
            let metric = catalog.get(&name)?;
            let args = kartoteka_queries::parse_assignments(&params).map_err(anyhow::Error::msg)?;
            let home = Home::open(&cli.dir)?;
            let engine = home.engine(home.lake().await?)?;
            let session = session_as(&home, &engine, as_user.as_deref()).await?;
            let period = kartoteka_queries::period_of(&session, metric, &args)?;
            if let Some((text, true)) = &period {
                eprintln!(
                    "metric {} {text} (the default period; --param from=… to=… or as_of=… for another)",
                    metric.name
                );
            }
            let result = kartoteka_queries::run_metric(&session, metric, &args).await?;
            let currency = session.snapshot().mapping.currency.as_deref();
            let mut how = output::Presentation {
                captions: kartoteka_queries::captions(metric, currency),
                empty_note: None,
            };
            if result.rows() == 0
                && format == Format::Table
                && let Some((text, _)) = &period
            {
                let end = kartoteka_queries::data_end(&session).await?;
                how.empty_note = Some(match end {
                    Some(end) => format!("{text}; the data ends {end}"),
                    None => format!("{text}; the lake holds no dated rows"),
                });
            }
            output::print_with(&result, format, None, &how)?;
            if let Some(path) = chart {
                write_chart(metric, &result, &session, &path)?;
                eprintln!("chart written to {}", path.display());
            }
            Ok(())
        }
        Command::Erase {
            client,
            client_key,
            yes,
        } => {
            // What the person typed is what they confirm; the lake's id is derived from it.
            let (client, typed) = match (client, client_key) {
                (Some(id), _) => (id, id.to_string()),
                (None, Some(key)) => (kartoteka_engine::model::key_of_text(&key), key),
                (None, None) => bail!("give --client ID or --client-key KEY"),
            };
            let home = Home::open(&cli.dir)?;
            let lake = home.lake().await?;
            let engine = home.engine(lake.clone())?;
            let control = std::sync::Arc::new(home.control().await?);
            let plan = engine.erasure_plan(client).await?;
            let rows: Vec<String> = plan.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
            eprintln!(
                "erasing client {client} removes, for good: {} rows ({}) and {} deals; snapshots {} \
                 are expired (history before the erasure goes), with the report copies drawn from them",
                plan.rows.values().sum::<u64>(),
                rows.join(", "),
                plan.deals.len(),
                admin::id_ranges(&plan.snapshots_expired)
            );
            if !yes {
                admin::confirm(&format!("type the client ({typed}) to erase them"), &typed)?;
            }
            let archive = kartoteka_reports::archive::Archive::new(
                home.path(&home.config.reports.archive),
                lake,
                control,
            );
            let outcome =
                kartoteka_reports::job::erase_client(&engine, &archive, client, "owner").await?;
            let (e, copies) = (outcome.lake, outcome.report_copies_deleted);
            if copies > 0 {
                eprintln!("{copies} archived report copies rendered before the erasure deleted");
            }
            let rows: u64 = e.removed.values().sum();
            eprintln!(
                "erased client {client}: {rows} rows ({} deals) removed in snapshot {}; {} older snapshots expired, {} files deleted; later ingests skip them",
                e.deals,
                e.snapshot,
                e.expired_snapshots.len(),
                e.files_deleted
            );
            Ok(())
        }
        Command::Compact { max_files } => {
            let home = Home::open(&cli.dir)?;
            let lake = home.lake().await?;
            let engine = home.engine(lake)?;
            let outcome = engine.compact(max_files).await;
            admin::record(
                &home,
                kartoteka_engine::audit::action::COMPACT,
                "lake",
                &outcome,
                |(tables, snapshot)| serde_json::json!({ "tables": tables, "snapshot": snapshot.as_ref().map(|s| s.id) }),
            )?;
            match outcome? {
                (tables, Some(snapshot)) => eprintln!(
                    "compacted {} into snapshot {}; `kartoteka gc` frees the old files",
                    tables.join(", "),
                    snapshot.id
                ),
                (_, None) => {
                    eprintln!(
                        "nothing to compact (no table holds more than {max_files} files or rows marked deleted)"
                    )
                }
            }
            Ok(())
        }
        Command::Serve => serve::serve(&cli.dir).await,
        Command::Report { command } => report::report(&Home::open(&cli.dir)?, command).await,
        Command::Runs { limit, format } => {
            let home = Home::open(&cli.dir)?;
            admin::runs(&home, limit, format).await
        }
        Command::Snapshots {
            command: Some(SnapshotsCommand::Trust { yes }),
        } => {
            let home = Home::open(&cli.dir)?;
            let store = home.lake_store()?;
            let lake = kartoteka_engine::Lake::open(store, &home.master_key(false)?).await?;
            let ids = lake.snapshot_ids().await?;
            let newest = ids.last().context("the lake has no snapshot to trust")?;
            eprintln!(
                "snapshot {newest} (the newest in the lake's snapshot directory) becomes the lake's \
                 current state; commits recorded after it are forgotten"
            );
            if !yes {
                admin::confirm("type `trust` to accept it", "trust")?;
            }
            let lake = lake.with_ledger(std::sync::Arc::new(home.control().await?));
            let snapshot = lake.trust_newest().await?;
            eprintln!("snapshot {} is trusted as current", snapshot.id);
            Ok(())
        }
        Command::Snapshots { command: None } => {
            let home = Home::open(&cli.dir)?;
            let lake = home.lake().await?;
            for id in lake.snapshot_ids().await? {
                let s = lake.snapshot(id).await?;
                let rows: u64 = s.tables.values().map(|t| t.rows()).sum();
                let files: usize = s.tables.values().map(|t| t.files.len()).sum();
                outln!(
                    "{:>6}  {}  {:<32} {rows:>12} rows {files:>5} files",
                    s.id,
                    s.committed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    s.operation
                );
            }
            Ok(())
        }
        Command::Users { command } => admin::users(&Home::open(&cli.dir)?, command).await,
        Command::Audit { command } => admin::audit(&cli.dir, command),
        Command::Keys { command } => admin::keys(&Home::open(&cli.dir)?, command).await,
        Command::Privacy { command } => admin::privacy(&Home::open(&cli.dir)?, command).await,
        Command::Gc { grace_seconds } => {
            let home = Home::open(&cli.dir)?;
            let lake = home.lake().await?;
            let outcome = lake.gc(Duration::from_secs(grace_seconds)).await;
            admin::record(
                &home,
                kartoteka_engine::audit::action::GC,
                "lake",
                &outcome,
                |r| {
                    serde_json::json!({
                        "files_deleted": r.deleted.len(),
                        "bytes_freed": r.bytes_freed,
                        "keys_removed": r.keys_removed,
                    })
                },
            )?;
            let report = outcome?;
            outln!(
                "gc: {} referenced files kept, {} unreferenced files deleted ({} bytes), {} too young to delete",
                report.kept,
                report.deleted.len(),
                report.bytes_freed,
                report.too_young
            );
            if !report.keys_removed.is_empty() {
                outln!(
                    "gc: data keys no snapshot uses any more were forgotten: {}",
                    report.keys_removed.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// The session a command runs in: the local owner's, or — with `--as` — that user's, resolved at the
/// snapshot the session reads and previewed by the owner.
async fn session_as(
    home: &Home,
    engine: &kartoteka_engine::Engine,
    as_user: Option<&str>,
) -> Result<kartoteka_engine::QuerySession> {
    let Some(login) = as_user else {
        return Ok(engine.session(&Principal::local_owner()).await?);
    };
    let control = home.control().await?;
    let snapshot = engine.lake().current().await?;
    let principal =
        kartoteka_engine::principal::resolve(engine, &control, login, Some("owner"), &snapshot)
            .await?;
    Ok(engine.session_at(&principal, snapshot).await?)
}

/// Ingest the source `name` (the job lives in the ingest crate; this parses the home's configuration
/// and prints the outcome).
async fn ingest(
    home: &Home,
    lake: &std::sync::Arc<Lake>,
    name: &str,
    source: &SourceConfig,
    full: bool,
    actor: &str,
) -> Result<kartoteka_ingest::IngestReport> {
    let control = home.control().await?;
    let engine = home.engine(lake.clone())?;
    let spec = source.spec(home)?;
    let job = kartoteka_ingest::IngestJob {
        name,
        source: &spec,
        mapping: &home.path(&source.mapping),
        options: kartoteka_ingest::IngestOptions {
            refuse_pii_without_consent: home.config.ingest.refuse_pii_without_consent,
            skip_reconciliation: false,
            full,
        },
        actor,
    };
    let outcome =
        kartoteka_ingest::run_job(&engine, &control, job, &progress::IngestBars::default()).await?;
    let report = outcome.report;
    let rows: u64 = report.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = report.tables.iter().map(|t| t.bytes).sum();
    eprintln!(
        "committed snapshot {}: {rows} rows in {} tables, {:.1} MB encrypted, {:.2} s",
        report.snapshot_id,
        report.tables.len(),
        bytes as f64 / 1e6,
        report.seconds
    );
    eprintln!(
        "reconciled: every table's row count and key checksum equal the source's ({} tables)",
        report.checks.len()
    );
    if let Some((tables, snapshot)) = &outcome.compacted {
        eprintln!("compacted {} into snapshot {snapshot}", tables.join(", "));
    }
    Ok(report)
}

fn list_metrics(catalog: &Catalog) -> Result<()> {
    for m in catalog.metrics() {
        outln!("{:<22} {} [{}]", m.name, m.title, m.family);
        for p in &m.params {
            outln!(
                "    --param {}=<{:?}>{}  {}",
                p.name,
                p.ty,
                p.default
                    .as_ref()
                    .map_or(String::new(), |d| format!(" (default {d})")),
                p.description
            );
        }
        outln!("    roles: {}", m.roles_text());
    }
    Ok(())
}

fn write_chart(
    metric: &kartoteka_queries::Metric,
    result: &kartoteka_engine::QueryResult,
    session: &kartoteka_engine::QuerySession,
    path: &Path,
) -> Result<()> {
    let currency = session.snapshot().mapping.currency.as_deref();
    // The metric's own chart hint; a KPI tile drawn here has no previous period to compare with.
    let panel = kartoteka_reports::spec::Panel::build(metric, Default::default(), Vec::new())
        .map_err(|(field, detail)| anyhow::anyhow!("the chart hint's {field}: {detail}"))?
        .with_currency(currency);
    let mut chart = kartoteka_reports::chart::Chart::from_result(&panel, &result.batches, None)?;
    // The period the data's day falls in is still going on: marked, not read as a collapse.
    chart.mark_in_progress(
        session
            .snapshot()
            .committed_at
            .with_timezone(&session.time_zone())
            .date_naive(),
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot write the chart to {}: {} is not a directory that can be created",
                path.display(),
                dir.display()
            )
        })?;
    }
    std::fs::write(path, chart.to_svg()?)
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn demo(dir: &Path, scale: f64, seed: u64, end: Option<chrono::NaiveDate>) -> Result<()> {
    if !(scale > 0.0 && scale <= 100.0) {
        bail!("--scale must be in (0, 100], got {scale}");
    }
    let started = Instant::now();
    let fresh = !dir.join(home::CONFIG_FILE).exists();
    let mut home = Home::open_or_init(dir)?;
    if !fresh && !home.config.is_demo() {
        bail!(
            "{} is a home for your own CRM; the demo would put a generated CRM and printed passwords \
             beside it. Run the demo in another directory (`kartoteka demo --dir DEMO_DIR`)",
            dir.display()
        );
    }
    home.config.demo = true;
    let end = end.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let db = home.dir.join("demo-crm.sqlite");
    let mapping_file = home.dir.join("demo-mapping.toml");
    std::fs::write(&mapping_file, demo::MAPPING)
        .with_context(|| format!("cannot write {}", mapping_file.display()))?;
    let spin = progress::spinner(&format!(
        "generating the demo CRM (scale {scale}, seed {seed})"
    ));
    let stats = demo::generate(&db, DemoConfig { seed, scale, end }).await?;
    spin.finish_and_clear();
    eprintln!(
        "demo CRM written to {}: {} staff, {} clients, {} deals, {} interactions, {} tasks, {} invoices",
        db.display(),
        stats.users,
        stats.contacts,
        stats.leads,
        stats.interactions,
        stats.tasks,
        stats.invoices
    );
    let source = SourceConfig {
        url: "demo-crm.sqlite".into(),
        password_env: None,
        mapping: "demo-mapping.toml".into(),
        kind: None,
        schedule: None,
        time_zone: None,
    };
    home.config.sources.insert("demo".into(), source.clone());
    home.config.default_source.get_or_insert("demo".into());
    home.save()?;

    let lake = home.lake_or_create(true).await?;
    ingest(&home, &lake, "demo", &source, false, "owner").await?;

    let engine = home.engine(lake)?;
    let session = engine.session(&Principal::local_owner()).await?;
    let catalog = Catalog::builtin()?;
    for metric in catalog.metrics() {
        // The demo company's "today" is the end of its history, so metrics are asked as of then.
        // A month-aligned bound is the first month start on or after it (the partial last month
        // included).
        let month_end = if end.day() == 1 {
            end
        } else {
            end.with_day(1)
                .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
                .context("the month after the demo's end")?
        };
        let mut args: Vec<(String, String)> = metric
            .params
            .iter()
            .filter(|p| p.name == "to" || p.name == "as_of")
            .map(|p| {
                let bound = if p.align.as_deref() == Some("month") {
                    month_end
                } else {
                    end
                };
                (p.name.clone(), bound.to_string())
            })
            .collect();
        if metric.name == "activity_by_manager" {
            args.push(("grain".into(), "week".into()));
        }
        let result = kartoteka_queries::run_metric(&session, metric, &args).await?;
        outln!("\n== {} — {} ==", metric.name, metric.title);
        output::print(&result, Format::Table, Some(10))?;
        if metric.name == "revenue_by_month" {
            let chart = home.dir.join("charts").join("revenue_by_month.svg");
            write_chart(metric, &result, &session, &chart)?;
            outln!("chart: {}", chart.display());
        }
    }
    let control = home.control().await?;
    let created = demo::users::create_users(&control, &engine, "owner").await?;
    // Example report specs (kept when the user has edited them).
    let specs = home.path(&home.config.reports.dir);
    std::fs::create_dir_all(&specs)
        .with_context(|| format!("cannot create {}", specs.display()))?;
    for (file, text) in demo::REPORT_SPECS {
        let path = specs.join(file);
        if !path.exists() {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    let example = created
        .iter()
        .find(|u| u.role == kartoteka_engine::Role::Manager)
        .map_or("manager-2".to_string(), |u| u.login.clone());
    if !created.is_empty() {
        outln!("\ndemo users (initial passwords, shown once):");
        for u in &created {
            outln!("  {:<12} {:<10} {}", u.login, u.role.as_str(), u.password);
        }
    }
    outln!(
        "\ndemo finished in {:.1} s. Home: {}\nTry: kartoteka --dir {} query \"SELECT status, COUNT(*) FROM deals GROUP BY status\"\n     kartoteka --dir {} metric funnel_conversion --as {example}   (that manager's own funnel)",
        started.elapsed().as_secs_f64(),
        home.dir.display(),
        home.dir.display(),
        home.dir.display()
    );
    Ok(())
}
