//! Helpers shared by the end-to-end tests.
#![allow(dead_code, unreachable_pub)]

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Every cell of a result as text (NULL as "NULL"), row by row.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formattable"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

/// Kopecks as the lake prints DECIMAL(18,2).
pub fn money(kopecks: i64) -> String {
    let sign = if kopecks < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", kopecks.abs() / 100, kopecks.abs() % 100)
}

/// The kartoteka binary.
pub fn kartoteka() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kartoteka"));
    c.env_remove("KARTOTEKA_PASSPHRASE")
        .env_remove("KARTOTEKA_FAILPOINT")
        .env_remove("KARTOTEKA_HOME");
    c
}

/// Ingest the demo-schema SQLite CRM at `db` (through the demo mapping) into a new lake under `dir`,
/// with a fresh key file. Returns the opened source and the lake.
pub async fn ingest_demo_source(
    dir: &std::path::Path,
    db: &std::path::Path,
) -> (
    kartoteka_ingest::SqliteSource,
    std::sync::Arc<kartoteka_engine::Lake>,
) {
    let source = kartoteka_ingest::SqliteSource::open(db)
        .await
        .expect("source opens");
    let source = kartoteka_ingest::Source::Sqlite(source);
    let lake = ingest_into_new_lake(dir, &source, kartoteka_ingest::demo::MAPPING).await;
    let kartoteka_ingest::Source::Sqlite(source) = source else {
        unreachable!("opened as SQLite")
    };
    (source, lake)
}

/// Ingest `source` through the mapping `mapping` (TOML text) into a new lake under `dir`, with a fresh
/// key file.
#[allow(dead_code)] // not every test binary ingests from a server
pub async fn ingest_into_new_lake(
    dir: &std::path::Path,
    source: &kartoteka_ingest::Source,
    mapping: &str,
) -> std::sync::Arc<kartoteka_engine::Lake> {
    let mapping = kartoteka_ingest::Mapping::parse(mapping, std::path::Path::new("mapping.toml"))
        .expect("mapping");
    let store = kartoteka_engine::LakeStore::local(&dir.join("lake")).expect("store");
    let key = kartoteka_engine::MasterKeySource::create_key_file(&dir.join("master.key"))
        .expect("key file");
    let lake = std::sync::Arc::new(
        kartoteka_engine::Lake::open_or_create(store, &key)
            .await
            .expect("lake"),
    );
    let engine = kartoteka_engine::Engine::new(lake.clone(), Default::default()).expect("engine");
    kartoteka_ingest::ingest(
        &engine,
        source,
        &mapping,
        "test",
        &kartoteka_ingest::NoProgress,
        kartoteka_ingest::IngestOptions::default(),
    )
    .await
    .expect("ingest");
    lake
}

/// A demo home at scale 0.05 whose history ends on `end` (exclusive): (dir, stdout, stderr).
pub fn demo_home(end: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kartoteka()
        .arg("demo")
        .args(["--scale", "0.05", "--end", end, "--dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    (dir, stdout, stderr)
}

/// One demo home (history ending 2025-07-01) built once per test process: (dir, stdout, stderr).
/// Tests that change a home work on a [`copy_home`] of it.
pub fn shared_demo_home() -> &'static (tempfile::TempDir, String, String) {
    static HOME: std::sync::OnceLock<(tempfile::TempDir, String, String)> =
        std::sync::OnceLock::new();
    HOME.get_or_init(|| demo_home("2025-07-01"))
}

/// Copy a directory tree (permissions kept).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// One demo home whose history ends today (the web door's pages show "this month" with data in it),
/// built once per test process: (dir, stdout, stderr).
pub fn current_demo_home() -> &'static (tempfile::TempDir, String, String) {
    static HOME: std::sync::OnceLock<(tempfile::TempDir, String, String)> =
        std::sync::OnceLock::new();
    HOME.get_or_init(|| demo_home(&chrono::Utc::now().date_naive().to_string()))
}

/// A private copy of the shared demo home (directories 0700, as a home is created).
pub fn copy_home() -> tempfile::TempDir {
    copy_home_of(shared_demo_home().0.path())
}

/// A private copy of the home at `from` (directories 0700, as a home is created).
pub fn copy_home_of(from: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(from, dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.path().to_path_buf(), dir.path().join("audit")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
    }
    dir
}

/// Run the binary on the home `dir`.
pub fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    kartoteka()
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("binary runs")
}

/// Run and require success; returns stdout.
pub fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "kartoteka {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Run and require failure; returns stderr.
pub fn fail(dir: &std::path::Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(!out.status.success(), "kartoteka {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Every canonical table of the lake behind `session`, in key order, every column as text.
pub async fn lake_contents(
    session: &kartoteka_engine::QuerySession,
) -> Vec<(String, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    for table in kartoteka_engine::model::tables() {
        let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            columns.join(", "),
            table.name,
            table.key.join(", ")
        );
        let r = session.sql(&sql).await.expect("lake query");
        out.push((table.name.to_string(), rows(&r.batches)));
    }
    out
}

/// Assert two lakes' contents are equal, table by table, naming the first difference.
pub fn assert_same_contents(
    want: &[(String, Vec<Vec<String>>)],
    got: &[(String, Vec<Vec<String>>)],
    what: &str,
) {
    for ((table, want), (_, got)) in want.iter().zip(got) {
        assert_eq!(want.len(), got.len(), "{what}: {table} row count");
        for (w, g) in want.iter().zip(got) {
            assert_eq!(w, g, "{what}: {table}");
        }
    }
}

/// The demo CRM (history ending 2025-07-01) as SQLite at `dir/crm.sqlite`.
pub async fn demo_sqlite(dir: &std::path::Path, scale: f64, seed: u64) -> std::path::PathBuf {
    let db = dir.join("crm.sqlite");
    let end = chrono::NaiveDate::from_ymd_opt(2025, 7, 1).expect("date");
    kartoteka_ingest::demo::generate(&db, kartoteka_ingest::demo::DemoConfig { seed, scale, end })
        .await
        .expect("demo generates");
    db
}

/// Ingest `source` into the lake behind `engine`, reconcile, and require every table to match.
pub async fn ingest_reconciled(
    engine: &kartoteka_engine::Engine,
    source: &kartoteka_ingest::Source,
    mapping: &kartoteka_ingest::Mapping,
    options: kartoteka_ingest::IngestOptions,
) -> kartoteka_ingest::IngestReport {
    let report = kartoteka_ingest::ingest(
        engine,
        source,
        mapping,
        "test",
        &kartoteka_ingest::NoProgress,
        options,
    )
    .await
    .expect("ingest");
    let checks = &report.checks;
    assert_eq!(checks.len(), report.tables.len(), "every table reconciled");
    assert!(checks.iter().all(|c| c.matches()), "{checks:?}");
    report
}

/// Ingest that must fail: its error, as the user reads it.
pub async fn ingest_error(
    engine: &kartoteka_engine::Engine,
    source: &kartoteka_ingest::Source,
    mapping: &kartoteka_ingest::Mapping,
) -> String {
    kartoteka_ingest::ingest(
        engine,
        source,
        mapping,
        "test",
        &kartoteka_ingest::NoProgress,
        kartoteka_ingest::IngestOptions::default(),
    )
    .await
    .expect_err("the run must fail")
    .to_string()
}
