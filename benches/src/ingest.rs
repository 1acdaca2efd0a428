//! `kartoteka-ingest-bench`: ingest speed from PostgreSQL and MySQL/MariaDB.
//!
//! Generates the demo CRM at a scale, copies it into a fresh database on each server given, then per
//! server: (1) the server's own client reading the `interactions` mapping query to /dev/null (`psql
//! \copy … to /dev/null`, `mariadb -e … > /dev/null`) — the reference for the source's own speed;
//! (2) Kartoteka streaming and decoding the same query without writing (driver + decoding cost);
//! (3) a full ingest of every table into an encrypted lake, with per-table rows/s and peak RSS; (4) after
//! 1% of the CRM changes, incremental runs with and without reconciliation; (5) reads over the delete
//! vectors those runs left, then the same after compaction.
//! Prints one JSON document. The databases are dropped at the end.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::TryStreamExt;
use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource};
use kartoteka_ingest::demo::{self, DemoConfig, servers};
use kartoteka_ingest::source::SourceRow;
use kartoteka_ingest::{IngestOptions, Mapping, NoProgress, Source, SourceSpec};
use serde_json::json;

mod rss;

use rss::{peak_rss_mb, reset_peak};

#[derive(Debug, Parser)]
struct Args {
    /// Demo scale (10 ≈ 3 million interactions).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// PostgreSQL server (a database in it to connect to for CREATE DATABASE).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// MySQL/MariaDB server.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test")]
    mysql: String,
    /// Skip a server: `postgres` or `mysql`.
    #[arg(long)]
    skip: Vec<String>,
    /// Before the incremental runs, index what the mappings' `updated_at` is in the source (as a CRM
    /// that serves its own "changed since" queries would have): plain indexes on `modified_at`, and on
    /// PostgreSQL expression indexes on the activities' `COALESCE(modified_at, …)`. MariaDB has no
    /// expression indexes, so its activities are still scanned.
    #[arg(long)]
    cursor_indexes: bool,
}

/// The indexes `--cursor-indexes` adds: plain ones for both servers, expression ones for PostgreSQL.
const CURSOR_INDEXES: &str = "CREATE INDEX kb_users_m ON users (modified_at);
     CREATE INDEX kb_contacts_m ON contacts (modified_at);
     CREATE INDEX kb_leads_m ON leads (modified_at);
     CREATE INDEX kb_status_log_m ON lead_status_log (changed_at);
     CREATE INDEX kb_todo_m ON todo (modified_at);
     CREATE INDEX kb_invoices_m ON invoices (modified_at);
     CREATE INDEX kb_responsible_m ON responsible_log (changed_at)";
const CURSOR_EXPRESSION_INDEXES: &str =
    "CREATE INDEX kb_calls_m ON calls ((COALESCE(modified_at, started_at)));
     CREATE INDEX kb_emails_m ON emails ((COALESCE(modified_at, sent_at)));
     CREATE INDEX kb_chat_m ON chat_messages ((COALESCE(modified_at, sent_at)));
     CREATE INDEX kb_meetings_m ON meetings ((COALESCE(modified_at, held_at)));
     ANALYZE";

/// Statements timed over the lake an incremental run left (files with delete vectors), then again
/// after compaction rewrote those files without the deleted rows: SQL over the tables with vectors and
/// catalog metrics reading them.
const READS: [&str; 3] = [
    "SELECT COUNT(*), SUM(amount) FROM deals",
    "SELECT kind, COUNT(*) FROM tasks WHERE completed_at IS NULL GROUP BY kind ORDER BY kind",
    "SELECT city, COUNT(*) FROM clients GROUP BY city ORDER BY 2 DESC, 1 LIMIT 10",
];
const READ_METRICS: [&str; 4] = [
    "pipeline_by_stage",
    "overdue_tasks",
    "win_rate",
    "client_base",
];

