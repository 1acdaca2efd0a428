//! The same metrics on a plaintext Parquet export of the lake: DataFusion (no encryption, no policy),
//! DuckDB and Polars (their Python packages, run by `benches/peers.py` in a virtualenv that
//! `benches/peers.sh` creates). One process per engine, same machine, best of `runs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kartoteka_engine::{Engine, Principal, model};
use kartoteka_queries::{Catalog, VIEWS};
use serde_json::{Value, json};

/// The parameters a bench run uses for `metric` (the same as the encrypted runs).
pub(crate) fn bench_args(metric: &kartoteka_queries::Metric) -> Vec<(String, String)> {
    metric
        .has_param("from")
        .then(|| ("from".to_string(), "2000-01-01".to_string()))
        .into_iter()
        .collect()
}

/// A bound parameter as a DuckDB/Polars SQL literal.
fn literal(v: &ScalarValue) -> Result<String> {
    Ok(match v {
        ScalarValue::TimestampMicrosecond(Some(us), _) => {
            let t = chrono::DateTime::from_timestamp_micros(*us).context("timestamp in range")?;
            format!("TIMESTAMPTZ '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
        }
        ScalarValue::Int64(Some(i)) => i.to_string(),
        ScalarValue::Utf8(Some(s)) => format!("'{}'", s.replace('\'', "''")),
        ScalarValue::Date32(Some(d)) => format!(
            "DATE '{}'",
            chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163).context("date")?
        ),
        other => bail!("no literal form for {other:?}"),
    })
}

/// Our SQL in the peers' words. The benchmark reports in UTC, where `local(ts)` is `ts` itself; the
/// peers have no `local`. Our exact percentile is DuckDB's and Polars' `quantile_cont` (linear
/// interpolation at p·(n−1)); the ordered aggregate `first_value(x ORDER BY …)` is DuckDB's `first`.
fn peer_dialect(sql: &str) -> String {
    sql.replace("local(", "(")
        .replace("percentile_exact(", "quantile_cont(")
        .replace("first_value(", "first(")
}

fn substitute(sql: &str, values: &HashMap<String, ScalarValue>) -> Result<String> {
    let mut names: Vec<&String> = values.keys().collect();
    // longest first, so $as_of is not taken for $a…
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = peer_dialect(sql);
    for n in names {
        out = out.replace(&format!("${n}"), &literal(&values[n])?);
    }
    Ok(out)
}

