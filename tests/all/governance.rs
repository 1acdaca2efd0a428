//! Users, previews (`--as`), the audit log, key rotation, the security metrics and the privacy
//! report, through the binary — each on its own copy of one demo home.

use std::path::Path;

use crate::common::{self, fail, ok};

/// The single value of a one-cell CSV answer.
fn scalar(dir: &Path, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.extend(["--format", "csv"]);
    let out = ok(dir, &a);
    out.lines().nth(1).expect("a value").trim().to_string()
}

/// The demo's users, and one manager's login and staff id.
fn a_manager(home: &Path) -> (String, i64) {
    let users: serde_json::Value =
        serde_json::from_str(&ok(home, &["users", "list", "--format", "json"])).expect("json");
    let manager = users
        .as_array()
        .expect("array")
        .iter()
        .find(|u| u["role"] == "manager")
        .expect("a manager")
        .clone();
    (
        manager["login"].as_str().expect("login").to_string(),
        manager["staff_id"].as_i64().expect("staff id"),
    )
}

#[test]
fn every_role_has_a_login_and_a_preview_is_the_owners_answer_restricted_by_hand() {
    let (_, demo, _) = common::shared_demo_home();
    assert!(
        demo.contains("demo users (initial passwords, shown once)"),
        "{demo}"
    );
    let dir = common::copy_home();
    let home = dir.path();
    // Users: every role at once.
    let users: serde_json::Value =
        serde_json::from_str(&ok(home, &["users", "list", "--format", "json"])).expect("json");
    let users = users.as_array().expect("array");
    let login = |role: &str| {
        users
            .iter()
            .find(|u| u["role"] == role)
            .unwrap_or_else(|| panic!("a {role}"))
    };
    for role in ["owner", "admin", "analyst", "manager", "team_lead"] {
        login(role);
    }
    let manager = login("manager");
    let m_login = manager["login"].as_str().expect("login");
    let m_staff = manager["staff_id"].as_i64().expect("staff id");

    // A manager's preview equals the owner's answer restricted by hand.
    let mine = scalar(
        home,
        &["query", "SELECT COUNT(*) FROM clients", "--as", m_login],
    );
    let want = scalar(
        home,
        &[
            "query",
            &format!("SELECT COUNT(*) FROM clients WHERE owner_id = {m_staff}"),
        ],
    );
    assert_eq!(mine, want);
    let all = scalar(home, &["query", "SELECT COUNT(*) FROM clients"]);
    assert_ne!(mine, all, "the manager sees a part, not all");
    // The same metric, run as the manager, covers only their deals.
    let funnel = ok(
        home,
        &[
            "metric",
            "funnel_conversion",
            "--as",
            m_login,
            "--format",
            "csv",
        ],
    );
    assert!(funnel.lines().count() > 1, "{funnel}");
    let err = fail(
        home,
        &["query", "SELECT COUNT(*) FROM clients", "--as", "admin"],
    );
    assert!(err.contains("reads no CRM data"), "{err}");
    let tok = ok(
        home,
        &[
            "query",
            "SELECT email FROM clients LIMIT 3",
            "--as",
            "analyst",
            "--format",
            "csv",
        ],
    );
    assert!(tok.lines().skip(1).all(|l| l.starts_with("tok_")), "{tok}");
}

#[test]
fn user_changes_are_audited_without_passwords() {
    let dir = common::copy_home();
    let home = dir.path();
    // User management, audited without the password.
    let added = ok(home, &["users", "add", "bob", "--role", "analyst"]);
    let password = added
        .lines()
        .last()
        .expect("password line")
        .trim()
        .to_string();
    assert_eq!(password.len(), 20, "{added}");
    let err = fail(home, &["users", "set-role", "bob", "manager"]);
    assert!(err.contains("no staff record"), "{err}");
    let err = fail(home, &["users", "add", "bob", "--role", "analyst"]);
    assert!(err.contains("already exists"), "{err}");
    let err = fail(home, &["users", "add", "eve", "--role", "superuser"]);
    assert!(err.contains("unknown role"), "{err}");
    ok(home, &["users", "disable", "bob"]);
    let err = fail(home, &["query", "SELECT 1", "--as", "bob"]);
    assert!(err.contains("disabled"), "{err}");
    let reset = ok(home, &["users", "reset", "analyst"]);
    let reset_password = reset.lines().last().expect("line").trim().to_string();
    let log = std::fs::read_to_string(home.join("audit/audit.jsonl")).expect("audit log");
    assert!(
        !log.contains(&password) && !log.contains(&reset_password),
        "a password reached the audit log"
    );
    assert!(
        !log.contains(
            &std::fs::read_to_string(home.join("master.key"))
                .expect("key")
                .trim()
                .to_string()
        )
    );
}

