//! End to end through the `kartoteka` binary: the demo, queries, crash safety at named failpoints,
//! bad input, and what lands on disk.

use crate::common;

use std::path::{Path, PathBuf};

use crate::common::{fail, kartoteka, ok};

const END: &str = "2025-07-01";

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}

fn parquet_files(home: &Path) -> Vec<PathBuf> {
    files_under(&home.join("lake/tables"))
}

fn snapshot_count(home: &Path) -> usize {
    files_under(&home.join("lake/_meta/snapshots")).len()
}

/// One demo home shared by the tests that only read it.
fn demo_home() -> (tempfile::TempDir, String, String) {
    common::demo_home(END)
}

#[test]
fn demo_runs_end_to_end_and_the_home_works_afterwards() {
    let (dir, stdout, stderr) = demo_home();
    let home = dir.path();
    for m in [
        "revenue_by_month",
        "funnel_conversion",
        "activity_by_manager",
        "cohort_retention",
    ] {
        assert!(
            stdout.contains(&format!("== {m}")),
            "demo output lacks {m}:\n{stdout}"
        );
    }
    assert!(stdout.contains("data as of snapshot 1"), "{stdout}");
    assert!(
        stdout.contains("Продажи"),
        "the funnel names its pipeline:\n{stdout}"
    );
    // The key file is announced, and only the owner can read it.
    let key = home.join("master.key");
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key)
                .expect("key file")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    // The chart is a real SVG with bars.
    let chart = home.join("charts/revenue_by_month.svg");
    assert!(stdout.contains(&chart.display().to_string()));
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(
        svg.starts_with("<svg") && svg.matches("<rect").count() > 10,
        "{}",
        &svg[..200.min(svg.len())]
    );

    // The home serves other commands.
    let out = ok(home, &["query", "SELECT COUNT(*) AS n FROM clients"]);
    assert!(out.contains("500"), "scale 0.05 has 500 clients:\n{out}");
    let csv = ok(
        home,
        &[
            "metric",
            "revenue_by_month",
            "--param",
            "from=2024-01-01",
            "--param",
            "to=2025-01-01",
            "--format",
            "csv",
        ],
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "month,revenue,won_deals");
    assert_eq!(lines.len(), 13, "twelve months and a header:\n{csv}");
    let json = ok(home, &["metric", "funnel_conversion", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert!(v.as_array().is_some_and(|a| a.len() >= 6));
    let list = ok(home, &["metric", "list"]);
    assert!(list.contains("cohort_retention") && list.contains("--param months"));

    // Clear errors for bad requests.
    let e = fail(home, &["metric", "revenue"]);
    assert!(
        e.contains("unknown metric") && e.contains("revenue_by_month"),
        "{e}"
    );
    let e = fail(
        home,
        &["metric", "revenue_by_month", "--param", "form=2024-01-01"],
    );
    assert!(e.contains("unknown parameter") && e.contains("from"), "{e}");
    let e = fail(home, &["query", "DROP TABLE deals"]);
    assert!(e.contains("only queries"), "{e}");
    let e = fail(home, &["query", "SELEC 1"]);
    assert!(e.to_lowercase().contains("sql"), "{e}");

    // A passphrase cannot open a lake sealed with a key file; the error says so and leaks nothing.
    let out = kartoteka()
        .arg("--dir")
        .arg(home)
        .args(["query", "SELECT 1"])
        .env("KARTOTEKA_PASSPHRASE", "guess-guess-guess")
        .output()
        .expect("runs");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("wrong master key"),
        "{e}"
    );
    assert!(!e.contains("guess-guess-guess"), "{e}");

    // With the key file gone and no passphrase, the lake cannot be opened, and we are told why.
    let moved = home.join("master.key.bak");
    std::fs::rename(&key, &moved).expect("move key");
    let e = fail(home, &["query", "SELECT 1"]);
    assert!(e.contains("KARTOTEKA_PASSPHRASE"), "{e}");
    std::fs::rename(&moved, &key).expect("restore key");
}

