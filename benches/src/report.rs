//! `kartoteka-report-bench`: time rendering reports over the demo lake at a scale — an owner's weekly
//! report of 10 panels (SVG + PNG each), and a 5-panel manager report fanned out to 20 managers, each
//! copy under its manager's own policy — and print one JSON document.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal, Role};
use kartoteka_queries::Catalog;
use kartoteka_reports::spec::{self, ReportSpec};
use serde_json::json;

mod demo_lake;

#[derive(Debug, Parser)]
struct Args {
    /// Demo scale (1 ≈ 10 000 clients, 300 000 interactions).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Times the owner's report is rendered (first, best and median are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Managers in the fan-out.
    #[arg(long, default_value_t = 20)]
    managers: usize,
}

const OWNER_WEEKLY: &str = r#"
id = "owner-weekly"
title = "Неделя компании"
schedule = "0 8 * * MON"
formats = ["svg", "png"]
[audience]
roles = ["owner"]
[[panels]]
metric = "revenue_by_month"
[[panels]]
metric = "revenue_by_manager"
[[panels]]
metric = "funnel_conversion"
[[panels]]
metric = "activity_by_manager"
[[panels]]
metric = "cohort_retention"
[[panels]]
metric = "avg_deal_size"
[[panels]]
metric = "win_rate"
[[panels]]
metric = "plan_vs_actual"
[[panels]]
metric = "new_clients"
[[panels]]
metric = "manager_scorecard"
"#;

const MANAGER_WEEKLY: &str = r#"
id = "manager-weekly"
title = "Моя неделя"
schedule = "0 8 * * MON"
formats = ["svg", "png"]
[audience]
roles = ["manager"]
[[panels]]
metric = "revenue_by_month"
[[panels]]
metric = "funnel_conversion"
[[panels]]
metric = "activity_by_manager"
[[panels]]
metric = "avg_deal_size"
[[panels]]
metric = "overdue_tasks"
"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = demo_lake::generate(dir.path(), args.scale).await?;
    let key = MasterKeySource::create_key_file(&dir.path().join("master.key"))?;
    let lake =
        Arc::new(Lake::open_or_create(LakeStore::local(&dir.path().join("lake"))?, &key).await?);
    let engine = Engine::new(lake.clone(), EngineConfig::default())?;
    demo_lake::ingest(&engine, &db).await?;

    let catalog = Catalog::builtin()?;
    let users = BTreeMap::new();
    let cx = spec::Context {
        catalog: &catalog,
        users: &users,
        default_zone: "UTC",
    };
    let load = |text: &str| {
        ReportSpec::parse(text, std::path::Path::new("bench.toml"), &cx)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let owner_spec = load(OWNER_WEEKLY)?;
    let manager_spec = load(MANAGER_WEEKLY)?;

    let owner = Principal::local_owner();
    let mut times = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..args.runs.max(1) {
        let t = Instant::now();
        let r = kartoteka_reports::render::render(
            &engine,
            &catalog,
            &owner_spec,
            &owner,
            engine.lake().current().await?,
        )
        .await?;
        times.push(t.elapsed().as_secs_f64());
        bytes = r
            .panels
            .iter()
            .flat_map(|p| &p.files)
            .map(|(_, b)| b.len())
            .sum();
    }
    let first = times[0];
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);

    // The managers with the most clients.
    let session = engine.session(&owner).await?;
    let top = session
        .sql(&format!(
            "SELECT owner_id FROM clients WHERE owner_id IS NOT NULL GROUP BY owner_id ORDER BY COUNT(*) DESC LIMIT {}",
            args.managers
        ))
        .await?;
    let mut managers = Vec::new();
    for b in &top.batches {
        let ids = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .context("owner_id")?;
        managers.extend(ids.values().iter().map(|id| Principal {
            user: format!("manager-{id}"),
            role: Role::Manager,
            staff_id: Some(*id),
            team: vec![],
            preview_by: None,
        }));
    }
    let t = Instant::now();
    let mut per = Vec::new();
    for m in &managers {
        let t = Instant::now();
        kartoteka_reports::render::render(
            &engine,
            &catalog,
            &manager_spec,
            m,
            engine.lake().current().await?,
        )
        .await?;
        per.push(t.elapsed().as_secs_f64());
    }
    let fan_out = t.elapsed().as_secs_f64();

    let out = json!({
        "scale": args.scale,
        "owner_report": {
            "panels": owner_spec.panels.len(), "formats": ["svg", "png"], "runs": times.len(),
            "first_seconds": first, "best_seconds": best, "median_seconds": median(times.clone()),
            "bytes": bytes,
        },
        "manager_fan_out": {
            "managers": managers.len(), "panels": manager_spec.panels.len(),
            "total_seconds": fan_out, "median_per_manager_seconds": median(per),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
