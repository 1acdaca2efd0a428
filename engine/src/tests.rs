//! Tests of the lake, keyring and session together, on real encrypted files in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use futures::StreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use zeroize::Zeroizing;

use crate::Error;
use crate::keyring::MasterKeySource;
use crate::lake::Lake;
use crate::model::{self, Class};
use crate::session::{Engine, EngineConfig, Principal};
use crate::store::LakeStore;

fn passphrase(p: &str) -> MasterKeySource {
    MasterKeySource::Passphrase(Zeroizing::new(p.to_string()))
}

/// A staff batch whose names and e-mails are recognisable in raw bytes.
fn staff_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let table = model::table("staff").expect("canonical");
    let n = ids.clone().count();
    let names: Vec<String> = ids
        .clone()
        .map(|i| format!("Секретная Фамилия {i}"))
        .collect();
    let emails: Vec<String> = ids
        .clone()
        .map(|i| format!("secret.person.{i}@example.org"))
        .collect();
    let cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(emails)),
        Arc::new(StringArray::from(vec![Some("manager"); n])),
        Arc::new(StringArray::from(vec![Some("Москва"); n])),
        Arc::new(arrow::array::Date32Array::from(vec![Some(19000); n])),
        Arc::new(arrow::array::Date32Array::from(vec![None; n])),
        Arc::new(Int64Array::from(vec![None; n])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000); n])
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(table.schema(), cols).expect("valid batch")
}

async fn new_lake(dir: &std::path::Path) -> Lake {
    let store = LakeStore::local(dir).expect("store");
    Lake::open_or_create(store, &passphrase("correct horse battery staple"))
        .await
        .expect("lake")
}

async fn write_staff(lake: &Lake, ids: std::ops::Range<i64>) -> crate::Snapshot {
    let mut txn = lake.begin_write().await.expect("txn");
    let mut w = txn.table_writer("staff").await.expect("writer");
    w.write(&staff_batch(ids)).await.expect("write");
    let files = w.finish().await.expect("finish");
    txn.replace_table("staff", files, None).expect("replace");
    txn.commit("test").await.expect("commit")
}

async fn count(lake: Arc<Lake>, sql: &str) -> i64 {
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let r = session.sql(sql).await.expect("query");
    r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("count is i64")
        .value(0)
}

fn data_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p)
            }
        }
    }
    let mut v = Vec::new();
    walk(&root.join("tables"), &mut v);
    v.sort();
    v
}

#[tokio::test]
async fn commit_is_all_or_nothing_and_orphans_are_collected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    let first = write_staff(&lake, 0..100).await;
    assert_eq!(first.id, 1);
    let committed_files = data_files(dir.path());
    assert_eq!(committed_files.len(), 1);

    // A writer that writes files and then "crashes" before committing: the transaction is dropped.
    {
        let mut txn = lake.begin_write().await.expect("txn");
        let mut w = txn.table_writer("staff").await.expect("writer");
        w.write(&staff_batch(100..300)).await.expect("write");
        let files = w.finish().await.expect("finish");
        txn.replace_table("staff", files, None).expect("replace");
        drop(txn);
    }
    assert_eq!(
        data_files(dir.path()).len(),
        2,
        "the crashed writer's file is on disk"
    );
    assert_eq!(
        lake.current().await.expect("current"),
        first,
        "the old snapshot is intact"
    );
    assert_eq!(
        count(Arc::clone(&lake), "SELECT COUNT(*) FROM staff").await,
        100
    );

    // GC within the grace period keeps it; with no grace it deletes exactly the orphan.
    let report = lake
        .gc(Duration::MAX)
        .await
        .expect("an endless grace is no error");
    assert_eq!((report.deleted.len(), report.too_young), (0, 1));
    let report = lake.gc(Duration::from_secs(3600)).await.expect("gc");
    assert_eq!(
        (report.kept, report.deleted.len(), report.too_young),
        (1, 0, 1)
    );
    let report = lake.gc(Duration::ZERO).await.expect("gc");
    assert_eq!((report.kept, report.deleted.len()), (1, 1));
    assert_eq!(data_files(dir.path()), committed_files);
    assert_eq!(count(lake, "SELECT COUNT(*) FROM staff").await, 100);
}