/// Each of [`READS`] and [`READ_METRICS`] as the owner (a session per run, best and median of five),
/// over the current snapshot: the files with vectors, then the same after `compact`. The answers
/// must be the same both times.
async fn reads_over_delete_vectors(engine: &Engine) -> Result<serde_json::Value> {
    use kartoteka_engine::Principal;
    async fn timed(engine: &Engine) -> Result<Vec<(String, f64, f64, String)>> {
        let catalog = kartoteka_queries::Catalog::builtin()?;
        let mut out = Vec::new();
        let names = READS
            .iter()
            .map(|s| s.to_string())
            .chain(READ_METRICS.iter().map(|m| m.to_string()));
        for name in names {
            let mut times = Vec::new();
            let mut answer = String::new();
            for _ in 0..5 {
                let t = Instant::now();
                let session = engine.session(&Principal::local_owner()).await?;
                let r = match catalog.metrics().iter().find(|m| m.name == name) {
                    Some(metric) => {
                        let args: Vec<(String, String)> = metric
                            .has_param("from")
                            .then(|| ("from".to_string(), "2000-01-01".to_string()))
                            .into_iter()
                            .collect();
                        kartoteka_queries::run_metric(&session, metric, &args).await?
                    }
                    None => session.sql(&name).await?,
                };
                times.push(t.elapsed().as_secs_f64());
                answer = arrow::util::pretty::pretty_format_batches(&r.batches)?.to_string();
            }
            times.sort_by(f64::total_cmp);
            out.push((name, times[0], times[times.len() / 2], answer));
        }
        Ok(out)
    }
    let snapshot = engine.lake().current().await?;
    let (mut files, mut deleted) = (0usize, 0u64);
    for state in snapshot.tables.values() {
        for f in &state.files {
            if let Some(d) = &f.deleted {
                files += 1;
                deleted += d.len();
            }
        }
    }
    let before = timed(engine).await?;
    let t = Instant::now();
    let (compacted, _) = engine.compact(usize::MAX).await?;
    let compact_s = t.elapsed().as_secs_f64();
    let after = timed(engine).await?;
    let mut statements = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        if b.3 != a.3 {
            bail!(
                "{} answered differently after compaction:\n{}\n{}",
                b.0,
                b.3,
                a.3
            );
        }
        statements.push(json!({
            "statement": b.0,
            "with_vectors": {"best_seconds": b.1, "median_seconds": b.2},
            "compacted": {"best_seconds": a.1, "median_seconds": a.2},
            "ratio_of_best": b.1 / a.1.max(1e-9),
        }));
    }
    let geo = |xs: &[(String, f64, f64, String)]| {
        (xs.iter().map(|x| x.1.max(1e-9).ln()).sum::<f64>() / xs.len() as f64).exp()
    };
    Ok(json!({
        "files_with_vectors": files,
        "deleted_rows": deleted,
        "compact_seconds": compact_s,
        "tables_compacted": compacted,
        "geomean_ratio_of_best": geo(&before) / geo(&after),
        "statements": statements,
    }))
}

/// The `interactions` query of a mapping.
fn interactions_query(mapping: &Mapping) -> String {
    mapping.tables["interactions"].query.clone()
}

async fn admin(url: &str, sql: &str) -> Result<()> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await?;
        sqlx::raw_sql(sql).execute(&pool).await?;
        pool.close().await;
    } else {
        let pool = sqlx::MySqlPool::connect(url).await?;
        sqlx::raw_sql(sql).execute(&pool).await?;
        pool.close().await;
    }
    Ok(())
}

/// Stream and decode every row of `query` without writing anything; returns rows.
async fn decode_only(source: &Source, query: &str) -> Result<u64> {
    let columns = source.describe(query).await?;
    let decoders: Vec<_> = columns
        .iter()
        .map(|c| c.decoder.context("unmappable column"))
        .collect::<Result<_>>()?;
    let mut n = 0u64;
    macro_rules! drain {
        ($rows:expr) => {{
            let mut rows = $rows;
            while let Some(row) = rows.try_next().await? {
                for (i, d) in decoders.iter().enumerate() {
                    std::hint::black_box(row.value(i, *d)?);
                }
                n += 1;
            }
        }};
    }
    match source {
        Source::Postgres(s) => drain!(s.rows(query)),
        Source::MySql(s) => drain!(s.rows(query)),
        Source::Sqlite(s) => drain!(s.rows(query)),
    }
    Ok(n)
}