#[test]
fn the_audit_log_is_queryable_by_the_owner_and_verifiable() {
    let dir = common::copy_home();
    let home = dir.path();
    // What the log should hold: two previews of a manager, a refused session, user changes.
    let (m_login, _) = a_manager(home);
    let m_login = m_login.as_str();
    for _ in 0..2 {
        ok(
            home,
            &["query", "SELECT COUNT(*) FROM clients", "--as", m_login],
        );
    }
    fail(
        home,
        &["query", "SELECT COUNT(*) FROM clients", "--as", "admin"],
    );
    ok(home, &["users", "add", "bob", "--role", "analyst"]);
    ok(home, &["users", "disable", "bob"]);
    ok(home, &["users", "reset", "analyst"]);

    // The audit log: every query and change, queryable by the owner, verifiable.
    let actions = ok(
        home,
        &[
            "query",
            "SELECT action, outcome, COUNT(*) AS n FROM audit_log GROUP BY action, outcome ORDER BY action, outcome",
            "--format",
            "csv",
        ],
    );
    for a in [
        "ingest,ok",
        "query,ok",
        "session,denied",
        "users.add,ok",
        "users.set-status,ok",
        "users.reset,ok",
    ] {
        assert!(actions.contains(a), "{a} missing from\n{actions}");
    }
    let previews = scalar(
        home,
        &[
            "query",
            &format!(
                "SELECT COUNT(*) FROM audit_log WHERE actor = 'owner' AND details LIKE '%\"as\":\"{m_login}\"%'"
            ),
        ],
    );
    assert!(
        previews.parse::<u32>().expect("count") >= 2,
        "previews are audited as the owner's"
    );
    let own = scalar(
        home,
        &[
            "query",
            "SELECT COUNT(DISTINCT actor) FROM audit_log",
            "--as",
            m_login,
        ],
    );
    assert_eq!(
        own, "0",
        "a manager sees only their own entries (they have none: the owner previewed)"
    );
    let verified = ok(home, &["audit", "verify"]);
    assert!(verified.contains("audit log intact"), "{verified}");
    let path = home.join("audit/audit.jsonl");
    let original = std::fs::read(&path).expect("read");
    let mut tampered = original.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x20;
    std::fs::write(&path, &tampered).expect("write");
    let err = fail(home, &["audit", "verify"]);
    assert!(err.contains("BROKEN") && err.contains("line"), "{err}");
    std::fs::write(&path, &original).expect("restore");
    // Truncation after the last command's checkpoint is caught too.
    let lines: Vec<&[u8]> = original
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut cut = lines[..lines.len() - 1].join(&b'\n');
    cut.push(b'\n');
    std::fs::write(&path, &cut).expect("truncate");
    let err = fail(home, &["audit", "verify"]);
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&path, &original).expect("restore");
    let tail = ok(home, &["audit", "tail", "-n", "3"]);
    assert_eq!(tail.lines().count(), 3);
}

#[test]
fn key_rotation_keeps_the_data_readable_and_the_old_key_dead() {
    let dir = common::copy_home();
    let home = dir.path();
    // Key rotation: the master key, then the data keys; the data stays readable, the old key is dead.
    let question = "SELECT COUNT(*), SUM(amount) FROM deals";
    let before = ok(home, &["query", question, "--format", "csv"]);
    let names = ok(
        home,
        &[
            "query",
            "SELECT name FROM clients ORDER BY client_id LIMIT 5",
            "--format",
            "csv",
        ],
    );
    let old_key = std::fs::read_to_string(home.join("master.key")).expect("key");
    ok(home, &["keys", "rotate"]);
    assert_ne!(
        std::fs::read_to_string(home.join("master.key")).expect("key"),
        old_key
    );
    assert_eq!(ok(home, &["query", question, "--format", "csv"]), before);
    let stale = tempfile::tempdir().expect("tempdir");
    common::copy_dir(home, stale.path());
    std::fs::write(stale.path().join("master.key"), &old_key).expect("old key");
    let err = fail(stale.path(), &["query", question]);
    assert!(
        err.contains("master key") || err.contains("key file"),
        "{err}"
    );
    ok(home, &["keys", "rotate", "--data"]);
    assert_eq!(ok(home, &["query", question, "--format", "csv"]), before);
    assert_eq!(
        ok(
            home,
            &[
                "query",
                "SELECT name FROM clients ORDER BY client_id LIMIT 5",
                "--format",
                "csv"
            ]
        ),
        names
    );
    let keys = ok(home, &["keys", "list"]);
    assert!(
        keys.contains("clients.pii.v2") && keys.contains("clients.pii.v1"),
        "{keys}"
    );
    let gc = ok(home, &["gc", "--grace-seconds", "0"]);
    assert!(
        !gc.contains("forgotten"),
        "v1 keys are still used by older snapshots: {gc}"
    );
    assert_eq!(ok(home, &["query", question, "--format", "csv"]), before);
}