#[tokio::test]
async fn a_reader_keeps_its_snapshot_while_a_writer_commits_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    write_staff(&lake, 0..100).await;
    let engine = Engine::new(Arc::clone(&lake), EngineConfig::default()).expect("engine");
    let pinned = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let second = write_staff(&lake, 0..250).await;
    assert_eq!(second.id, 2);
    let n = |r: crate::QueryResult| {
        r.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64")
            .value(0)
    };
    assert_eq!(
        n(pinned
            .sql("SELECT COUNT(*) FROM staff")
            .await
            .expect("query")),
        100
    );
    assert_eq!(pinned.snapshot().id, 1);
    let fresh = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    assert_eq!(
        n(fresh
            .sql("SELECT COUNT(*) FROM staff")
            .await
            .expect("query")),
        250
    );
}

#[tokio::test]
async fn one_writer_at_a_time_and_snapshot_numbers_are_never_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = new_lake(dir.path()).await;
    let txn = lake.begin_write().await.expect("first writer");
    // A second writer — another handle on the lock file, as another process would have — is refused.
    let other = new_lake(dir.path()).await;
    match other.begin_write().await {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(txn);
    assert!(
        other.begin_write().await.is_ok(),
        "the lock is released with the writer"
    );

    // Two writers that both started from snapshot 0 (e.g. on hosts that do not share the lock):
    // the second commit of snapshot 1 fails cleanly and the first stays.
    let mut a = lake.begin_write().await.expect("a");
    let mut w = a.table_writer("staff").await.expect("writer");
    w.write(&staff_batch(0..10)).await.expect("write");
    let files = w.finish().await.expect("finish");
    a.replace_table("staff", files, None).expect("replace");
    let raw = std::fs::read(dir.path().join("_meta/snapshots")).err();
    assert!(raw.is_some(), "no snapshot yet");
    std::fs::create_dir_all(dir.path().join("_meta/snapshots")).expect("mkdir");
    // The other writer holds the same keys: its manifest is authenticated like ours.
    let mut competitor: crate::Snapshot = serde_json::from_str(
        r#"{"format":2,"id":1,"parent":null,"committed_at":"2026-01-01T00:00:00Z","operation":"other writer","tables":{}}"#,
    )
    .expect("snapshot");
    competitor.mac = Some(
        lake.keyring()
            .read()
            .await
            .snapshot_mac(&competitor.signed_bytes()),
    );
    std::fs::write(
        dir.path().join("_meta/snapshots/00000000000000000001.json"),
        serde_json::to_vec(&competitor).expect("json"),
    )
    .expect("write");
    match a.commit("loser").await {
        Err(Error::CommitConflict { snapshot: 1 }) => {}
        other => panic!("expected CommitConflict, got {other:?}"),
    }
    assert_eq!(
        lake.current().await.expect("current").operation,
        "other writer"
    );
}

#[tokio::test]
async fn files_are_encrypted_with_encrypted_footers_and_hold_no_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = new_lake(dir.path()).await;
    write_staff(&lake, 0..500).await;
    for f in data_files(dir.path()) {
        let bytes = std::fs::read(&f).expect("read");
        assert_eq!(&bytes[..4], b"PARE", "{} starts with PARE", f.display());
        assert_eq!(
            &bytes[bytes.len() - 4..],
            b"PARE",
            "{} ends with PARE",
            f.display()
        );
        for needle in [
            "Секретная",
            "secret.person",
            "example.org",
            "manager",
            "Москва",
            "full_name",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} appears in plaintext in {}",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn wrong_passphrase_is_named_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = new_lake(dir.path()).await;
    write_staff(&lake, 0..10).await;
    let keyring_before = std::fs::read(dir.path().join("_meta/keyring.json")).expect("keyring");
    let store = LakeStore::local(dir.path()).expect("store");
    let err = Lake::open(store, &passphrase("wrong horse"))
        .await
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::WrongMasterKey { .. }), "{msg}");
    assert!(
        msg.contains("wrong master key") && msg.contains("KARTOTEKA_PASSPHRASE"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong horse"),
        "the passphrase must not be echoed: {msg}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("_meta/keyring.json")).expect("keyring"),
        keyring_before
    );
    // A key file cannot open a passphrase lake either, and says what is needed.
    let store = LakeStore::local(dir.path()).expect("store");
    let key = MasterKeySource::KeyFile(crate::keyring::SecretKey::random());
    let err = Lake::open(store, &key).await.expect_err("must fail");
    assert!(err.to_string().contains("KARTOTEKA_PASSPHRASE"), "{err}");
}

