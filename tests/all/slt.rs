//! The catalog's hand-checked specification: `tests/all/slt/*.slt` over the tiny CRM in `tests/all/slt/crm.sql`.
//!
//! Each block is
//! ```text
//! query
//! metric NAME param=value ...
//! ----
//! cell cell cell        (one row per line, cells separated by spaces; NULL for null)
//! ```
//! The expected rows were worked out on paper from `crm.sql` (each file says how), not by running the
//! SQL. Cells compare as text, or as numbers to 1e-9 when both are numbers.

use crate::common;

use std::path::Path;

use crate::common::rows;
use kartoteka_engine::{Engine, EngineConfig, Principal};
use kartoteka_ingest::demo;
use kartoteka_queries::Catalog;

struct Case {
    file: String,
    line: usize,
    metric: String,
    args: Vec<(String, String)>,
    want: Vec<Vec<String>>,
}

fn parse(file: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(file).expect("slt file");
    let name = file
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut cases = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l != "query" {
            assert!(
                l.is_empty() || l.starts_with('#'),
                "{name}:{}: unexpected {l:?}",
                i + 1
            );
            i += 1;
            continue;
        }
        let line = i + 1;
        let call: Vec<&str> = lines[i + 1].split_whitespace().collect();
        assert_eq!(
            call.first(),
            Some(&"metric"),
            "{name}:{}: expected `metric NAME ...`",
            i + 2
        );
        let args = call[2..]
            .iter()
            .map(|a| {
                let (k, v) = a.split_once('=').expect("param=value");
                (k.to_string(), v.to_string())
            })
            .collect();
        assert_eq!(lines[i + 2].trim(), "----", "{name}:{}", i + 3);
        let mut want = Vec::new();
        i += 3;
        while i < lines.len() && !lines[i].trim().is_empty() {
            want.push(lines[i].split_whitespace().map(str::to_string).collect());
            i += 1;
        }
        cases.push(Case {
            file: name.clone(),
            line,
            metric: call[1].to_string(),
            args,
            want,
        });
    }
    cases
}

fn same(got: &str, want: &str) -> bool {
    if got == want {
        return true;
    }
    match (got.parse::<f64>(), want.parse::<f64>()) {
        (Ok(g), Ok(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
        _ => false,
    }
}

#[tokio::test]
async fn hand_checked_catalog_specification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crm.sqlite");
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/all/slt/crm.sql"
    ))
    .expect("crm.sql");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
        // The demo CRM's own schema, then the hand-checkable rows.
        sqlx::raw_sql(demo::SCHEMA)
            .execute(&pool)
            .await
            .expect("schema");
        sqlx::raw_sql(sqlx::AssertSqlSafe(script))
            .execute(&pool)
            .await
            .expect("crm.sql runs");
        pool.close().await;
    }
    let (_source, lake) = common::ingest_demo_source(dir.path(), &db).await;
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let catalog = Catalog::builtin().expect("catalog");

    let mut files: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/all/slt"))
            .expect("slt dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "slt"))
            .collect();
    files.sort();
    let mut covered = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for file in &files {
        for case in parse(file) {
            covered.insert(case.metric.clone());
            let metric = catalog.get(&case.metric).expect("known metric");
            let got = match kartoteka_queries::run_metric(&session, metric, &case.args).await {
                Ok(r) => rows(&r.batches),
                Err(e) => {
                    failures.push(format!("{}:{} {}: {e}", case.file, case.line, case.metric));
                    continue;
                }
            };
            let ok = got.len() == case.want.len()
                && got
                    .iter()
                    .zip(&case.want)
                    .all(|(g, w)| g.len() == w.len() && g.iter().zip(w).all(|(a, b)| same(a, b)));
            if !ok {
                failures.push(format!(
                    "{}:{} {}:\n  got  {got:?}\n  want {:?}",
                    case.file, case.line, case.metric, case.want
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every non-security metric has a hand-checked case.
    let missing: Vec<&str> = catalog
        .metrics()
        .iter()
        .filter(|m| m.family != kartoteka_queries::Family::Security && !covered.contains(&m.name))
        .map(|m| m.name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a .slt case: {missing:?}"
    );
}
