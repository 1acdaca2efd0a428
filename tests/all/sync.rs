//! Incremental sync and crash safety, on the embedded SQLite source (the same code serves the servers).
//!
//! The oracle is a full load of the source *as it is now* into a fresh lake (full loads are proven
//! against the source's own SQL by `oracle.rs` and `servers.rs`): after every incremental run the
//! lake must hold exactly that — every table, every value, each key once.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal};
use kartoteka_ingest::demo;
use kartoteka_ingest::{IngestOptions, IngestReport, KeysFrom, Mapping, Source, SqliteSource};
use rand::{Rng, SeedableRng};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

/// A writable connection to the source (the CRM itself changing).
async fn crm(db: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(db))
        .await
        .expect("writable source")
}

async fn new_engine(dir: &Path) -> Engine {
    std::fs::create_dir_all(dir).expect("dir");
    let store = LakeStore::local(&dir.join("lake")).expect("store");
    let key = MasterKeySource::create_key_file(&dir.join("master.key")).expect("key");
    let lake = Arc::new(Lake::open_or_create(store, &key).await.expect("lake"));
    Engine::new(lake, EngineConfig::default()).expect("engine")
}

async fn run(engine: &Engine, db: &Path, full: bool) -> IngestReport {
    let source = Source::Sqlite(SqliteSource::open(db).await.expect("source"));
    let mapping = Mapping::parse(demo::MAPPING, Path::new("demo-mapping.toml")).expect("mapping");
    common::ingest_reconciled(
        engine,
        &source,
        &mapping,
        IngestOptions {
            full,
            ..IngestOptions::default()
        },
    )
    .await
}

async fn contents(engine: &Engine) -> Vec<(String, Vec<Vec<String>>)> {
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    common::lake_contents(&session).await
}

/// What a full load of the source as it is now gives.
async fn fresh_full_load(dir: &Path, db: &Path) -> Vec<(String, Vec<Vec<String>>)> {
    let _ = std::fs::remove_dir_all(dir);
    let engine = new_engine(dir).await;
    run(&engine, db, true).await;
    contents(&engine).await
}

fn table<'a>(r: &'a IngestReport, name: &str) -> &'a kartoteka_ingest::run::TableReport {
    r.tables.iter().find(|t| t.table == name).expect("table")
}

async fn count(pool: &SqlitePool, sql: &str) -> u64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .expect("count") as u64
}

