//! CRM export files: the demo CRM exported table by table to CSV — contacts in Windows-1251 with `;`
//! (as Russian CRMs export), the rest UTF-8 with `,` — and ingested through the demo's own mapping gives
//! the lake the SQLite demo gives (CSV cannot tell an empty string from a missing value: both compare
//! as missing). Broken files name the file and line, and commit nothing.

mod common;

use std::path::Path;
use std::sync::Arc;

use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal};
use kartoteka_ingest::demo;
use kartoteka_ingest::{IngestOptions, Mapping, Source, SourceSpec};
use sqlx::Row;

const TABLES: &[&str] = &[
    "users",
    "contacts",
    "funnels",
    "funnel_statuses",
    "leads",
    "lead_status_log",
    "calls",
    "emails",
    "chat_messages",
    "meetings",
    "todo",
    "invoices",
    "responsible_log",
    "sales_plan",
    "ad_budget",
];

/// Export every demo table to `dir`; returns the `[files.*]` sections naming them.
async fn export(db: &Path, dir: &Path) -> String {
    let pool =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(db))
            .await
            .expect("demo");
    let mut sections = String::new();
    for table in TABLES {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&pool)
            .await
            .expect("rows");
        let cp1251 = *table == "contacts";
        let delimiter = if cp1251 { b';' } else { b',' };
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(Vec::new());
        let header: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        )))
        .fetch_all(&pool)
        .await
        .expect("columns");
        w.write_record(&header).expect("header");
        for r in &rows {
            let fields: Vec<String> = (0..r.columns().len())
                .map(
                    |i| match kartoteka_ingest::source::sqlite::value(r, i).expect("value") {
                        kartoteka_ingest::batch::Value::Null => String::new(),
                        kartoteka_ingest::batch::Value::Int(v) => v.to_string(),
                        kartoteka_ingest::batch::Value::Real(v) => v.to_string(),
                        kartoteka_ingest::batch::Value::Text(t) => t.to_string(),
                        other => panic!("the demo holds no {other:?}"),
                    },
                )
                .collect();
            w.write_record(&fields).expect("row");
        }
        let text = String::from_utf8(w.into_inner().expect("csv")).expect("utf-8");
        let file = dir.join(format!("{table}.csv"));
        if cp1251 {
            let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(&text);
            assert!(!unmappable, "the demo's contacts fit Windows-1251");
            std::fs::write(&file, bytes).expect("write");
            sections.push_str(&format!(
                "\n[files.{table}]\npath = \"{table}.csv\"\ndelimiter = \";\"\nencoding = \"windows-1251\"\n"
            ));
        } else {
            std::fs::write(&file, text).expect("write");
            sections.push_str(&format!("\n[files.{table}]\npath = \"{table}.csv\"\n"));
        }
    }
    sections
}

/// The demo CRM at `scale` and its CSV export under `dir`: (database, export directory, the demo's
/// mapping with the `[files.*]` sections naming the exports).
async fn exported_demo(dir: &Path, scale: f64) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let db = common::demo_sqlite(dir, scale, 4).await;
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    let sections = export(&db, &exports).await;
    (db, exports, format!("{}{sections}", demo::MAPPING))
}

async fn new_lake(dir: &Path) -> Arc<Lake> {
    std::fs::create_dir_all(dir).expect("dir");
    let store = LakeStore::local(&dir.join("lake")).expect("store");
    let key = MasterKeySource::create_key_file(&dir.join("master.key")).expect("key");
    Arc::new(Lake::open_or_create(store, &key).await.expect("lake"))
}

fn missing_as_null(mut t: Vec<(String, Vec<Vec<String>>)>) -> Vec<(String, Vec<Vec<String>>)> {
    for (_, rows) in &mut t {
        for row in rows {
            for v in row {
                if v.is_empty() {
                    *v = "NULL".into();
                }
            }
        }
    }
    t
}