pub(crate) async fn run(
    engine: &Engine,
    catalog: &Catalog,
    dir: &Path,
    runs: usize,
    encrypted: &[Value],
    manager: &Principal,
) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    // Export every table in plaintext (bench-only, in the bench's temporary directory).
    let owner = engine.session(&Principal::local_owner()).await?;
    // Uncompressed, as the parquet crate writes by default — or, with KARTOTEKA_BENCH_PLAIN_ZSTD set,
    // zstd level 1 as the lake is: how much of the gap is decompression rather than decryption.
    let properties = std::env::var_os("KARTOTEKA_BENCH_PLAIN_ZSTD").map(|_| {
        parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::try_new(1).expect("level 1"),
            ))
            .build()
    });
    for t in model::tables() {
        let r = owner.sql(&format!("SELECT * FROM {}", t.name)).await?;
        let file = std::fs::File::create(dir.join(format!("{}.parquet", t.name)))?;
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&r.schema), properties.clone())?;
        for b in &r.batches {
            w.write(b)?;
        }
        w.close()?;
    }
    // DataFusion over the plaintext files, with file statistics as DataFusion defaults — or, with
    // KARTOTEKA_BENCH_PLAIN_WITHOUT_STATISTICS set, without them, as our sessions run (the policy
    // barrier hides statistics): how much of the gap is join planning without row counts.
    let with_statistics = std::env::var_os("KARTOTEKA_BENCH_PLAIN_WITHOUT_STATISTICS").is_none();
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new()
            .set_bool("datafusion.execution.collect_statistics", with_statistics),
    );
    for t in model::tables() {
        ctx.register_parquet(
            t.name,
            dir.join(format!("{}.parquet", t.name))
                .to_string_lossy()
                .as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    }
    ctx.register_udf(kartoteka_engine::zone::local_udf(owner.time_zone()));
    // Our sessions' faster zoned date_trunc too: this side measures what encryption and policy cost.
    ctx.register_udf(kartoteka_engine::calendar::date_trunc_udf());
    kartoteka_engine::percentile::register(&ctx);
    for v in VIEWS {
        let view = ctx.sql(v.sql).await?.into_view();
        ctx.register_table(v.name, view)?;
    }
    let now = owner.snapshot().committed_at;
    let mut queries = Vec::new();
    let mut df_times = HashMap::new();
    // The metrics the encrypted side ran (all but the security family, or the bench's --metrics).
    let ran: Vec<&str> = encrypted
        .iter()
        .filter_map(|e| e["metric"].as_str())
        .collect();
    for m in catalog
        .metrics()
        .iter()
        .filter(|m| ran.contains(&m.name.as_str()))
    {
        let values = kartoteka_queries::bind(m, &bench_args(m), now, owner.time_zone())?;
        let mut best = f64::INFINITY;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let df = ctx.sql(&m.sql).await?.with_param_values(ParamValues::Map(
                values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
            ))?;
            df.collect()
                .await
                .with_context(|| format!("{} on plaintext", m.name))?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        df_times.insert(m.name.clone(), best);
        if std::env::var_os("KARTOTEKA_BENCH_EXPLAIN").is_some() {
            // Both plans with their metrics, to stderr: where the time of each side goes.
            let sql = format!("EXPLAIN ANALYZE {}", substitute(&m.sql, &values)?);
            let plain = ctx.sql(&sql).await?.collect().await?;
            for v in VIEWS {
                owner.register_view(v.name, v.sql).await?;
            }
            let ours = owner.sql(&sql).await?;
            eprintln!(
                "== {} — DataFusion on plaintext\n{}\n== {} — ours, owner\n{}",
                m.name,
                arrow::util::pretty::pretty_format_batches(&plain)?,
                m.name,
                arrow::util::pretty::pretty_format_batches(&ours.batches)?
            );
            if m.allows(kartoteka_engine::Role::Manager) {
                let session = engine.session(manager).await?;
                for v in VIEWS {
                    session.register_view(v.name, v.sql).await?;
                }
                let theirs = session
                    .explain_analyze_for_benchmarks(&substitute(&m.sql, &values)?)
                    .await?;
                eprintln!("== {} — ours, {}\n{theirs}", m.name, manager.user);
            }
        }
        queries.push(json!({"metric": m.name, "sql": substitute(&m.sql, &values)?}));
    }
    let spec = json!({
        "dir": dir,
        "tables": model::table_names(),
        "views": VIEWS.iter().map(|v| json!({"name": v.name, "sql": peer_dialect(v.sql)})).collect::<Vec<_>>(),
        "queries": queries,
        "runs": runs.max(1),
    });
    let spec_path = dir.join("queries.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&spec_path)
        .output()?;
    if !out.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let peers: Value = serde_json::from_slice(&out.stdout).context("peers.py prints JSON")?;
    // Ratios against DuckDB on plaintext.
    let mut rows = Vec::new();
    let (mut log_owner, mut log_manager, mut n, mut managed) = (0.0, 0.0, 0.0, 0.0);
    for e in encrypted {
        let name = e["metric"].as_str().unwrap_or_default();
        let Some(duck) = peers["duckdb"][name]["best_seconds"].as_f64() else {
            rows.push(json!({"metric": name, "duckdb_error": peers["duckdb"][name]["error"]}));
            continue;
        };
        let owner_t = e["owner"]["best_seconds"].as_f64().unwrap_or(f64::NAN);
        let manager_t = e["manager"]["best_seconds"].as_f64().unwrap_or(f64::NAN);
        log_owner += (owner_t / duck).ln();
        n += 1.0;
        if manager_t.is_finite() {
            log_manager += (manager_t / duck).ln();
            managed += 1.0;
        }
        rows.push(json!({
            "metric": name,
            "encrypted_owner": owner_t,
            "encrypted_manager": manager_t,
            "datafusion_plain": df_times.get(name),
            "duckdb_plain": duck,
            "polars_plain": peers["polars"][name]["best_seconds"],
            "polars_error": peers["polars"][name]["error"],
            "owner_over_duckdb": owner_t / duck,
        }));
    }
    Ok(json!({
        "metrics": rows,
        "geomean_owner_over_duckdb": (log_owner / n).exp(),
        "geomean_manager_over_duckdb": (log_manager / managed).exp(),
        "versions": peers["versions"],
    }))
}