#[tokio::test]
async fn incremental_runs_read_only_changes_and_end_equal_to_a_full_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::demo_sqlite(dir.path(), 0.03, 5).await;
    let engine = new_engine(&dir.path().join("a")).await;
    let first = run(&engine, &db, false).await;
    assert!(
        first
            .tables
            .iter()
            .all(|t| t.mode == kartoteka_ingest::LoadMode::Full),
        "first run"
    );

    // The CRM changes: updated deals and clients, new calls, hard-deleted tasks, and paid invoices
    // cancelled (they leave the `payments` mapping's WHERE: a delete seen through the mapping).
    let pool = crm(&db).await;
    let leads = count(&pool, "SELECT COUNT(*) FROM leads").await;
    let max_modified: String = sqlx::query_scalar("SELECT MAX(modified_at) FROM leads")
        .fetch_one(&pool)
        .await
        .expect("max");
    for sql in [
        "UPDATE leads SET price_kopecks = COALESCE(price_kopecks, 0) + 100, modified_at = '2025-07-02 10:00:00' WHERE id % 17 = 0",
        "UPDATE contacts SET city = 'Казань', modified_at = '2025-07-02 09:00:00' WHERE id % 11 = 0",
        "INSERT INTO calls (id, contact_id, lead_id, user_id, direction, started_at, duration_sec, result, note)
         SELECT id + 1000000, contact_id, lead_id, user_id, direction, '2025-07-02 11:00:00', duration_sec, result, note
         FROM calls WHERE id % 23 = 0",
        "DELETE FROM todo WHERE id % 13 = 0",
        "UPDATE invoices SET status = 'cancelled', modified_at = '2025-07-02 12:00:00' WHERE status = 'paid' AND id % 7 = 0",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("change");
    }
    let second = run(&engine, &db, false).await;
    let after_second = engine.lake().current().await.expect("snapshot");
    let want = fresh_full_load(&dir.path().join("b"), &db).await;
    common::assert_same_contents(&want, &contents(&engine).await, "after the changes");

    // deals read only what changed, plus the overlap window behind the old cursor — counted here by
    // SQLite itself.
    let deals = table(&second, "deals");
    assert_eq!(deals.mode, kartoteka_ingest::LoadMode::Incremental);
    let expected = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM leads WHERE modified_at >= datetime('{max_modified}', '-300 seconds') OR modified_at IS NULL"
        ),
    )
    .await;
    assert_eq!(deals.rows, expected, "deals read");
    assert!(
        deals.rows * 10 < leads,
        "{} of {leads} deals read",
        deals.rows
    );
    assert!(
        deals.rows_dropped > 0,
        "older versions of the updated deals dropped"
    );
    // Deleted tasks and cancelled payments are gone; new calls are there.
    assert!(table(&second, "tasks").rows_dropped > 0);
    assert!(table(&second, "payments").rows_dropped > 0);
    assert!(table(&second, "interactions").rows < table(&first, "interactions").rows / 5);
    // Tables without a cursor are reloaded in full every run.
    assert_eq!(
        table(&second, "pipeline_stages").mode,
        kartoteka_ingest::LoadMode::Full
    );
    // Where the source's key sets came from: a full load fingerprints the rows it reads; an
    // incremental table keyed by an integer asks SQLite for count and sums — and `ingest_reconciled`
    // has checked each against the lake's, read back from the encrypted files by Rust.
    for t in &first.tables {
        assert_eq!(t.source_keys_from, Some(KeysFrom::RowsRead), "{}", t.table);
    }
    for t in &second.tables {
        let want = match t.mode {
            kartoteka_ingest::LoadMode::Full => KeysFrom::RowsRead,
            kartoteka_ingest::LoadMode::Incremental => KeysFrom::SourceAggregate,
        };
        assert_eq!(t.source_keys_from, Some(want), "{}", t.table);
    }

    // Nothing changed: a third run reads at most the overlap window and changes nothing.
    let third = run(&engine, &db, false).await;
    assert!(table(&third, "deals").rows <= deals.rows);
    common::assert_same_contents(&want, &contents(&engine).await, "after an idle run");
    // The calls added before the second run are read again (they sit inside the overlap window)
    // with the updated_at the lake holds: the same rows, so they stay where they are — no file is
    // rewritten and nothing counts as dropped.
    let calls = table(&third, "interactions");
    assert!(calls.rows > 0, "the overlap window re-read the new calls");
    assert_eq!(calls.rows_dropped, 0);
    let paths = |s: &kartoteka_engine::Snapshot| -> Vec<String> {
        s.tables["interactions"]
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect()
    };
    assert_eq!(
        paths(&engine.lake().current().await.expect("snapshot")),
        paths(&after_second),
        "an idle run rewrites no interactions file"
    );
    let snapshots = engine.lake().snapshot_ids().await.expect("ids").len();
    assert_eq!(snapshots, 3, "one snapshot per run");
    // Compaction: the tables incremental runs left in several files become one file each, with
    // the same contents and cursors.
    let before = engine.lake().current().await.expect("snapshot");
    let (tables, after) = engine.compact(1).await.expect("compacts");
    let after = after.expect("something to compact");
    assert!(tables.iter().any(|t| t == "interactions"), "{tables:?}");
    for (name, state) in &after.tables {
        assert!(
            state.files.len() <= 1,
            "{name}: {} files",
            state.files.len()
        );
        assert_eq!(state.cursor, before.tables[name].cursor, "{name}");
    }
    common::assert_same_contents(&want, &contents(&engine).await, "after compaction");
    assert!(
        third
            .tables
            .iter()
            .filter(|t| t.mode == kartoteka_ingest::LoadMode::Incremental)
            .all(|t| t.cursor_before.is_some() && t.cursor_after.is_some())
    );
}