#[tokio::test]
async fn exported_csv_files_give_the_same_lake_as_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, exports, mapping_text) = exported_demo(dir.path(), 0.02).await;
    let raw = std::fs::read(exports.join("contacts.csv")).expect("contacts");
    assert!(
        std::str::from_utf8(&raw).is_err(),
        "contacts.csv really is Windows-1251"
    );
    let mapping = Mapping::parse(&mapping_text, Path::new("m.toml")).expect("mapping");

    let (_, want_lake) = common::ingest_demo_source(&dir.path().join("a"), &db).await;
    let lake = new_lake(&dir.path().join("b")).await;
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let source = Source::open_for(
        &SourceSpec::new(format!("files://{}", exports.display())),
        &mapping,
    )
    .await
    .expect("files import");
    common::ingest_reconciled(&engine, &source, &mapping, IngestOptions::default()).await;
    let owner = Principal::local_owner();
    let want = Engine::new(want_lake, EngineConfig::default())
        .expect("engine")
        .session(&owner)
        .await
        .expect("session");
    let got = engine.session(&owner).await.expect("session");
    common::assert_same_contents(
        &missing_as_null(common::lake_contents(&want).await),
        &missing_as_null(common::lake_contents(&got).await),
        "CSV exports vs the database",
    );
}

#[tokio::test]
async fn broken_files_name_file_and_line_and_commit_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, exports, mapping_text) = exported_demo(dir.path(), 0.01).await;
    let mapping = Mapping::parse(&mapping_text, Path::new("m.toml")).expect("mapping");
    let spec = SourceSpec::new(format!("files://{}", exports.display()));
    let calls = exports.join("calls.csv");
    let good = std::fs::read_to_string(&calls).expect("calls");
    let mut lines: Vec<&str> = good.lines().collect();
    // Line 5 gets one field too many.
    let extra = format!("{},extra", lines[4]);
    lines[4] = &extra;
    std::fs::write(&calls, lines.join("\n")).expect("write");
    let e = Source::open_for(&spec, &mapping)
        .await
        .expect_err("malformed line")
        .to_string();
    assert!(
        e.contains("calls.csv") && e.contains("line 5") && e.contains("header"),
        "{e}"
    );

    // Bytes that are not UTF-8 in a UTF-8 file, on line 3.
    let mut bytes = good.clone().into_bytes();
    let third = good.match_indices('\n').nth(1).expect("lines").0 + 1;
    bytes.insert(third, 0xff);
    std::fs::write(&calls, bytes).expect("write");
    let e = Source::open_for(&spec, &mapping)
        .await
        .expect_err("bad bytes")
        .to_string();
    assert!(
        e.contains("calls.csv") && e.contains("line 3") && e.contains("UTF-8"),
        "{e}"
    );

    // A value of the wrong type: found when the mapping reads it, nothing committed.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let mut fields: Vec<&str> = lines[1].splitn(5, ',').collect();
    fields[3] = "Иванов"; // user_id: ids before any quoted text, so splitting on commas is safe
    lines[1] = fields.join(",");
    std::fs::write(&calls, lines.join("\n")).expect("write");
    let lake = new_lake(&dir.path().join("b")).await;
    let engine = Engine::new(lake.clone(), EngineConfig::default()).expect("engine");
    let source = Source::open_for(&spec, &mapping)
        .await
        .expect("imports (text is text)");
    let e = common::ingest_error(&engine, &source, &mapping).await;
    assert!(
        e.contains("interactions") && e.contains("staff_id") && e.contains("integer"),
        "{e}"
    );
    assert!(
        lake.snapshot_ids().await.expect("ids").is_empty(),
        "nothing committed"
    );

    // An encoding nobody knows.
    let odd = mapping_text.replace("encoding = \"windows-1251\"", "encoding = \"klingon\"");
    let odd = Mapping::parse(&odd, Path::new("m.toml")).expect("mapping");
    let e = Source::open_for(&spec, &odd)
        .await
        .expect_err("encoding")
        .to_string();
    assert!(e.contains("klingon") && e.contains("windows-1251"), "{e}");
}