/// Finds any of many strings in a byte buffer in one pass: candidates are indexed by their first four
/// bytes, so each position costs one hash lookup.
struct Finder<'a> {
    by_prefix: std::collections::HashMap<[u8; 4], Vec<&'a str>>,
}

impl<'a> Finder<'a> {
    fn new(needles: &'a [String]) -> Finder<'a> {
        let mut by_prefix: std::collections::HashMap<[u8; 4], Vec<&str>> = Default::default();
        for n in needles {
            let prefix: [u8; 4] = n.as_bytes()[..4]
                .try_into()
                .expect("every needle has four bytes");
            by_prefix.entry(prefix).or_default().push(n);
        }
        Finder { by_prefix }
    }

    fn find(&self, haystack: &[u8]) -> Option<&'a str> {
        haystack.windows(4).enumerate().find_map(|(i, w)| {
            let candidates = self.by_prefix.get(w)?;
            candidates
                .iter()
                .copied()
                .find(|n| haystack[i..].starts_with(n.as_bytes()))
        })
    }
}

#[test]
fn no_personal_data_reaches_the_lake_in_plaintext() {
    let (dir, _, _) = demo_home();
    let home = dir.path();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let secrets: Vec<String> = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            home.join("demo-crm.sqlite").display()
        ))
        .await
        .expect("source");
        let rows: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT display_name, phone, email FROM contacts")
                .fetch_all(&pool)
                .await
                .expect("rows");
        let mut v = Vec::new();
        for (name, phone, email) in rows {
            v.push(name);
            v.extend(phone);
            v.extend(email);
        }
        let staff: Vec<(String, String)> = sqlx::query_as("SELECT full_name, email FROM users")
            .fetch_all(&pool)
            .await
            .expect("rows");
        for (n, e) in staff {
            v.push(n);
            v.push(e);
        }
        v
    });
    assert!(secrets.len() > 1000);
    // One pass per file for all secrets at once.
    let finder = Finder::new(&secrets);
    // The search can fail: it finds the same secrets in the plaintext source.
    let source = std::fs::read(home.join("demo-crm.sqlite")).expect("source");
    assert!(
        finder.find(&source).is_some(),
        "the finder sees plaintext where there is some"
    );
    let files = files_under(&home.join("lake"));
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet"))
    );
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        if f.extension().is_some_and(|e| e == "parquet") {
            assert_eq!(&bytes[..4], b"PARE", "{}", f.display());
            assert_eq!(&bytes[bytes.len() - 4..], b"PARE", "{}", f.display());
        }
        if let Some(secret) = finder.find(&bytes) {
            panic!("{secret:?} is in plaintext in {}", f.display());
        }
    }
}

#[test]
fn a_crash_at_any_failpoint_leaves_the_last_snapshot_and_gc_collects_the_rest() {
    let (dir, _, _) = demo_home();
    let home = dir.path();
    let count = || {
        ok(
            home,
            &[
                "query",
                "SELECT COUNT(*) FROM interactions",
                "--format",
                "csv",
            ],
        )
    };
    let before = count();
    let files_before = parquet_files(home);
    for point in ["after-data-files", "before-commit"] {
        let out = kartoteka()
            .arg("--dir")
            .arg(home)
            .args(["ingest", "--full"])
            .env("KARTOTEKA_FAILPOINT", point)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: the process must die");
        assert!(
            stderr.contains(&format!("failpoint {point} hit")),
            "{point} was not reached:\n{stderr}"
        );
        assert_eq!(snapshot_count(home), 1, "{point}: no new snapshot");
        assert!(
            parquet_files(home).len() > files_before.len(),
            "{point}: orphan files were written"
        );
        assert_eq!(count(), before);
    }
    // After the crash the commit point itself: the new snapshot is complete.
    let out = kartoteka()
        .arg("--dir")
        .arg(home)
        .args(["ingest", "--full"])
        .env("KARTOTEKA_FAILPOINT", "after-commit")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint after-commit hit"));
    assert_eq!(snapshot_count(home), 2);
    assert_eq!(count(), before);

    let gc = ok(home, &["gc", "--grace-seconds", "0"]);
    assert!(gc.contains("unreferenced files deleted"), "{gc}");
    // Only files of snapshots 1 and 2 remain: the orphans of both crashes are gone.
    let left = parquet_files(home).len();
    assert_eq!(left, 2 * files_before.len(), "{gc}");
    assert_eq!(ok(home, &["snapshots"]).lines().count(), 2);
}