#[tokio::test]
async fn a_flipped_byte_is_detected_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    write_staff(&lake, 0..2000).await;
    let file = data_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&file).expect("read");
    // Flip a byte inside the first column chunk's encrypted data (past the magic and module header).
    bytes[64] ^= 0x01;
    std::fs::write(&file, bytes).expect("write");
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let err = session
        .sql("SELECT SUM(staff_id) FROM staff")
        .await
        .expect_err("tampering must be detected");
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(err.to_string().contains("failed authentication"), "{err}");
}

#[tokio::test]
async fn a_reader_without_the_pii_key_reads_internal_columns_but_not_pii() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = new_lake(dir.path()).await;
    write_staff(&lake, 0..50).await;
    let file = lake.current().await.expect("snapshot").tables["staff"].files[0]
        .path
        .clone();
    let keys = lake.keyring().read().await.session_keys(&[Class::Internal]);
    let props = keys.decryption_properties(&file).expect("props");
    let open = || async {
        let f = tokio::fs::File::open(dir.path().join(&file))
            .await
            .expect("open");
        ParquetRecordBatchStreamBuilder::new_with_options(
            f,
            ArrowReaderOptions::new().with_file_decryption_properties(Arc::clone(&props)),
        )
        .await
    };
    // Internal column: readable.
    let builder = open().await.expect("footer opens with the internal key");
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [0]);
    let mut stream = builder.with_projection(mask).build().expect("stream");
    let batch = stream
        .next()
        .await
        .expect("one batch")
        .expect("internal column decrypts");
    assert_eq!(batch.num_rows(), 50);
    // PII column (full_name, leaf 1): refused for lack of the key.
    let builder = open().await.expect("footer opens");
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [1]);
    let result = match builder.with_projection(mask).build() {
        Err(e) => Err(e.to_string()),
        Ok(mut s) => match s.next().await {
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(b)) => Ok(b),
            None => Err("no rows".into()),
        },
    };
    let err = result.expect_err("the pii column must not decrypt without the pii key");
    assert!(err.contains("staff.pii") || err.contains("key"), "{err}");
}

#[tokio::test]
async fn only_queries_may_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    write_staff(&lake, 0..10).await;
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "COPY staff TO '/tmp/leak.csv'",
        "INSERT INTO staff SELECT * FROM staff",
        "DROP TABLE staff",
        "SET datafusion.execution.target_partitions = 1",
        "SELECT 1; DROP TABLE staff",
        "CREATE VIEW v AS SELECT * FROM staff",
    ] {
        let err = session.sql(sql).await.expect_err(sql);
        assert!(matches!(err, Error::NotAQuery(_)), "{sql}: {err}");
    }
    // No way to reach files outside the lake: no file-reading table functions, no URL tables.
    for sql in [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
    ] {
        assert!(session.sql(sql).await.is_err(), "{sql} must fail");
    }
    assert!(
        session
            .sql("WITH s AS (SELECT * FROM staff) SELECT COUNT(*) FROM s")
            .await
            .is_ok()
    );
    assert!(session.sql("EXPLAIN SELECT * FROM staff").await.is_ok());
}

