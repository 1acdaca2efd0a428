//! `kartoteka-bench`: generate the demo CRM at a scale, ingest it into an encrypted lake, run every
//! catalog metric, and print one JSON document with rows, bytes, seconds and peak memory per step.
//!
//! Peak memory is the process's VmHWM, reset before each step (Linux `clear_refs`), so each step's
//! figure is its own.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal};
use kartoteka_ingest::demo::{self, DemoConfig};
use kartoteka_ingest::{Mapping, NoProgress, SqliteSource};
use kartoteka_queries::Catalog;
use serde_json::json;

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
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("demo-crm.sqlite");
    let end = chrono_end();

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
    let generate =
        json!({"seconds": t.elapsed().as_secs_f64(), "peak_rss_mb": peak_rss_mb(), "rows": stats});

    let key = MasterKeySource::create_key_file(&dir.path().join("master.key"))?;
    let lake =
        Arc::new(Lake::open_or_create(LakeStore::local(&dir.path().join("lake"))?, &key).await?);
    let mapping = Mapping::parse(demo::MAPPING, std::path::Path::new("demo-mapping.toml"))?;
    let source = SqliteSource::open(&db).await?;
    reset_peak();
    let t = Instant::now();
    let report =
        kartoteka_ingest::ingest_sqlite(&lake, &source, &mapping, "bench", &NoProgress).await?;
    let rows: u64 = report.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = report.tables.iter().map(|t| t.bytes).sum();
    let secs = t.elapsed().as_secs_f64();
    let ingest = json!({
        "seconds": secs, "rows": rows, "bytes": bytes, "rows_per_second": rows as f64 / secs,
        "peak_rss_mb": peak_rss_mb(), "tables": report.tables,
    });

    let engine = Engine::new(Arc::clone(&lake), EngineConfig::default())?;
    let catalog = Catalog::builtin()?;
    let mut metrics = Vec::new();
    for metric in catalog.metrics() {
        reset_peak();
        let mut times = Vec::new();
        let mut result_rows = 0;
        for _ in 0..args.runs.max(1) {
            let session = engine.session(&Principal::local_owner()).await?;
            let t = Instant::now();
            let r = kartoteka_queries::run_metric(
                &session,
                metric,
                &[("from".into(), "2000-01-01".into())],
            )
            .await
            .with_context(|| metric.name.clone())?;
            times.push(t.elapsed().as_secs_f64());
            result_rows = r.rows();
        }
        times.sort_by(f64::total_cmp);
        metrics.push(json!({
            "metric": metric.name, "result_rows": result_rows, "best_seconds": times[0],
            "median_seconds": times[times.len() / 2], "peak_rss_mb": peak_rss_mb(),
        }));
    }
    let out = json!({
        "benchmark": "kartoteka-demo",
        "scale": args.scale,
        "seed": args.seed,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "generate": generate,
        "ingest": ingest,
        "metrics": metrics,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// A fixed end date, so runs at the same scale and seed see the same data.
fn chrono_end() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, 7, 1).expect("valid date")
}