/// A row the CRM inserts with an `updated_at` behind the cursor is never read by an incremental run;
/// with a row deleted at the same time the counts agree, so no delete is looked for — and the key
/// checksum SQLite computes differs from the lake's: the run commits nothing and says what to do.
#[tokio::test]
async fn a_change_the_cursor_cannot_see_is_caught_by_the_key_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::demo_sqlite(dir.path(), 0.02, 9).await;
    let engine = new_engine(&dir.path().join("a")).await;
    let first = run(&engine, &db, false).await;
    let pool = crm(&db).await;
    let tasks = count(&pool, "SELECT COUNT(*) FROM todo").await;
    for sql in [
        "DELETE FROM todo WHERE id = (SELECT MIN(id) FROM todo)",
        "INSERT INTO todo (id, assignee_id, contact_id, lead_id, todo_type, created_at, deadline_at, done_at, modified_at)
         SELECT MAX(id) + 1, assignee_id, contact_id, lead_id, todo_type, '2020-01-01 09:00:00', NULL, NULL,
                '2020-01-01 09:00:00' FROM todo",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("change");
    }
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM todo").await, tasks);
    let source = Source::Sqlite(SqliteSource::open(&db).await.expect("source"));
    let mapping = Mapping::parse(demo::MAPPING, Path::new("demo-mapping.toml")).expect("mapping");
    let err = common::ingest_error(&engine, &source, &mapping).await;
    assert!(
        err.contains("reconciliation failed, nothing was committed")
            && err.contains("table tasks")
            && err.contains("--full"),
        "{err}"
    );
    assert!(!err.contains("table interactions"), "{err}");
    assert_eq!(
        engine.lake().current().await.expect("snapshot").id,
        first.snapshot_id,
        "nothing committed"
    );
    // A full load takes the source as it is.
    let full = run(&engine, &db, true).await;
    assert_eq!(table(&full, "tasks").live_rows, tasks);
    common::assert_same_contents(
        &fresh_full_load(&dir.path().join("b"), &db).await,
        &contents(&engine).await,
        "after the full load",
    );
}