#[test]
fn security_metrics_equal_the_same_questions_asked_of_the_raw_log() {
    let dir = common::copy_home();
    let home = dir.path();
    // Administrative actions for the metrics to find.
    ok(home, &["users", "reset", "analyst"]);
    ok(home, &["keys", "rotate", "--data"]);
    ok(home, &["gc", "--grace-seconds", "0"]);

    // Security metrics over the audit log equal the same questions asked of the raw log file.
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(home.join("audit/audit.jsonl"))
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry"))
        .collect();
    let admin: Vec<serde_json::Value> =
        serde_json::from_str(&ok(home, &["metric", "admin_actions", "--format", "json"]))
            .expect("json");
    let want: Vec<(u64, String)> = entries
        .iter()
        .rev()
        .filter(|e| {
            let a = e["action"].as_str().unwrap_or("");
            a.starts_with("users.") || a.starts_with("keys.") || a == "gc"
        })
        .map(|e| {
            (
                e["seq"].as_u64().expect("seq"),
                e["action"].as_str().expect("action").to_string(),
            )
        })
        .collect();
    let got: Vec<(u64, String)> = admin
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["action"].as_str().expect("action").to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(
        want.iter().any(|(_, a)| a == "keys.rotate-data")
            && want.iter().any(|(_, a)| a == "users.reset")
    );
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(home.join("audit/audit.jsonl"))
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry"))
        .collect();
    let mut after: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for e in &entries {
        if !matches!(e["action"].as_str(), Some("query" | "export")) {
            continue;
        }
        let t =
            chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().expect("ts")).expect("rfc3339");
        use chrono::{Datelike, Timelike};
        let weekend = matches!(t.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
        if weekend || t.hour() < 9 || t.hour() >= 19 {
            let c = after
                .entry(e["actor"].as_str().expect("actor").to_string())
                .or_default();
            c.0 += 1;
            c.1 += u64::from(e["outcome"] != "ok");
        }
    }
    let mut want: Vec<(String, u64, u64)> =
        after.into_iter().map(|(a, (n, r))| (a, n, r)).collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&ok(home, &["metric", "after_hours", "--format", "json"]))
            .expect("json");
    let got: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().expect("actor").to_string(),
                r["actions"].as_u64().expect("n"),
                r["refused"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(got, want);
    for m in ["login_failures", "exports_by_user"] {
        let out = ok(home, &["metric", m, "--format", "csv"]);
        assert_eq!(
            out.lines().count(),
            1,
            "no logins or exports exist yet: header only\n{out}"
        );
    }
    let err = fail(home, &["metric", "admin_actions", "--as", "analyst"]);
    assert!(err.contains("not available to role analyst"), "{err}");
}

#[test]
fn the_privacy_report_and_refusing_personal_data_without_consent() {
    let dir = common::copy_home();
    let home = dir.path();
    let all = scalar(home, &["query", "SELECT COUNT(*) FROM clients"]);
    // Privacy: residency and consent, checked against the owner's own count.
    let report: serde_json::Value =
        serde_json::from_str(&ok(home, &["privacy", "report", "--format", "json"])).expect("json");
    assert_eq!(report["jurisdiction"], "RU");
    let pii: Vec<String> = report["pii_columns"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| {
            format!(
                "{}.{}",
                c["table"].as_str().unwrap_or(""),
                c["column"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        pii.contains(&"clients.email".to_string())
            && pii.contains(&"interactions.summary".to_string())
    );
    let missing = scalar(
        home,
        &[
            "query",
            "SELECT COUNT(*) FROM clients WHERE consent_at IS NULL",
        ],
    );
    assert_eq!(report["clients_without_consent"].to_string(), missing);
    assert_ne!(missing, "0", "the demo has clients without consent");

    // Ingest told to refuse their pii: none stored, the rest intact.
    let config = std::fs::read_to_string(home.join("kartoteka.toml")).expect("config");
    assert!(
        config.contains("refuse_pii_without_consent = false"),
        "{config}"
    );
    let config = config.replace(
        "refuse_pii_without_consent = false",
        "refuse_pii_without_consent = true",
    );
    std::fs::write(home.join("kartoteka.toml"), config).expect("config");
    ok(home, &["ingest"]);
    let leaked = scalar(
        home,
        &[
            "query",
            "SELECT COUNT(*) FROM clients WHERE consent_at IS NULL AND (name IS NOT NULL OR phone IS NOT NULL OR email IS NOT NULL)",
        ],
    );
    assert_eq!(leaked, "0");
    let summaries = scalar(
        home,
        &[
            "query",
            "SELECT COUNT(i.summary) FROM interactions i JOIN clients c ON c.client_id = i.client_id WHERE c.consent_at IS NULL",
        ],
    );
    assert_eq!(summaries, "0");
    let kept = scalar(
        home,
        &[
            "query",
            "SELECT COUNT(name) FROM clients WHERE consent_at IS NOT NULL",
        ],
    );
    assert_ne!(kept, "0");
    assert_eq!(
        scalar(home, &["query", "SELECT COUNT(*) FROM clients"]),
        all,
        "rows are kept, only pii refused"
    );
    assert!(ok(home, &["audit", "verify"]).contains("intact"));
}