// Multi-threaded like the CLI and the server: a busy operator must not keep the timer from firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_time_limits_stop_runaway_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    write_staff(&lake, 0..1000).await;
    let heavy = "SELECT a.email, b.email, a.staff_id * b.staff_id AS p FROM staff a, staff b ORDER BY p DESC, a.email";
    let tight_memory = Engine::new(
        Arc::clone(&lake),
        EngineConfig {
            memory_limit_bytes: 1 << 20,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let session = tight_memory
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let err = session
        .sql(heavy)
        .await
        .expect_err("1M sorted rows do not fit in 1 MiB");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("resources exhausted"),
        "{err}"
    );
    // The same query within the default limit runs: it was the limit that stopped it.
    let roomy = Engine::new(Arc::clone(&lake), EngineConfig::default()).expect("engine");
    let session = roomy
        .session(&Principal::local_owner())
        .await
        .expect("session");
    assert_eq!(
        session
            .sql(heavy)
            .await
            .expect("fits in the default limit")
            .rows(),
        1_000_000
    );

    let tight_time = Engine::new(
        lake,
        EngineConfig {
            query_timeout: Duration::from_millis(50),
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let session = tight_time
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let err = session
        .sql("SELECT COUNT(*) FROM staff a, staff b, staff c WHERE a.staff_id * b.staff_id > c.staff_id * 997")
        .await
        .expect_err("a billion combinations take longer than 50 ms");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("time limit"), "{err}");
}

#[test]
fn debug_output_never_shows_keys() {
    let key = crate::keyring::SecretKey::random();
    assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
    let source = passphrase("hunter2-hunter2");
    assert!(!format!("{source:?}").contains("hunter2"));
}

/// An analyst: reads internal columns, sees pii only as tokens.
fn analyst() -> Principal {
    Principal {
        user: "analyst".into(),
        role: crate::Role::Analyst,
        staff_id: None,
        team: vec![],
        preview_by: None,
    }
}

#[tokio::test]
async fn even_a_masking_bug_cannot_decrypt_pii_in_an_analysts_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    let snapshot = write_staff(&lake, 0..20).await;
    let engine = Engine::new(Arc::clone(&lake), EngineConfig::default()).expect("engine");
    let analyst = analyst();
    let session = engine.session(&analyst).await.expect("session");
    assert!(session.key_ids().iter().all(|k| !k.contains(".pii.")));
    // The masked view: tokens, equal for equal values, never the value.
    let r = session
        .sql("SELECT full_name, email FROM staff ORDER BY staff_id")
        .await
        .expect("masked");
    let names = r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("text");
    assert!(names.iter().flatten().all(|v| v.starts_with("tok_")));
    // Simulate a masking bug: a plan over the raw table with the analyst's keys reaches the raw
    // column. It fails to decrypt, cleanly, naming the missing clearance.
    let raw = engine
        .raw_context(&snapshot, &[Class::Internal])
        .await
        .expect("raw");
    let err = raw
        .sql("SELECT full_name FROM staff")
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("the pii column cannot be decrypted without the pii key");
    assert!(err.to_string().contains("not cleared"), "{err}");
    let ok = raw
        .sql("SELECT COUNT(full_name__tok) FROM staff")
        .await
        .expect("plans")
        .collect()
        .await
        .expect("tokens are internal");
    assert_eq!(ok[0].num_rows(), 1);
}

/// Sessions read stored text as `Utf8View` (no copy out of the Parquet dictionary), and every
/// answer still leaves the session with text as `Utf8` — whether it was read, masked to a token, or
/// made by `CAST(… AS VARCHAR)` — so callers see one text type.
#[tokio::test]
async fn text_is_read_as_views_and_answered_as_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Arc::new(new_lake(dir.path()).await);
    write_staff(&lake, 0..20).await;
    let engine = Engine::new(Arc::clone(&lake), EngineConfig::default()).expect("engine");
    for principal in [Principal::local_owner(), analyst()] {
        let session = engine.session(&principal).await.expect("session");
        let r = session
            .sql(
                "SELECT arrow_typeof(position) AS read_as, arrow_typeof(full_name) AS name_read_as, \
                 position, full_name, CAST(staff_id AS VARCHAR) AS id_text \
                 FROM staff ORDER BY staff_id",
            )
            .await
            .expect("query");
        assert_eq!(r.rows(), 20);
        // As the plan read them (owner: the name; analyst: its token).
        assert_eq!(r.text_column("read_as")[0].as_deref(), Some("Utf8View"));
        assert_eq!(
            r.text_column("name_read_as")[0].as_deref(),
            Some("Utf8View")
        );
        // As the answer hands them over.
        for name in ["position", "full_name", "id_text"] {
            let i = r.schema.index_of(name).expect("column");
            assert_eq!(
                r.schema.field(i).data_type(),
                &arrow::datatypes::DataType::Utf8,
                "{name}"
            );
            for b in &r.batches {
                assert_eq!(
                    b.column(i).data_type(),
                    &arrow::datatypes::DataType::Utf8,
                    "{name}"
                );
            }
        }
        assert_eq!(r.text_column("position")[0].as_deref(), Some("manager"));
        assert_eq!(r.text_column("id_text")[3].as_deref(), Some("3"));
    }
}