/// Kill `kartoteka ingest` (SIGKILL) at random moments while the CRM keeps changing; after every kill
/// a run to completion must leave the lake exactly equal to the source — nothing lost, nothing twice.
#[tokio::test]
async fn a_killed_ingest_restarts_and_ends_with_exactly_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    common::ok(&home, &["demo", "--scale", "0.02", "--end", "2025-07-01"]);
    let db = home.join("demo-crm.sqlite");
    let pool = crm(&db).await;
    // How long a run takes here, so kills land anywhere inside one.
    let t = std::time::Instant::now();
    common::ok(&home, &["ingest"]);
    let span_ms = (t.elapsed().as_millis() as u64).max(50);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261129);
    let mut interrupted = 0;
    let runs = 20;
    for i in 0..runs {
        // The CRM changes between runs (and so, in the killed run's source snapshot or not).
        let stamp = format!("2025-07-{:02} 10:{:02}:00", 2 + i / 10, i % 60);
        let changes = [
            format!("UPDATE leads SET price_kopecks = COALESCE(price_kopecks, 0) + 1, modified_at = '{stamp}' WHERE id % {} = 0", rng.random_range(5..40)),
            format!("INSERT INTO calls (id, contact_id, lead_id, user_id, direction, started_at, duration_sec, result, note)
                     SELECT id + {}, contact_id, lead_id, user_id, direction, '{stamp}', duration_sec, result, note FROM calls WHERE id % 53 = 0 AND id < 1000000",
                    (i as i64 + 1) * 1_000_000),
            format!("DELETE FROM todo WHERE id % {} = 0", rng.random_range(50..200)),
            format!("UPDATE contacts SET phone = NULL, modified_at = '{stamp}' WHERE id % {} = 0", rng.random_range(20..90)),
        ];
        for sql in &changes {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await
                .expect("change");
        }
        let mut child = common::kartoteka()
            .arg("--dir")
            .arg(&home)
            .arg("ingest")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawns");
        std::thread::sleep(std::time::Duration::from_millis(
            rng.random_range(0..span_ms),
        ));
        if child.try_wait().expect("wait").is_none() {
            interrupted += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().expect("reaped");
        // Restart and finish: the next run continues from the last committed snapshot.
        let out = common::run(&home, &["ingest"]);
        assert!(
            out.status.success(),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("reconciled"));
        let lake = Arc::new(
            Lake::open(
                LakeStore::local(&home.join("lake")).expect("store"),
                &MasterKeySource::from_key_file(&home.join("master.key")).expect("key"),
            )
            .await
            .expect("lake"),
        );
        let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
        let want = fresh_full_load(&dir.path().join("oracle"), &db).await;
        common::assert_same_contents(&want, &contents(&engine).await, &format!("run {i}"));
    }
    assert!(
        interrupted >= runs / 2,
        "most kills must land inside a run ({interrupted} of {runs})"
    );
    // Every run is recorded; killed ones are marked interrupted once a later run starts.
    let runs_json: serde_json::Value = serde_json::from_str(&common::ok(
        &home,
        &["runs", "--limit", "100", "--format", "json"],
    ))
    .expect("json");
    let outcomes: Vec<&str> = runs_json
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert!(
        outcomes.iter().all(|o| ["ok", "interrupted"].contains(o)),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&"interrupted"), "{outcomes:?}");
}