/// The server's own command-line client reading `query` to /dev/null: seconds.
fn client_reference(url: &str, query: &str) -> Result<f64> {
    let flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let t = Instant::now();
    let status = if url.starts_with("postgres") {
        Command::new("psql")
            .arg(url)
            .arg("-q")
            .arg("-c")
            .arg(format!("\\copy ({flat}) to /dev/null"))
            .status()?
    } else {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (auth, db) = rest.split_once('/').context("database in URL")?;
        let (user, host) = auth.split_once('@').context("user in URL")?;
        let (host, port) = host.split_once(':').unwrap_or((host, "3306"));
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mariadb --quick -h {host} -P {port} -u {user} {db} -e \"$Q\" > /dev/null"
            ))
            .env("Q", &flat)
            .status()?
    };
    if !status.success() {
        bail!("the server's client failed: {status}");
    }
    Ok(t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("demo-crm.sqlite");
    let t = Instant::now();
    demo::generate(
        &db,
        DemoConfig {
            seed: args.seed,
            scale: args.scale,
            end: chrono::NaiveDate::from_ymd_opt(2025, 7, 1).context("date")?,
        },
    )
    .await?;
    let generate_s = t.elapsed().as_secs_f64();
    let mut results = Vec::new();
    let cursor_indexes = args.cursor_indexes;
    for (kind, server, mapping_text) in [
        ("postgres", &args.postgres, servers::POSTGRES_MAPPING),
        ("mysql", &args.mysql, servers::MYSQL_MAPPING),
    ] {
        if args.skip.iter().any(|s| s == kind) {
            continue;
        }
        let name = format!("kartoteka_bench_{}", std::process::id());
        let base = server.rsplit_once('/').context("URL with a database")?.0;
        let url = format!("{base}/{name}");
        admin(server, &format!("CREATE DATABASE {name}")).await?;
        let outcome = async {
            let t = Instant::now();
            let copied = servers::copy_to_server(&db, &url).await?;
            let load_s = t.elapsed().as_secs_f64();
            let mapping = Mapping::parse(mapping_text, std::path::Path::new("mapping.toml"))?;
            let query = interactions_query(&mapping);
            let reference_s = client_reference(&url, &query)?;

            let source = Source::open(&SourceSpec::new(url.clone())).await?;
            reset_peak();
            let t = Instant::now();
            let decoded = decode_only(&source, &query).await?;
            let decode_s = t.elapsed().as_secs_f64();
            let decode_rss = peak_rss_mb();

            let key = MasterKeySource::create_key_file(&dir.path().join(format!("{kind}.key")))?;
            let lake = std::sync::Arc::new(
                Lake::open_or_create(
                    LakeStore::local(&dir.path().join(format!("lake-{kind}")))?,
                    &key,
                )
                .await?,
            );
            let engine = Engine::new(lake, EngineConfig::default())?;
            reset_peak();
            let report = kartoteka_ingest::ingest(
                &engine,
                &source,
                &mapping,
                "bench",
                &NoProgress,
                IngestOptions::default(),
            )
            .await?;
            let ingest_rss = peak_rss_mb();

            if cursor_indexes {
                admin(&url, CURSOR_INDEXES).await?;
                if kind == "postgres" {
                    admin(&url, CURSOR_EXPRESSION_INDEXES).await?;
                }
            }
            // 1% of the CRM changes: updated deals and clients, new calls, deleted tasks.
            admin(
                &url,
                "UPDATE leads SET price = COALESCE(price, 0) + 1, modified_at = '2025-07-02 12:00:00' WHERE id % 100 = 0;
                 UPDATE contacts SET city = 'Казань', modified_at = '2025-07-02 12:00:00' WHERE id % 100 = 0;
                 INSERT INTO calls SELECT id + 100000000, contact_id, lead_id, user_id, direction, '2025-07-02 12:00:00',
                        duration_sec, result, note, NULL FROM calls WHERE id % 100 = 0;
                 DELETE FROM todo WHERE id % 100 = 0",
            )
            .await?;
            let mut incremental = Vec::new();
            for skip_reconciliation in [false, true] {
                let t = Instant::now();
                let r = kartoteka_ingest::ingest(
                    &engine,
                    &source,
                    &mapping,
                    "bench incremental",
                    &NoProgress,
                    IngestOptions {
                        skip_reconciliation,
                        ..IngestOptions::default()
                    },
                )
                .await?;
                let secs = t.elapsed().as_secs_f64();
                incremental.push(json!({
                    "key_reconciliation": !skip_reconciliation,
                    "seconds": secs,
                    "fraction_of_full_run": secs / report.seconds,
                    "rows_read": r.tables.iter().map(|t| t.rows).sum::<u64>(),
                    "rows_dropped": r.tables.iter().map(|t| t.rows_dropped).sum::<u64>(),
                    "reconcile_seconds": r.tables.iter().map(|t| t.reconcile_seconds).sum::<f64>(),
                    "check_seconds": r.check_seconds,
                    "tables": r.tables.iter().map(|t| json!({
                        "table": t.table, "mode": t.mode, "rows": t.rows, "seconds": t.seconds,
                        "rows_dropped": t.rows_dropped, "source_keys_from": t.source_keys_from,
                    })).collect::<Vec<_>>(),
                }));
            }
            let vectors = reads_over_delete_vectors(&engine).await?;
            let inter = report
                .tables
                .iter()
                .find(|t| t.table == "interactions")
                .context("interactions")?;
            let tables: Vec<_> = report
                .tables
                .iter()
                .map(|t| {
                    json!({"table": t.table, "rows": t.rows, "seconds": t.seconds,
                                "rows_per_second": t.rows as f64 / t.seconds.max(1e-9)})
                })
                .collect();
            anyhow::Ok(json!({
                "server": kind,
                "demo_rows_copied": copied,
                "copy_seconds": load_s,
                "interactions": {
                    "rows": decoded,
                    "server_client_seconds": reference_s,
                    "server_client_rows_per_second": decoded as f64 / reference_s,
                    "decode_only_seconds": decode_s,
                    "decode_only_rows_per_second": decoded as f64 / decode_s,
                    "decode_only_peak_rss_mb": decode_rss,
                    "ingest_seconds": inter.seconds,
                    "ingest_rows_per_second": inter.rows as f64 / inter.seconds,
                },
                "incremental_after_1pct_change": incremental,
                "reads_over_delete_vectors": vectors,
                "full_ingest": {
                    "seconds": report.seconds,
                    "check_seconds": report.check_seconds,
                    "rows": report.tables.iter().map(|t| t.rows).sum::<u64>(),
                    "peak_rss_mb": ingest_rss,
                    "tables": tables,
                },
            }))
        }
        .await;
        let drop = match kind {
            "postgres" => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        admin(server, &drop).await?;
        results.push(outcome?);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "bench": "ingest-from-servers",
            "scale": args.scale,
            "seed": args.seed,
            "cursor_indexes": args.cursor_indexes,
            "generate_seconds": generate_s,
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "results": results,
        }))?
    );
    Ok(())
}