/// The newest manifest is authenticated once and then served from memory while its bytes stay the
/// same: a manifest edited, or another snapshot's copied under its name, after the lake answered from
/// it is still refused.
#[tokio::test]
async fn a_manifest_edited_after_it_was_read_is_still_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = new_lake(dir.path()).await;
    let first = write_staff(&lake, 0..10).await;
    let second = write_staff(&lake, 0..20).await;
    assert_eq!(lake.current().await.expect("current").id, second.id);
    let manifest = |id: u64| {
        dir.path()
            .join("_meta/snapshots")
            .join(format!("{id:020}.json"))
    };
    let original = std::fs::read(manifest(second.id)).expect("read");
    // An edit (the staff table emptied) is caught on the next read, though the same snapshot was
    // authenticated a moment ago.
    let mut edited: serde_json::Value = serde_json::from_slice(&original).expect("json");
    edited["tables"]["staff"]["files"] = serde_json::json!([]);
    std::fs::write(
        manifest(second.id),
        serde_json::to_vec_pretty(&edited).expect("json"),
    )
    .expect("write");
    let err = lake.current().await.expect_err("edited");
    assert!(
        err.to_string()
            .contains("authentication code does not match"),
        "{err}"
    );
    // Restored, it is served again; the first snapshot's manifest copied under the second's name is
    // refused even right after the first was read and authenticated.
    std::fs::write(manifest(second.id), &original).expect("restore");
    assert_eq!(lake.current().await.expect("current").id, second.id);
    lake.snapshot(first.id).await.expect("the first snapshot");
    std::fs::copy(manifest(first.id), manifest(second.id)).expect("copy");
    let err = lake.current().await.expect_err("copied");
    assert!(
        err.to_string()
            .contains(&format!("holds snapshot {}", first.id)),
        "{err}"
    );
}

/// A batch of staff keys, as the engine's key sets and hashers take them.
fn staff_keys(ids: impl Iterator<Item = i64>) -> RecordBatch {
    let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "staff_id",
        arrow::datatypes::DataType::Int64,
        false,
    )]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(Int64Array::from_iter_values(ids))],
    )
    .expect("keys")
}