/// Erasure on request: a client with deals, interactions and payments is removed from every table and
/// every file kept (checked by decrypting everything the lake still has), older snapshots go, and the
/// next ingest — from a source that still holds them — does not bring them back, and reconciles.
#[tokio::test]
async fn an_erased_client_is_gone_from_every_file_and_stays_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    common::ok(&home, &["demo", "--scale", "0.02", "--end", "2025-07-01"]);
    let db = home.join("demo-crm.sqlite");
    let pool = crm(&db).await;
    // A client with many rows about them, found in the source.
    let (client, name): (i64, String) = sqlx::query_as(
        "SELECT c.id, c.display_name FROM contacts c JOIN leads l ON l.contact_id = c.id
         JOIN invoices i ON i.contact_id = c.id WHERE i.status = 'paid' AND c.display_name IS NOT NULL
           AND (SELECT COUNT(*) FROM contacts o WHERE o.display_name = c.display_name) = 1
         GROUP BY c.id ORDER BY COUNT(*) DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a client with deals and payments");
    let about = |home: &Path| {
        // Every row about the client in every table, read by the owner (every key).
        let sql = "SELECT (SELECT COUNT(*) FROM clients WHERE client_id = $C)
                  + (SELECT COUNT(*) FROM deals WHERE client_id = $C)
                  + (SELECT COUNT(*) FROM interactions WHERE client_id = $C)
                  + (SELECT COUNT(*) FROM payments WHERE client_id = $C)
                  + (SELECT COUNT(*) FROM tasks WHERE client_id = $C)
                  + (SELECT COUNT(*) FROM ownership_changes WHERE client_id = $C)
                  + (SELECT COUNT(*) FROM deal_stage_changes s JOIN deals d ON d.deal_id = s.deal_id WHERE d.client_id = $C)"
            .replace("$C", &client.to_string());
        common::ok(home, &["query", &sql, "--format", "csv"])
            .lines()
            .nth(1)
            .expect("a count")
            .parse::<u64>()
            .expect("number")
    };
    let before = about(&home);
    assert!(before > 5, "the client has rows ({before})");
    common::ok(&home, &["ingest"]); // a second snapshot, which also holds them
    // The client is renamed in the CRM: the incremental run marks the row with the old name deleted
    // (a delete vector) and adds the new one — erasure must take both off the disk.
    let renamed = format!("{name} (новое имя)");
    sqlx::query(
        "UPDATE contacts SET display_name = ?, modified_at = '2025-07-02 09:00:00' WHERE id = ?",
    )
    .bind(&renamed)
    .bind(client)
    .execute(&pool)
    .await
    .expect("rename");
    common::ok(&home, &["ingest"]);
    let key = || MasterKeySource::from_key_file(&home.join("master.key")).expect("key");
    {
        let lake = Lake::open(LakeStore::local(&home.join("lake")).expect("store"), &key())
            .await
            .expect("lake");
        let now = lake.current().await.expect("snapshot");
        assert!(
            now.tables["clients"]
                .files
                .iter()
                .any(|f| f.deleted.is_some()),
            "the row with the old name is kept under a delete vector"
        );
    }

    let out = common::run(&home, &["erase", "--client", &client.to_string(), "--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("older snapshots expired"), "{stderr}");
    assert_eq!(about(&home), 0);
    // Decrypt everything the lake keeps, every snapshot and every file: the name is nowhere.
    let lake = Arc::new(
        Lake::open(LakeStore::local(&home.join("lake")).expect("store"), &key())
            .await
            .expect("lake"),
    );
    let ids = lake.snapshot_ids().await.expect("ids");
    assert_eq!(ids.len(), 1, "only the snapshot without them is left");
    let engine = Engine::new(lake.clone(), EngineConfig::default()).expect("engine");
    let files: usize = walk(&home.join("lake/tables"));
    let referenced: usize = lake
        .current()
        .await
        .expect("snapshot")
        .tables
        .values()
        .map(|t| t.files.len())
        .sum();
    assert_eq!(files, referenced, "no file outside the snapshot remains");
    for (table, rows) in contents(&engine).await {
        for row in rows {
            assert!(
                !row.iter().any(|v| v == &name || v == &renamed),
                "{table}: {row:?}"
            );
        }
    }
    // The same, with every row the files hold physically — delete vectors ignored (on a copy).
    let copy = dir.path().join("physical");
    common::copy_dir(&home.join("lake"), &copy);
    let physical = Arc::new(
        Lake::open(LakeStore::local(&copy).expect("store"), &key())
            .await
            .expect("lake"),
    );
    let kept = physical.current().await.expect("snapshot");
    let mut txn = physical.begin_write().await.expect("txn");
    for (table, state) in &kept.tables {
        let files = state
            .files
            .iter()
            .map(|f| kartoteka_engine::lake::DataFile {
                rows: f.rows_written(),
                deleted: None,
                ..f.clone()
            })
            .collect();
        txn.replace_table(table, files, state.cursor.clone())
            .expect("replace");
    }
    txn.commit("every row as written").await.expect("commit");
    let everything = Engine::new(physical, EngineConfig::default()).expect("engine");
    for (table, rows) in contents(&everything).await {
        for row in rows {
            assert!(
                !row.iter().any(|v| v == &name || v == &renamed),
                "{table}: {row:?}"
            );
        }
    }
    // The source still has them: the next ingest keeps them out and still reconciles.
    common::ok(&home, &["ingest"]);
    common::ok(&home, &["ingest", "--full"]);
    assert_eq!(about(&home), 0);
    let audit = common::ok(&home, &["audit", "tail", "--lines", "20"]);
    assert!(audit.contains("erase") && !audit.contains(&name), "{audit}");
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        usize::from(p.extension().is_some_and(|x| x == "parquet"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
