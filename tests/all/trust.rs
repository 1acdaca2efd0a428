//! Trust the lake: what a careless or hostile operator does to a home — files deleted, edited or
//! copied, disks filled, typos in destructive commands, generated SQL — is detected and explained,
//! never answered silently wrong, never locks the home, never loses history.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{fail, kartoteka, ok, run};

/// A private copy of the shared demo home.
fn home() -> tempfile::TempDir {
    common::copy_home()
}

fn snapshots_dir(home: &Path) -> PathBuf {
    home.join("lake/_meta/snapshots")
}

fn snapshot_file(home: &Path, id: u64) -> PathBuf {
    snapshots_dir(home).join(format!("{id:020}.json"))
}

fn snapshot_files(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(snapshots_dir(home))
        .expect("snapshots")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn table_files(home: &Path, table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![home.join("lake/tables").join(table)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn audit_text(home: &Path) -> String {
    std::fs::read_to_string(home.join("audit/audit.jsonl")).expect("audit log")
}

/// A demo manager's login and staff id.
fn a_manager(home: &Path) -> (String, i64) {
    let users: serde_json::Value =
        serde_json::from_str(&ok(home, &["users", "list", "--format", "json"])).expect("json");
    users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["role"] == "manager")
        .map(|u| {
            (
                u["login"].as_str().expect("login").to_string(),
                u["staff_id"].as_i64().expect("staff id"),
            )
        })
        .expect("a manager")
}

const PAYMENTS: &str = "SELECT COUNT(*), SUM(amount) FROM payments";

// ---- 1. missing data files -------------------------------------------------------------------

#[test]
fn a_missing_or_truncated_data_file_fails_every_read_and_write_naming_it() {
    let dir = home();
    let home = dir.path();
    let files = table_files(home, "payments");
    assert!(!files.is_empty());
    std::fs::remove_file(&files[0]).expect("rm");
    let name = files[0]
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .to_string();
    for args in [
        vec!["query", PAYMENTS],
        vec!["metric", "revenue_by_month"],
        vec!["ingest"],
    ] {
        let err = fail(home, &args);
        assert!(
            err.contains(&name) && err.contains("payments") && err.contains("is missing"),
            "{args:?}: {err}"
        );
    }
    // The failed incremental ingest committed nothing from the damaged snapshot.
    assert_eq!(snapshot_files(home).len(), 1);

    // A file cut short is named too (its size differs from the one recorded).
    let dir = self::home();
    let home = dir.path();
    let file = &table_files(home, "deals")[0];
    let len = std::fs::metadata(file).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    let err = fail(home, &["query", "SELECT COUNT(*) FROM deals"]);
    assert!(
        err.contains("deals") && err.contains(&format!("has {} bytes where {len}", len / 2)),
        "{err}"
    );

    // `ingest --full` rebuilds the table from the source: the way out named in the message.
    ok(home, &["ingest", "--full"]);
    let counts = ok(
        home,
        &["query", "SELECT COUNT(*) FROM deals", "--format", "csv"],
    );
    assert!(counts.lines().nth(1).is_some_and(|n| n != "0"), "{counts}");
}

// ---- 2, 3. snapshots: rollback, edits, stray copies -------------------------------------------

#[test]
fn deleting_the_newest_snapshot_is_reported_as_a_rollback_until_trusted() {
    let dir = home();
    let home = dir.path();
    ok(home, &["ingest", "--full"]);
    assert_eq!(snapshot_files(home).len(), 2);
    std::fs::remove_file(snapshot_file(home, 2)).expect("rm");
    let err = fail(home, &["query", PAYMENTS]);
    assert!(
        err.contains("rolled back")
            && err.contains("snapshot 2")
            && err.contains("snapshots trust"),
        "{err}"
    );
    // Ingest refuses too (it would build on the older snapshot).
    let err = fail(home, &["ingest"]);
    assert!(err.contains("rolled back"), "{err}");
    // Without a terminal the deliberate way out asks for --yes.
    let err = fail(home, &["snapshots", "trust"]);
    assert!(err.contains("--yes"), "{err}");
    ok(home, &["snapshots", "trust", "--yes"]);
    let out = ok(home, &["query", PAYMENTS]);
    assert!(out.contains("data as of snapshot 1"), "{out}");
    assert!(audit_text(home).contains("\"lake.trust\""));
    // Every commit is in the audit log with its code.
    assert!(audit_text(home).contains("\"lake.commit\""));
}

#[test]
fn an_edited_snapshot_is_refused() {
    let dir = home();
    let home = dir.path();
    let path = snapshot_file(home, 1);
    let mut snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    // Empty the payments table, as someone hiding revenue would.
    snapshot["tables"]["payments"]["files"] = serde_json::json!([]);
    std::fs::write(&path, serde_json::to_vec_pretty(&snapshot).expect("json")).expect("write");
    let err = fail(home, &["query", PAYMENTS]);
    assert!(err.contains("authentication code does not match"), "{err}");
    // Stripping the code does not help.
    snapshot.as_object_mut().expect("an object").remove("mac");
    std::fs::write(&path, serde_json::to_vec_pretty(&snapshot).expect("json")).expect("write");
    let err = fail(home, &["query", PAYMENTS]);
    assert!(err.contains("carries no authentication code"), "{err}");
}

#[test]
fn a_lake_from_before_authenticated_snapshots_is_sealed_once_by_the_owner() {
    let dir = home();
    let home = dir.path();
    // What an earlier Kartoteka wrote: manifest format 1, no codes.
    let path = snapshot_file(home, 1);
    let mut snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let object = snapshot.as_object_mut().expect("an object");
    object.remove("mac");
    object.remove("parent_mac");
    object.insert("format".into(), 1.into());
    std::fs::write(&path, serde_json::to_vec_pretty(&snapshot).expect("json")).expect("write");
    let err = fail(home, &["query", PAYMENTS]);
    assert!(err.contains("snapshots trust --yes"), "{err}");
    ok(home, &["snapshots", "trust", "--yes"]);
    let out = ok(home, &["query", PAYMENTS]);
    assert!(out.contains("data as of snapshot 2"), "{out}");
    ok(home, &["ingest"]);
    assert_eq!(snapshot_files(home).len(), 3);
}

#[test]
fn a_stray_copy_of_a_snapshot_under_a_higher_number_is_refused_by_readers_and_writers() {
    let dir = home();
    let home = dir.path();
    std::fs::copy(snapshot_file(home, 1), snapshot_file(home, 9)).expect("copy");
    for args in [vec!["query", PAYMENTS], vec!["ingest"]] {
        let err = fail(home, &args);
        assert!(
            err.contains("named for snapshot 9 but holds snapshot 1"),
            "{args:?}: {err}"
        );
    }
    // Nothing was committed beside it; removing it heals the home.
    assert_eq!(snapshot_files(home).len(), 2);
    std::fs::remove_file(snapshot_file(home, 9)).expect("rm");
    ok(home, &["ingest"]);
    let out = ok(home, &["query", PAYMENTS]);
    assert!(out.contains("data as of snapshot 2"), "{out}");
}

// ---- 4. reconciliation before the commit ----------------------------------------------------

#[test]
fn a_source_with_a_duplicate_key_commits_nothing() {
    let dir = home();
    let home = dir.path();
    let mapping = std::fs::read_to_string(home.join("demo-mapping.toml")).expect("mapping");
    let staff_query_end = "FROM users\n\"\"\"";
    assert!(mapping.contains(staff_query_end));
    let doubled = mapping.replacen(
        staff_query_end,
        "FROM (SELECT * FROM users UNION ALL SELECT * FROM users WHERE id = (SELECT MIN(id) FROM users))\n\"\"\"",
        1,
    );
    std::fs::write(home.join("dup-mapping.toml"), doubled).expect("write");
    let before = snapshot_files(home);
    let err = fail(
        home,
        &[
            "ingest",
            "--sqlite",
            home.join("demo-crm.sqlite").to_str().expect("utf-8 path"),
            "--mapping",
            home.join("dup-mapping.toml").to_str().expect("utf-8 path"),
            "--name",
            "dup",
            "--full",
            "--replace-demo",
        ],
    );
    assert!(
        err.contains("reconciliation failed, nothing was committed")
            && err.contains("table staff")
            && err.contains("1 keys held twice"),
        "{err}"
    );
    assert_eq!(snapshot_files(home), before);
    let out = ok(
        home,
        &[
            "query",
            "SELECT COUNT(*) - COUNT(DISTINCT staff_id) FROM staff",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.lines().nth(1), Some("0"), "{out}");
    let runs = ok(home, &["runs", "--format", "json"]);
    assert!(runs.contains("\"mismatch\""), "{runs}");
}

// ---- 5. a lake without its keyring -----------------------------------------------------------

#[test]
fn a_lake_without_its_keyring_is_damaged_and_never_gets_a_new_one() {
    let dir = home();
    let home = dir.path();
    let keyring = home.join("lake/_meta/keyring.json");
    std::fs::remove_file(&keyring).expect("rm");
    for args in [
        vec!["query", PAYMENTS],
        vec!["ingest"],
        vec!["ingest", "--full"],
    ] {
        let err = fail(home, &args);
        assert!(
            err.contains("keyring") && err.contains("missing") && err.contains("damaged"),
            "{args:?}: {err}"
        );
        assert!(!keyring.exists(), "{args:?} wrote a new keyring");
    }
}

// ---- 6. erasure of a mistyped id -------------------------------------------------------------

#[test]
fn erasing_an_unknown_client_changes_nothing_and_erasure_asks_first() {
    let dir = home();
    let home = dir.path();
    let before = snapshot_files(home);
    let err = fail(home, &["erase", "--client", "999999", "--yes"]);
    assert!(err.contains("no client 999999"), "{err}");
    assert_eq!(snapshot_files(home), before);
    // A real client, without --yes and without a terminal: the plan is shown, nothing changes.
    let err = fail(home, &["erase", "--client", "1"]);
    assert!(
        err.contains("removes, for good") && err.contains("clients 1") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(snapshot_files(home), before);
    ok(home, &["erase", "--client", "1", "--yes"]);
    let err = fail(home, &["erase", "--client", "1", "--yes"]);
    assert!(err.contains("erased already"), "{err}");
}

// ---- 7. torn audit tails ---------------------------------------------------------------------

#[test]
fn a_torn_audit_tail_is_repaired_recorded_and_verified() {
    let dir = home();
    let home = dir.path();
    let log = home.join("audit/audit.jsonl");
    let entries = audit_text(home).lines().count();
    let torn = b"{\"seq\":99999,\"ts\":\"2026-";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    std::io::Write::write_all(&mut f, torn).expect("write");
    drop(f);
    // Before the repair: the intact entries are counted, the torn line explained.
    let out = ok(home, &["audit", "verify"]);
    assert!(
        out.contains(&format!("intact: {entries} entries")) && out.contains("incomplete"),
        "{out}"
    );
    // The next audited command repairs it and records the repair.
    ok(home, &["query", "SELECT 1"]);
    let text = audit_text(home);
    assert!(text.ends_with('\n'));
    assert!(!text.contains("99999"));
    let out = ok(home, &["audit", "verify"]);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(torn))
    };
    assert!(
        out.contains("repair recorded") && out.contains(&sha) && out.contains("audit log intact"),
        "{out}"
    );

    // A torn checkpoint is dropped, not a permanent false alarm.
    let cps = home.join("audit/checkpoints.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&cps)
        .expect("open");
    std::io::Write::write_all(&mut f, b"{\"seq\":12,\"ha").expect("write");
    drop(f);
    let out = ok(home, &["audit", "verify"]);
    assert!(out.contains("incomplete checkpoint"), "{out}");
    ok(home, &["query", "SELECT 1"]);
    let out = ok(home, &["audit", "verify"]);
    assert!(
        out.contains("audit log intact") && !out.contains("incomplete"),
        "{out}"
    );
}

// ---- 8, 9. interrupted rotation, deleted security state ---------------------------------------

#[test]
fn an_interrupted_key_rotation_is_finished_when_the_lake_is_next_opened() {
    let dir = home();
    let home = dir.path();
    let old_key = std::fs::read(home.join("master.key")).expect("key");
    std::fs::copy(home.join("master.key"), home.join("old.key")).expect("backup");
    ok(home, &["keys", "rotate"]);
    // The state a crash between re-wrapping and moving the new key into place leaves.
    std::fs::rename(home.join("master.key"), home.join("master.key.new")).expect("mv");
    std::fs::copy(home.join("old.key"), home.join("master.key")).expect("old key back");
    let out = run(home, &["query", PAYMENTS]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!home.join("master.key.new").exists());
    assert_ne!(
        std::fs::read(home.join("master.key")).expect("key"),
        old_key
    );
    ok(home, &["keys", "rotate"]);
    ok(home, &["query", PAYMENTS]);
}

#[test]
fn deleted_security_state_is_reported_not_silently_recreated() {
    let dir = home();
    let home = dir.path();
    std::fs::remove_file(home.join("audit/checkpoint.key")).expect("rm");
    let err = fail(home, &["query", PAYMENTS]);
    assert!(
        err.contains("signing key") && err.contains("missing"),
        "{err}"
    );
    assert!(!home.join("audit/checkpoint.key").exists());

    let dir = self::home();
    let home = dir.path();
    std::fs::remove_file(home.join("control.sqlite")).expect("rm");
    for args in [vec!["users", "list"], vec!["query", PAYMENTS]] {
        let err = fail(home, &args);
        assert!(
            err.contains("control database") && err.contains("missing"),
            "{args:?}: {err}"
        );
    }
    assert!(!home.join("control.sqlite").exists());
}

// ---- 10–13. statements that took the process down -------------------------------------------

/// Run with a wall-clock bound: a hung process is killed and the test fails (not a timing
/// assertion: the bound is far above the statement's own limit).
fn run_bounded(
    home: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    bound: Duration,
) -> std::process::Output {
    let mut child = kartoteka()
        .arg("--dir")
        .arg(home)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > bound {
            child.kill().ok();
            panic!("kartoteka {args:?} still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn generated_statements_get_a_clear_error_not_an_abort() {
    let dir = home();
    let home = dir.path();
    let ors = (1..=4000)
        .map(|i| format!("client_id = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sums = vec!["1"; 30_000].join("+");
    for sql in [
        format!("SELECT COUNT(*) FROM clients WHERE {ors}"),
        format!("SELECT {sums}"),
        format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200)),
    ] {
        let out = run_bounded(home, &["query", &sql], &[], Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("limit reached"), "{stderr}");
    }
    // Below the limit, a long chain answers (and does not overflow the stack).
    let sum = vec!["client_id - client_id + 1"; 166].join(" + ");
    let out = ok(
        home,
        &[
            "query",
            &format!("SELECT SUM({sum}) / COUNT(*) FROM clients"),
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.lines().nth(1), Some("166"), "{out}");
    // A long list as IN (…) is the way out the message names, and it answers.
    let list = (1..=4000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    ok(
        home,
        &[
            "query",
            &format!("SELECT COUNT(*) FROM clients WHERE client_id IN ({list})"),
        ],
    );
}

#[test]
fn a_cpu_bound_cross_join_stops_at_its_time_limit() {
    let dir = home();
    let home = dir.path();
    let out = run_bounded(
        home,
        &[
            "query",
            // (A sum, not COUNT(*): the owner's COUNT(*) of a cross join is answered from the
            // files' row counts without running it.)
            "SELECT SUM(a.interaction_id + b.interaction_id + c.interaction_id) \
             FROM interactions a, interactions b, interactions c",
        ],
        &[("KARTOTEKA_QUERY_TIMEOUT_SECONDS", "2")],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("exceeded the time limit of 2 s"),
        "{stderr}"
    );
}

#[test]
fn sized_functions_are_bounded_by_what_they_produce() {
    let dir = home();
    let home = dir.path();
    let (manager, _) = a_manager(home);
    for sql in [
        "SELECT length(repeat(repeat('x', 100000), 20000))",
        "SELECT cardinality(array_resize(make_array(1), 300000000))",
        "SELECT length(replace(repeat('x', 100000), 'x', repeat('y', 30000)))",
        "SELECT cardinality(range(0, 1000000000))",
        "SELECT length(lpad(name, 2000000000, 'y')) FROM clients",
    ] {
        for who in ["analyst", manager.as_str()] {
            let out = run_bounded(
                home,
                &["query", sql, "--as", who],
                &[("KARTOTEKA_MEMORY_LIMIT_MB", "256")],
                Duration::from_secs(120),
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{sql} as {who}: {stderr}");
            assert!(
                stderr.contains("MB one function call may produce"),
                "{sql}: {stderr}"
            );
        }
    }
    // Within the bound they work as before.
    let out = ok(
        home,
        &[
            "query",
            "SELECT length(repeat('ab', 1000)), cardinality(range(0, 1000))",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.lines().nth(1), Some("2000,1000"), "{out}");
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_an_error() {
    let dir = home();
    let home = dir.path();
    let mut child = kartoteka()
        .arg("--dir")
        .arg(home)
        .args(["query", "SELECT * FROM interactions", "--format", "csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // the reader goes away, as `| head -2` does
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    if Path::new("/dev/full").exists() {
        let out = kartoteka()
            .arg("--dir")
            .arg(home)
            .args(["keys", "list"])
            .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("No space left on device"), "{stderr}");
    }
}

// ---- 14–16. private by default ---------------------------------------------------------------

#[cfg(unix)]
#[test]
fn the_home_is_private_and_a_readable_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    // A home the demo creates (the directory did not exist).
    let parent = tempfile::tempdir().expect("tempdir");
    let home = parent.path().join("new-home");
    let out = kartoteka()
        .args(["demo", "--scale", "0.01", "--end", "2025-07-01", "--dir"])
        .arg(&home)
        .output()
        .expect("demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let home = home.as_path();
    let mode = |p: PathBuf| std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(home.to_path_buf()), 0o700);
    for f in [
        "control.sqlite",
        "master.key",
        "kartoteka.toml",
        "audit/audit.jsonl",
        "audit/checkpoints.jsonl",
        "audit/checkpoint.key",
    ] {
        assert_eq!(mode(home.join(f)), 0o600, "{f}");
    }
    let dir = self::home();
    let home = dir.path();
    std::fs::set_permissions(
        home.join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let err = fail(home, &["query", PAYMENTS]);
    assert!(
        err.contains("readable by other users") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn errors_in_the_audit_log_carry_no_row_values_even_the_owners() {
    let dir = home();
    let home = dir.path();
    let email = ok(
        home,
        &[
            "query",
            "SELECT email FROM clients WHERE email IS NOT NULL ORDER BY client_id LIMIT 1",
            "--format",
            "csv",
        ],
    );
    let email = email.lines().nth(1).expect("an e-mail").to_string();
    let err = fail(
        home,
        &[
            "query",
            "SELECT CAST(email AS INT) FROM clients WHERE email IS NOT NULL",
        ],
    );
    assert!(err.contains("Cannot cast") || err.contains("cast"), "{err}");
    assert!(
        !audit_text(home).contains(&email),
        "the audit log holds {email}"
    );
}

#[test]
fn managers_see_their_colleagues_names_but_not_their_e_mails() {
    let dir = home();
    let home = dir.path();
    let (manager, me) = a_manager(home);
    let all = ok(
        home,
        &[
            "query",
            "SELECT staff_id, full_name, email FROM staff ORDER BY staff_id",
            "--format",
            "csv",
        ],
    );
    let as_manager = ok(
        home,
        &[
            "query",
            "SELECT staff_id, full_name, email FROM staff ORDER BY staff_id",
            "--format",
            "csv",
            "--as",
            &manager,
        ],
    );
    let (mut own, mut others) = (0, 0);
    for (want, got) in all.lines().skip(1).zip(as_manager.lines().skip(1)) {
        let want: Vec<&str> = want.split(',').collect();
        let got: Vec<&str> = got.split(',').collect();
        assert_eq!(want[..2], got[..2], "names are visible");
        if want[0] == me.to_string() {
            assert_eq!(want[2], got[2], "their own e-mail is visible");
            own += 1;
        } else {
            assert!(got[2].starts_with("tok_") && want[2] != got[2], "{got:?}");
            others += 1;
        }
    }
    assert_eq!(own, 1);
    assert!(others > 0);
}

// ---- smaller -------------------------------------------------------------------------------

#[test]
fn wrong_parameters_and_settings_are_errors_not_empty_answers() {
    let dir = home();
    let home = dir.path();
    for (args, want) in [
        (
            vec![
                "metric",
                "revenue_by_month",
                "-p",
                "from=2025-06-01",
                "-p",
                "to=2025-01-01",
            ],
            "must not be after",
        ),
        (
            vec!["metric", "cohort_retention", "-p", "months=500"],
            "between 0 and 120",
        ),
        (
            vec!["metric", "stalled_deals", "-p", "days=-3"],
            "between 1 and 3660",
        ),
        (
            vec!["metric", "funnel_conversion", "-p", "pipeline=Нет такой"],
            "no pipeline \"Нет такой\"",
        ),
        (
            vec![
                "metric",
                "revenue_by_month",
                "-p",
                "from=2025-01-01",
                "-p",
                "from=2025-02-01",
            ],
            "given twice",
        ),
    ] {
        let err = fail(home, &args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let err = fail(
        home,
        &[
            "metric",
            "revenue_by_month",
            "--chart",
            home.join("kartoteka.toml/x.svg")
                .to_str()
                .expect("utf-8 path"),
        ],
    );
    assert!(
        err.contains("kartoteka.toml") && err.contains("not a directory"),
        "{err}"
    );
    let out = kartoteka()
        .arg("--dir")
        .arg(home)
        .args(["query", "SELECT 1"])
        .env("KARTOTEKA_MEMORY_LIMIT_MB", "0")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("memory_limit_mb = 0"),
        "{err}"
    );
}
