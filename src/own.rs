//! Your own CRM: `init` (an empty home), `mapping scaffold` and `mapping check` (a mapping written and
//! tried without loading anything), and replacing a demo home's CRM. The work is the ingest crate's
//! (`kartoteka_ingest::check`); this parses and prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::home::{self, Home};
use crate::output::Format;

/// `kartoteka mapping …`.
#[derive(Debug, Subcommand)]
pub(crate) enum MappingCommand {
    /// Run every query of a mapping against its source with a small limit and report, per table, the
    /// columns and their types, rows, keys, NULL shares and what is unmapped — loading nothing.
    Check {
        /// A registered source (its URL and mapping from the config) …
        #[arg(long, conflicts_with_all = ["sqlite", "url"])]
        source: Option<String>,
        /// … or a SQLite file …
        #[arg(long, requires = "mapping", conflicts_with = "url")]
        sqlite: Option<PathBuf>,
        /// … or a database URL (no password in it) …
        #[arg(long, requires = "mapping")]
        url: Option<String>,
        /// … with this mapping.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Environment variable holding the database password.
        #[arg(long)]
        password_env: Option<String>,
        /// Rows read per table.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        /// Output format (`json` for scripts).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write a first mapping from the source's own schema (its tables and columns, guesses where the
    /// names suggest them, TODOs for the rest) to fill in.
    Scaffold {
        /// A SQLite file …
        #[arg(long, conflicts_with = "url")]
        sqlite: Option<PathBuf>,
        /// … or a database URL (no password in it).
        #[arg(long)]
        url: Option<String>,
        /// Environment variable holding the database password.
        #[arg(long)]
        password_env: Option<String>,
        /// Write here (default: standard output). An existing file is not overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Where a source is, from `--sqlite FILE` or `--url URL` (a URL with a password is refused: it
/// would be written to the config file or shell history).
pub(crate) fn location(sqlite: Option<PathBuf>, url: Option<String>) -> Result<Option<String>> {
    Ok(match (sqlite, url) {
        (Some(db), _) => Some(
            std::path::absolute(&db)
                .unwrap_or(db)
                .to_string_lossy()
                .into_owned(),
        ),
        (None, Some(url)) => {
            if kartoteka_ingest::source::url_has_password(&url) {
                bail!(
                    "the URL holds a password, which would be written to the config file; \
                     put it in an environment variable and pass --password-env VAR"
                );
            }
            Some(url)
        }
        (None, None) => None,
    })
}

/// `kartoteka init`: an empty home for your own CRM — config with every default written out, control
/// database, audit log, and a lake with its keyring (master key from `KARTOTEKA_PASSPHRASE`, or a new
/// key file).
pub(crate) async fn init(dir: &Path) -> Result<()> {
    if dir.join(home::CONFIG_FILE).exists() {
        bail!(
            "{} is already a Kartoteka home; nothing was changed (a new CRM wants a new directory)",
            dir.display()
        );
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; give `kartoteka init` a new or empty directory",
            dir.display()
        );
    }
    let home = Home::open_or_init(dir)?;
    home.lake_or_create(true).await?;
    home.audit()?.append(kartoteka_engine::audit::Event {
        actor: "owner".into(),
        action: kartoteka_engine::audit::action::HOME_INIT.into(),
        target: "home".into(),
        details: serde_json::json!({}),
        outcome: kartoteka_engine::audit::Outcome::Ok,
    })?;
    let d = dir.display();
    outln!(
        "an empty Kartoteka home is ready: {d}\n\
         Next, for your CRM (PostgreSQL, MySQL/MariaDB, SQLite, or CSV/XLSX exports):\n  \
         1. kartoteka mapping scaffold --url 'postgres://USER@HOST/DB' --out mapping.toml   (fill the TODOs)\n  \
         2. kartoteka mapping check --url 'postgres://USER@HOST/DB' --mapping mapping.toml   (loads nothing)\n  \
         3. kartoteka --dir {d} ingest --url 'postgres://USER@HOST/DB' --mapping mapping.toml --password-env CRM_DB_PASSWORD\n  \
         4. kartoteka --dir {d} metric revenue_by_month\n\
         then `kartoteka --dir {d} users add LOGIN --role manager --staff-id ID` for the people who read it."
    );
    Ok(())
}

/// `kartoteka mapping …`.
pub(crate) async fn mapping(dir: &Path, command: MappingCommand) -> Result<()> {
    match command {
        MappingCommand::Scaffold {
            sqlite,
            url,
            password_env,
            out,
        } => {
            let location =
                location(sqlite, url)?.context("give the source: --sqlite FILE or --url URL")?;
            let spec = home::source_spec(&location, password_env.as_deref())?;
            let source = kartoteka_ingest::Source::open(&spec).await?;
            let name = kartoteka_ingest::source::default_name(&location);
            let text = kartoteka_ingest::check::scaffold(&source, &name).await?;
            match out {
                Some(path) => {
                    if path.exists() {
                        bail!(
                            "{} exists; the scaffold does not overwrite a mapping (give another --out)",
                            path.display()
                        );
                    }
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "a first mapping for {} written to {}: fill the TODOs, then `kartoteka mapping check`",
                        spec.display(),
                        path.display()
                    );
                }
                None => out!("{text}"),
            }
            Ok(())
        }
        MappingCommand::Check {
            source,
            sqlite,
            url,
            mapping,
            password_env,
            limit,
            format,
        } => {
            let (spec, mapping_path) = match (location(sqlite, url)?, mapping) {
                (Some(location), Some(mapping)) => (
                    home::source_spec(&location, password_env.as_deref())?,
                    mapping,
                ),
                (None, mapping) => {
                    let home = Home::open(dir)?;
                    let name = source
                        .or_else(|| home.config.default_source.clone())
                        .context("give --source NAME, or --url/--sqlite with --mapping FILE")?;
                    let config = home.config.sources.get(&name).with_context(|| {
                        format!(
                            "no source {name:?} in {}",
                            dir.join(home::CONFIG_FILE).display()
                        )
                    })?;
                    let mapping = mapping.unwrap_or_else(|| home.path(&config.mapping));
                    (config.spec(&home)?, mapping)
                }
                (Some(_), None) => bail!("--mapping FILE is needed with --url/--sqlite"),
            };
            let mapping = kartoteka_ingest::Mapping::load(&mapping_path)?;
            let source = kartoteka_ingest::Source::open_for(&spec, &mapping).await?;
            let report = kartoteka_ingest::check::check_mapping(&source, &mapping, limit).await?;
            print_check(&report, format, limit)
        }
    }
}

fn print_check(
    report: &kartoteka_ingest::check::MappingReport,
    format: Format,
    limit: u64,
) -> Result<()> {
    if matches!(format, Format::Json) {
        outln!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for t in &report.tables {
        outln!(
            "{} — {}{} rows read{}, key ({}) {}{}",
            t.table,
            if t.more { "the first " } else { "" },
            t.rows,
            if t.more {
                format!(" (limit {limit}; the table holds more)")
            } else {
                String::new()
            },
            t.key.join(", "),
            if t.duplicate_keys == 0 {
                "unique".to_string()
            } else {
                format!("{} REPEATED", t.duplicate_keys)
            },
            if t.incremental { ", incremental" } else { "" }
        );
        for c in &t.columns {
            let share = if t.rows == 0 {
                String::new()
            } else {
                format!("{:.0} % NULL", c.nulls as f64 * 100.0 / t.rows as f64)
            };
            outln!(
                "    {:<16} {:<22} {:>10}{}",
                c.name,
                match c.source_type.as_deref() {
                    None => "(unmapped: NULL)".to_string(),
                    // SQLite declares no type for an expression.
                    Some("" | "NULL") => "← an expression".to_string(),
                    Some(ty) => format!("← {ty}"),
                },
                share,
                if c.pii { "  pii" } else { "" }
            );
        }
    }
    if !report.unmapped_tables.is_empty() {
        outln!(
            "unmapped (loaded empty; metrics that need them say so): {}",
            report.unmapped_tables.join(", ")
        );
    }
    outln!(
        "currency: {}",
        report.currency.as_deref().unwrap_or("(none declared)")
    );
    for w in &report.warnings {
        outln!("warning: {w}");
    }
    outln!("every query ran and every value read decodes; nothing was loaded");
    Ok(())
}

/// A demo home holds a generated CRM and printed passwords: another source goes into it only when the
/// owner says to replace the demo — and then the demo's source and users go.
pub(crate) fn refuse_demo(home: &Home, replace_demo: bool) -> Result<()> {
    if home.config.is_demo() && !replace_demo {
        bail!(
            "{} holds the demo CRM (its users' passwords were printed): your own CRM does not belong \
             in it. Create a home for it with `kartoteka init --dir NEW_DIR`, or pass --replace-demo to \
             load your source here instead of the demo (the demo's source and users are removed)",
            home.dir.display()
        );
    }
    Ok(())
}

/// After the owner's own source loaded into a demo home: the demo's source and its users go.
pub(crate) async fn replace_demo(home: &mut Home) -> Result<()> {
    home.config.sources.remove("demo");
    if home.config.default_source.as_deref() == Some("demo") {
        home.config.default_source = None;
    }
    home.config.demo = false;
    let control = home.control().await?;
    let removed = kartoteka_ingest::demo::users::remove_users(&control, "owner").await?;
    home.save()?;
    eprintln!(
        "the demo was replaced: its source is gone from the config and its {} users were removed",
        removed.len()
    );
    Ok(())
}
