//! `kartoteka-bench`: generate the demo CRM at a scale, ingest it into an encrypted lake, run every
//! catalog metric, and print one JSON document with rows, bytes, seconds and peak memory per step.
//!
//! Peak memory is the process's VmHWM, reset before each step (Linux `clear_refs`), so each step's
//! figure is its own.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use kartoteka_engine::audit::{AuditConfig, AuditLog, Event, Outcome};
use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal, Role};
use kartoteka_ingest::demo::{self, DemoConfig};
use kartoteka_ingest::{Mapping, NoProgress, Source, SqliteSource};
use kartoteka_queries::Catalog;
use serde_json::json;

mod peers;
mod rss;

use rss::{peak_rss_mb, reset_peak};

#[derive(Debug, Parser)]
struct Args {
    /// Demo scale (1 ≈ 10 000 clients, 300 000 interactions).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Times each metric is run (the best and the median are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Audit entries appended for the audit throughput figure.
    #[arg(long, default_value_t = 2_000)]
    audit_entries: usize,
    /// Also run every metric on a plaintext Parquet export of the same data with DataFusion, and with
    /// DuckDB and Polars (Python packages installed by benches/peers.sh into a virtualenv).
    #[arg(long)]
    peers: bool,
    /// Only these metrics (comma-separated names; default: every metric but the security family,
    /// which reads the audit log a bench engine does not keep).
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Work in DIR and keep it: a later run with the same DIR reuses its generated CRM and lake
    /// (generation and ingest are then skipped and reported as null) — for measuring the metrics
    /// again after a change to the query path.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

/// Append `n` query-sized entries to a fresh audit log: every entry is fsynced before `append`
/// returns (the log's only policy), with the default checkpoint cadence (every 100 entries).
fn audit_throughput(dir: &std::path::Path, n: usize) -> Result<serde_json::Value> {
    let log = AuditLog::open(&dir.join("audit"), AuditConfig::default())?;
    let t = Instant::now();
    for i in 0..n {
        log.append(Event {
            actor: "analyst".into(),
            action: "query".into(),
            target: "lake".into(),
            details: json!({
                "sql": "SELECT stage, COUNT(*) FROM deals WHERE created_at >= $from GROUP BY stage",
                "rows": i, "bytes": 4096, "duration_ms": 12, "snapshot": 1,
            }),
            outcome: Outcome::Ok,
        })?;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(json!({
        "entries": n, "seconds": secs, "entries_per_second": n as f64 / secs,
        "fsync": "every entry (fdatasync before append returns)", "checkpoint_every": 100,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let temporary = tempfile::tempdir()?;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let db = dir.join("demo-crm.sqlite");
    let key_file = dir.join("master.key");
    let reuse = args.keep.is_some() && key_file.exists();
    let end = chrono_end();
    // A kept directory holds one scale and seed: a run asking for others is refused, not answered
    // with figures for the wrong data.
    let made_with = dir.join("bench-data.json");
    let wanted = json!({"scale": args.scale, "seed": args.seed, "end": end.to_string()});
    if reuse {
        let kept: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&made_with).with_context(|| format!("{}", made_with.display()))?,
        )?;
        anyhow::ensure!(
            kept == wanted,
            "{} holds data made with {kept}, not {wanted}: use another --keep directory",
            dir.display()
        );
    }
    let catalog = Catalog::builtin()?;
    // The security family reads the audit log, which a bench engine does not keep.
    let known: Vec<&str> = catalog
        .metrics()
        .iter()
        .filter(|m| m.family != kartoteka_queries::Family::Security)
        .map(|m| m.name.as_str())
        .collect();
    if let Some(unknown) = args.metrics.iter().find(|m| !known.contains(&m.as_str())) {
        anyhow::bail!(
            "no benchmarked metric {unknown:?}; metrics: {}",
            known.join(", ")
        );
    }

    let (generate, ingest, lake) = if reuse {
        let key = MasterKeySource::from_key_file(&key_file)?;
        let lake = Arc::new(Lake::open(LakeStore::local(&dir.join("lake"))?, &key).await?);
        (serde_json::Value::Null, serde_json::Value::Null, lake)
    } else {
        reset_peak();
        let t = Instant::now();
        let stats = demo::generate(
            &db,
            DemoConfig {
                seed: args.seed,
                scale: args.scale,
                end,
            },
        )
        .await?;
        let generate = json!({"seconds": t.elapsed().as_secs_f64(), "peak_rss_mb": peak_rss_mb(), "rows": stats});

        let key = MasterKeySource::create_key_file(&key_file)?;
        let lake =
            Arc::new(Lake::open_or_create(LakeStore::local(&dir.join("lake"))?, &key).await?);
        let mapping = Mapping::parse(demo::MAPPING, std::path::Path::new("demo-mapping.toml"))?;
        let source = Source::Sqlite(SqliteSource::open(&db).await?);
        reset_peak();
        let t = Instant::now();
        let ingest_engine = Engine::new(lake.clone(), EngineConfig::default())?;
        let report = kartoteka_ingest::ingest(
            &ingest_engine,
            &source,
            &mapping,
            "bench",
            &NoProgress,
            Default::default(),
        )
        .await?;
        let rows: u64 = report.tables.iter().map(|t| t.rows).sum();
        let bytes: u64 = report.tables.iter().map(|t| t.bytes).sum();
        let secs = t.elapsed().as_secs_f64();
        let ingest = json!({
            "seconds": secs, "rows": rows, "bytes": bytes, "rows_per_second": rows as f64 / secs,
            "peak_rss_mb": peak_rss_mb(), "tables": report.tables,
        });
        std::fs::write(&made_with, serde_json::to_vec(&wanted)?)?;
        (generate, ingest, lake)
    };

    let engine = Engine::new(Arc::clone(&lake), EngineConfig::default())?;
    // The manager with the most clients: the heaviest manager's view.
    let owner = engine.session(&Principal::local_owner()).await?;
    let top = owner
        .sql("SELECT owner_id FROM clients WHERE owner_id IS NOT NULL GROUP BY owner_id ORDER BY COUNT(*) DESC LIMIT 1")
        .await?;
    let staff_id = top.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .context("owner_id")?
        .value(0);
    let manager = Principal {
        user: format!("manager-{staff_id}"),
        role: Role::Manager,
        staff_id: Some(staff_id),
        team: vec![],
        preview_by: None,
    };
    let t = Instant::now();
    engine.session(&manager).await?;
    let manager_first_session = t.elapsed().as_secs_f64();
    // The fixed cost of a statement: a session (snapshot read and checked, tables registered), and a
    // query that reads one small table's footer and nothing else.
    let fixed = fixed_costs(&engine).await?;
    let mut metrics = Vec::new();
    let (mut log_owner, mut log_manager, mut managed) = (0.0, 0.0, 0.0);
    for metric in catalog
        .metrics()
        .iter()
        .filter(|m| known.contains(&m.name.as_str()))
        .filter(|m| args.metrics.is_empty() || args.metrics.contains(&m.name))
    {
        reset_peak();
        let mut entry = serde_json::Map::new();
        entry.insert("metric".into(), metric.name.clone().into());
        for who in ["unwrapped", "owner", "manager"] {
            if who == "manager" && !metric.allows(kartoteka_engine::Role::Manager) {
                entry.insert(who.into(), serde_json::Value::Null);
                continue;
            }
            let mut times = Vec::new();
            let mut result_rows = 0;
            for _ in 0..args.runs.max(1) {
                // Session set-up is timed with the query: the policy is resolved per session.
                let t = Instant::now();
                let session = match who {
                    "unwrapped" => engine.unwrapped_session_for_benchmarks().await?,
                    "owner" => engine.session(&Principal::local_owner()).await?,
                    _ => engine.session(&manager).await?,
                };
                let args = peers::bench_args(metric);
                let r = kartoteka_queries::run_metric(&session, metric, &args)
                    .await
                    .with_context(|| metric.name.clone())?;
                times.push(t.elapsed().as_secs_f64());
                result_rows = r.rows();
            }
            times.sort_by(f64::total_cmp);
            entry.insert(
                who.into(),
                json!({"result_rows": result_rows, "best_seconds": times[0], "median_seconds": times[times.len() / 2]}),
            );
        }
        let best = |who: &str| entry[who]["best_seconds"].as_f64().unwrap_or(f64::NAN);
        let (base, owner_t, manager_t) = (best("unwrapped"), best("owner"), best("manager"));
        log_owner += (owner_t / base).ln();
        if manager_t.is_finite() {
            log_manager += (manager_t / base).ln();
            managed += 1.0;
        }
        entry.insert("owner_over_unwrapped".into(), (owner_t / base).into());
        entry.insert("manager_over_unwrapped".into(), (manager_t / base).into());
        entry.insert("peak_rss_mb".into(), peak_rss_mb().into());
        metrics.push(serde_json::Value::Object(entry));
    }
    let n = metrics.len().max(1) as f64;
    let policy = json!({
        "geomean_owner_over_unwrapped": (log_owner / n).exp(),
        "geomean_manager_over_unwrapped": (log_manager / managed).exp(),
        "manager": manager.user,
        "manager_first_session_seconds": manager_first_session,
        "fixed_costs": fixed,
    });
    let audit = audit_throughput(temporary.path(), args.audit_entries)?;
    let peers = if args.peers {
        Some(
            peers::run(
                &engine,
                &catalog,
                &dir.join("plain"),
                args.runs,
                &metrics,
                &manager,
            )
            .await?,
        )
    } else {
        None
    };
    let out = json!({
        "benchmark": "kartoteka-demo",
        "scale": args.scale,
        "seed": args.seed,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "generate": generate,
        "ingest": ingest,
        "metrics": metrics,
        "policy_overhead": policy,
        "audit": audit,
        "peers": peers,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Median seconds of an owner's session set-up, and of set-up plus a one-row query on a small table.
async fn fixed_costs(engine: &Engine) -> Result<serde_json::Value> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut session, mut query) = (Vec::new(), Vec::new());
    // KARTOTEKA_BENCH_FIXED_RUNS=N repeats the loop N times (default 50): long enough to profile.
    let runs = std::env::var("KARTOTEKA_BENCH_FIXED_RUNS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(50)
        .max(1);
    for _ in 0..runs {
        let t = Instant::now();
        let s = engine.session(&Principal::local_owner()).await?;
        session.push(t.elapsed().as_secs_f64());
        s.sql("SELECT stage FROM pipeline_stages LIMIT 1").await?;
        query.push(t.elapsed().as_secs_f64());
    }
    Ok(
        json!({"owner_session_seconds": median(session), "session_and_small_query_seconds": median(query)}),
    )
}

/// A fixed end date, so runs at the same scale and seed see the same data.
fn chrono_end() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, 7, 1).expect("valid date")
}