fn with_mapping_edit(home: &Path, table: &str, new_query: &str) -> PathBuf {
    let text = std::fs::read_to_string(home.join("demo-mapping.toml")).expect("mapping");
    let mut doc: toml::Table = toml::from_str(&text).expect("toml");
    let tables = doc
        .get_mut("tables")
        .and_then(|t| t.as_table_mut())
        .expect("tables");
    if new_query.is_empty() {
        tables.remove(table);
    } else {
        tables
            .get_mut(table)
            .and_then(|t| t.as_table_mut())
            .expect("table")
            .insert("query".into(), new_query.into());
    }
    let n = std::fs::read_dir(home).map(|d| d.count()).unwrap_or(0);
    let path = home.join(format!("broken-{table}-{n}.toml"));
    std::fs::write(&path, toml::to_string(&doc).expect("serialises")).expect("write");
    path
}

#[test]
fn bad_input_is_a_clear_error_and_commits_nothing() {
    let (dir, _, _) = demo_home();
    let home = dir.path();
    let db = home.join("demo-crm.sqlite");
    let db = db.to_str().expect("utf-8 path");
    let files = parquet_files(home);
    let cases: Vec<(PathBuf, &str, Vec<&str>)> = vec![
        (
            // A table may be left out (unmapped), but not its key.
            with_mapping_edit(
                home,
                "payments",
                "SELECT contact_id AS client_id, lead_id AS deal_id, total_kopecks AS amount, paid_at, modified_at AS updated_at FROM invoices",
            ),
            db,
            vec![
                "payments",
                "no column payment_id",
                "a key may not be left out",
            ],
        ),
        (
            with_mapping_edit(
                home,
                "payments",
                "SELECT id AS payment_id, contact_id AS client_id, lead_id AS deal_id, total_kopecks / 100.0 AS amount, paid_at, modified_at AS updated_at FROM invoices",
            ),
            db,
            vec!["payments", "amount", "floating-point", "exact"],
        ),
        (
            with_mapping_edit(
                home,
                "clients",
                "SELECT 'c-' || id AS client_id, contact_type AS kind, display_name AS name, phone, email, city, country_code AS country, industry, lead_source AS source, responsible_user_id AS owner_id, created_at, pd_consent_at AS consent_at, modified_at AS updated_at FROM contacts",
            ),
            db,
            vec![
                "clients",
                "client_id",
                "row 1",
                "found text, expected an integer",
                "[keys] text = true",
            ],
        ),
        (
            with_mapping_edit(
                home,
                "deals",
                "SELECT id AS deal_id, contact_id AS clientid FROM leads",
            ),
            db,
            vec!["deals", "unexpected column clientid"],
        ),
        (
            home.join("demo-mapping.toml"),
            "/nonexistent/crm.sqlite",
            vec!["cannot open source", "/nonexistent/crm.sqlite"],
        ),
    ];
    for (mapping, source, expected) in cases {
        let e = fail(
            home,
            &[
                "ingest",
                "--sqlite",
                source,
                "--mapping",
                mapping.to_str().expect("utf-8"),
                "--replace-demo",
            ],
        );
        for needle in expected {
            assert!(
                e.contains(needle),
                "error for {} lacks {needle:?}:\n{e}",
                mapping.display()
            );
        }
        assert_eq!(snapshot_count(home), 1, "nothing committed");
        assert_eq!(parquet_files(home), files, "no files left behind");
    }
    // A file that is not a database at all.
    let junk = home.join("junk.sqlite");
    std::fs::write(&junk, b"this is not a database, just text").expect("write");
    let mapping = home.join("demo-mapping.toml");
    let e = fail(
        home,
        &[
            "ingest",
            "--sqlite",
            junk.to_str().expect("utf-8"),
            "--mapping",
            mapping.to_str().expect("utf-8"),
            "--replace-demo",
        ],
    );
    assert!(e.contains("cannot open source"), "{e}");
    assert!(
        !std::fs::read_to_string(home.join("kartoteka.toml"))
            .expect("config")
            .contains("junk"),
        "a failed source is not registered"
    );
}