/// Rows taken out by delete vectors (an incremental ingest's updates and deletes) are gone for every
/// reader — counts, sums, pruned range scans, the key check — across many row groups of one file;
/// the file is kept as it was until its vector would pass a tenth of its rows, then rewritten.
#[tokio::test]
async fn deleted_rows_are_skipped_by_every_reader_until_the_file_is_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1 000 staff in one file of sixteen row groups of 64 rows (the last one shorter).
    let lake = new_lake(dir.path()).await.with_row_group_rows(64);
    let written = write_staff(&lake, 0..1000).await;
    let original = written.tables["staff"].files.clone();
    assert_eq!(original.len(), 1);
    let engine = Engine::new(Arc::new(lake), EngineConfig::default()).expect("engine");
    let table = model::table("staff").expect("canonical");
    let mut live: std::collections::BTreeSet<i64> = (0..1000).collect();

    // Each round drops some ids through the ingest's path and checks every reader against `live`.
    let rounds: [(&str, Vec<i64>); 4] = [
        // 81 rows, scattered over every row group, the first and the last row of the file among them.
        (
            "vector",
            (0..1000)
                .filter(|i| i % 13 == 0)
                .chain([1, 2, 3, 999])
                .collect(),
        ),
        // Two more (and one already gone): the vector grows to 83, the file stays. Only the row
        // groups of 26..=501 are read for them (the others pruned by their statistics): the positions
        // of rows past skipped groups and deleted rows must still be the rows' own.
        ("vector", vec![500, 501, 26]),
        // Keys the file does not hold, beyond its range: nothing is read, nothing changes.
        ("vector", vec![5000, 1_000_000]),
        // Every eleventh: past a tenth of the file, which is rewritten without them all.
        ("rewrite", (0..1000).filter(|i| i % 11 == 0).collect()),
    ];
    for (round, (expect, ids)) in rounds.into_iter().enumerate() {
        let mut txn = engine.lake().begin_write().await.expect("txn");
        let files = txn.base().tables["staff"].files.clone();
        let mut drop = crate::reconcile::KeySet::new(table).expect("set");
        drop.insert(&staff_keys(ids.iter().copied()))
            .expect("insert");
        let (kept, dropped) = engine
            .files_without_keys(&txn, "staff", &files, Some(&drop), None)
            .await
            .expect("drop");
        let was = live.len();
        for id in &ids {
            live.remove(id);
        }
        assert_eq!(dropped as usize, was - live.len(), "round {round}");
        assert_eq!(kept.len(), 1, "round {round}");
        let file = &kept[0];
        assert_eq!(file.rows as usize, live.len(), "round {round}");
        match expect {
            "vector" => {
                assert_eq!(file.path, original[0].path, "round {round}: kept in place");
                assert_eq!(file.rows_written(), 1000);
                assert_eq!(
                    file.deleted.as_ref().map(|d| d.len() as usize),
                    Some(1000 - live.len()),
                    "round {round}"
                );
            }
            _ => {
                assert_ne!(file.path, original[0].path, "round {round}: rewritten");
                assert!(file.deleted.is_none(), "round {round}");
            }
        }
        txn.replace_table("staff", kept, None).expect("replace");
        let snapshot = txn.commit("test").await.expect("commit");

        // Every reader, against the set kept in this test.
        let sum: i64 = live.iter().sum();
        let in_range = live.range(60..=200).count() as i64;
        let lake = Arc::clone(engine.lake());
        assert_eq!(
            count(lake.clone(), "SELECT COUNT(*) FROM staff").await,
            live.len() as i64
        );
        assert_eq!(
            count(lake.clone(), "SELECT SUM(staff_id) FROM staff").await,
            sum
        );
        assert_eq!(
            count(
                lake.clone(),
                "SELECT COUNT(*) FROM staff WHERE staff_id BETWEEN 60 AND 200"
            )
            .await,
            in_range,
            "round {round}: a range the row groups' statistics prune to"
        );
        assert_eq!(
            count(
                lake.clone(),
                "SELECT COUNT(*) FROM staff WHERE staff_id IN (0, 13, 999, 500, 998)"
            )
            .await,
            [0, 13, 999, 500, 998]
                .iter()
                .filter(|i| live.contains(i))
                .count() as i64,
            "round {round}"
        );
        let mut expected_keys = crate::reconcile::KeyHasher::new(table).expect("hasher");
        expected_keys
            .add(&staff_keys(live.iter().copied()))
            .expect("add");
        let (fingerprint, duplicates) = engine.key_check(&snapshot, "staff").await.expect("check");
        assert_eq!(fingerprint, expected_keys.finish(), "round {round}");
        assert_eq!(duplicates, 0);
    }
}

/// A delete vector that does not fit its file (edited into a manifest signed anew, as a bug could
/// write it) is an error for a reader, never an answer without those rows or with others.
#[tokio::test]
async fn a_delete_vector_that_does_not_fit_its_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = new_lake(dir.path()).await.with_row_group_rows(64);
    let written = write_staff(&lake, 0..100).await;
    let mut file = written.tables["staff"].files[0].clone();
    // Positions past the end: the vector names rows the file does not have.
    file.deleted = Some(crate::deletions::Deletions::new(vec![5, 150]));
    file.rows = 98;
    let mut txn = lake.begin_write().await.expect("txn");
    txn.replace_table("staff", vec![file], None)
        .expect("replace");
    txn.commit("test").await.expect("commit");
    let engine = Engine::new(Arc::new(lake), EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let err = session
        .sql("SELECT COUNT(*) FROM staff")
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("delete vector"), "{err}");
}