/// Set `[sources.demo] schedule` in the home's config.
fn schedule_demo_source(home: &Path, schedule: &str) {
    let file = home.join("kartoteka.toml");
    let mut config: toml::Table = std::fs::read_to_string(&file)
        .expect("config")
        .parse()
        .expect("toml");
    config["sources"]["demo"]
        .as_table_mut()
        .expect("the demo source")
        .insert("schedule".into(), schedule.into());
    std::fs::write(&file, config.to_string()).expect("write config");
}

fn ok_runs(home: &Path) -> usize {
    let runs: serde_json::Value =
        serde_json::from_str(&ok(home, &["runs", "--format", "json", "--limit", "1000"]))
            .expect("json");
    runs.as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["source"] == "demo" && r["outcome"] == "ok")
        .count()
}

#[test]
fn serve_ingests_on_schedule_and_stops_cleanly() {
    let (dir, _, _) = demo_home();
    let home = dir.path();

    // A schedule that cannot be parsed stops serve before anything runs, naming the field.
    schedule_demo_source(home, "0 25 * * *");
    let e = fail(home, &["serve"]);
    assert!(
        e.contains("[sources.demo] schedule") && e.contains("0 25 * * *"),
        "{e}"
    );

    let before = ok_runs(home);
    schedule_demo_source(home, "*/2 * * * * *");
    // The web server joins the same process, on a port the OS picks, with a generated certificate.
    let config = home.join("kartoteka.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{text}\n[web]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("config");
    let log = std::fs::File::create(home.join("serve.log")).expect("log");
    let mut child = kartoteka()
        .arg("--dir")
        .arg(home)
        .arg("serve")
        .stderr(log)
        .spawn()
        .expect("serve starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while ok_runs(home) < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no two scheduled runs in 120 s:\n{}",
            std::fs::read_to_string(home.join("serve.log")).unwrap_or_default()
        );
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "serve exited ({status}):\n{}",
                std::fs::read_to_string(home.join("serve.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let status = child.wait().expect("serve exits");
    let log = std::fs::read_to_string(home.join("serve.log")).expect("log");
    assert!(status.success(), "serve stopped with {status}:\n{log}");
    assert!(
        log.contains("job ingest:demo") && log.contains("stopping"),
        "{log}"
    );
    assert!(
        log.contains("web: https://127.0.0.1:")
            && log.contains("certificate SHA-256")
            && home.join("tls").join("ca.pem").exists(),
        "{log}"
    );

    // Every scheduled run is in the audit log, between serve's start and stop, and the chain holds.
    let tail = ok(home, &["audit", "tail", "--lines", "200"]);
    let start = tail.find("serve.start").expect("serve.start audited");
    let stop = tail.rfind("serve.stop").expect("serve.stop audited");
    assert!(
        tail[start..stop].matches("ingest").count() >= 2,
        "scheduled ingests audited:\n{tail}"
    );
    ok(home, &["audit", "verify"]);
    // The lake is whole: the demo's metrics still answer.
    ok(home, &["metric", "revenue_by_month"]);
}
