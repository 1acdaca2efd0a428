//! Reports end to end through the `kartoteka` binary: a report for the audience "managers" is rendered
//! once per manager under that manager's own policy — each copy's numbers are the manager's own, as
//! the metric run directly as that manager gives them — archived sealed, and audited; bad specs name
//! file and field while the good ones still run.

use crate::common;

use std::path::Path;

use crate::common::{fail, kartoteka, ok};
use kartoteka_reports::chart::format_value;

const END: &str = "2025-07-01";

fn demo_home() -> tempfile::TempDir {
    common::demo_home(END).0
}

const SPEC: &str = r#"
id = "my-funnel"
title = "Моя воронка"
schedule = "0 8 * * MON"
time_zone = "Europe/Moscow"

[audience]
roles = ["manager"]

[[panels]]
metric = "revenue_by_month"
params = { from = "2025-01-01", to = "2025-07-01" }

[[panels]]
metric = "funnel_conversion"
params = { from = "2025-01-01", to = "2025-07-01" }

[[panels]]
metric = "avg_deal_size"
params = { from = "2025-04-01", to = "2025-07-01" }
"#;

fn write_spec(home: &Path, name: &str, text: &str) {
    let dir = home.join("reports");
    std::fs::create_dir_all(&dir).expect("reports dir");
    std::fs::write(dir.join(name), text).expect("spec");
}

fn number(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::Number(n) => n.as_f64().expect("f64"),
        serde_json::Value::String(s) => s.parse().expect("numeric text"),
        other => panic!("not a number: {other}"),
    }
}

/// Run report `id` now with its files written under `home/out`; returns that directory and the
/// recipients (one subdirectory each), sorted.
fn run_to_out(home: &Path, id: &str) -> (std::path::PathBuf, Vec<String>) {
    let out = home.join("out");
    ok(
        home,
        &["report", "run", id, "--out", out.to_str().expect("utf-8")],
    );
    let mut recipients: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    recipients.sort();
    (out, recipients)
}

/// The metric's rows, run directly under `login`'s policy.
fn metric_as(home: &Path, login: &str, metric: &str, params: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["metric", metric, "--as", login, "--format", "json"];
    for p in params {
        args.extend(["-p", p]);
    }
    let text = ok(home, &args);
    let rows: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    rows.as_array().expect("rows").clone()
}

#[test]
fn each_manager_gets_a_copy_with_their_own_numbers() {
    let dir = demo_home();
    let home = dir.path();
    write_spec(home, "my-funnel.toml", SPEC);
    let (out, managers) = run_to_out(home, "my-funnel");
    assert!(managers.len() >= 2, "one copy per manager: {managers:?}");
    assert!(
        managers.iter().all(|m| m.starts_with("manager-")),
        "{managers:?}"
    );

    let period = ["from=2025-01-01", "to=2025-07-01"];
    let mut totals = Vec::new();
    let mut checked = Vec::new();
    for m in &managers {
        if checked.len() == 2 {
            break;
        }
        let svg =
            std::fs::read_to_string(out.join(m).join("01-revenue_by_month.svg")).expect("svg");
        let rows = metric_as(home, m, "revenue_by_month", &period);
        if rows.is_empty() {
            assert!(
                svg.contains("Нет данных"),
                "{m} has no revenue and the chart says so"
            );
            continue;
        }
        checked.push(m.clone());
        let mut total = 0.0;
        for r in &rows {
            let revenue = number(&r["revenue"]);
            total += revenue;
            let label = format_value(revenue, "RUB");
            assert!(svg.contains(&label), "{m}: the chart shows {label}");
        }
        totals.push(total);

        // The funnel: every stage's count as this manager's policy gives it.
        let funnel =
            std::fs::read_to_string(out.join(m).join("02-funnel_conversion.svg")).expect("svg");
        for r in metric_as(home, m, "funnel_conversion", &period) {
            let stage = r["stage"].as_str().expect("stage");
            assert!(funnel.contains(stage), "{m}: stage {stage}");
            let reached = format_value(number(&r["reached"]), "deals");
            assert!(funnel.contains(&reached), "{m}: {stage} reached {reached}");
        }
        let png = std::fs::read(out.join(m).join("03-avg_deal_size.png")).expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
    assert_eq!(checked.len(), 2, "two managers with revenue in the period");
    assert_ne!(
        totals[0], totals[1],
        "two managers, two different sets of rows"
    );
    assert_ne!(
        std::fs::read(out.join(&checked[0]).join("01-revenue_by_month.svg")).expect("svg"),
        std::fs::read(out.join(&checked[1]).join("01-revenue_by_month.svg")).expect("svg"),
    );
    // The company's revenue is more than any one manager's: the copies were filtered by policy.
    let company: f64 = metric_as(home, "owner", "revenue_by_month", &period)
        .iter()
        .map(|r| number(&r["revenue"]))
        .sum();
    assert!(
        totals.iter().all(|t| *t < company),
        "{totals:?} vs {company}"
    );

    // Archived: one copy per manager, sealed at rest, with snapshot and content hash; audited.
    let runs: serde_json::Value = serde_json::from_str(&ok(
        home,
        &[
            "report",
            "runs",
            "my-funnel",
            "--format",
            "json",
            "--limit",
            "100",
        ],
    ))
    .expect("json");
    let runs = runs.as_array().expect("runs");
    let mut recipients: Vec<&str> = runs
        .iter()
        .map(|r| r["recipient"].as_str().expect("recipient"))
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        managers.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for r in runs {
        assert_eq!(r["outcome"], "ok");
        assert!(r["snapshot_id"].as_i64().is_some());
        assert_eq!(r["content_hash"].as_str().expect("hash").len(), 64);
        for f in r["files"].as_array().expect("files") {
            let f = f.as_str().expect("path");
            let sealed = std::fs::read(home.join("archive").join(f)).expect("archived file");
            // The archive path ends in RECIPIENT/FILE, the same names as the plain copy in `out`.
            let plain_path: std::path::PathBuf = f
                .rsplitn(3, '/')
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let plain = std::fs::read(out.join(plain_path)).expect("the plain copy");
            // Neither end of the rendered file appears in the sealed one (32 bytes each: a
            // chance match in ciphertext is ~2^-250, unlike a short marker such as "PNG").
            assert!(plain.len() > 64, "{f}");
            for window in [&plain[..32], &plain[plain.len() - 32..]] {
                assert!(
                    !sealed.windows(32).any(|w| w == window),
                    "sealed: {f} holds its plain text"
                );
            }
        }
    }
    let tail = ok(home, &["audit", "tail", "--lines", "400"]);
    assert!(
        tail.matches("report.run").count() >= managers.len(),
        "every copy audited"
    );
    // The copies' queries were run by the owner (by hand here) on behalf of each manager: the
    // managers' own entries hold only what they did themselves.
    let mut on_behalf = 0;
    for line in tail.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("entry");
        if e["action"] == "query"
            && let Some(login) = e["details"]["as"].as_str()
            && managers.iter().any(|m| m == login)
        {
            assert_eq!(e["actor"], "owner", "{line}");
            on_behalf += 1;
        }
        if e["action"] == "query" {
            assert!(
                !managers.iter().any(|m| e["actor"] == m.as_str()),
                "a manager is the actor of a query they never ran: {line}"
            );
        }
    }
    assert!(on_behalf >= managers.len(), "{on_behalf}");
    ok(home, &["audit", "verify"]);
}

/// One principal resolver: every recipient's copy holds exactly the numbers `metric … --as LOGIN`
/// gives that login at the same snapshot — team leads (their team's rows) included.
#[test]
fn every_recipient_of_every_role_gets_the_numbers_their_own_metric_run_gives() {
    let dir = demo_home();
    let home = dir.path();
    write_spec(
        home,
        "everyone.toml",
        r#"
id = "everyone"
title = "Выручка"
schedule = "0 8 * * MON"

[audience]
roles = ["owner", "team_lead", "manager", "analyst"]

[[panels]]
metric = "revenue_by_month"
params = { from = "2025-01-01", to = "2025-07-01" }
chart = "table"
"#,
    );
    let (out, recipients) = run_to_out(home, "everyone");
    for role in ["owner", "lead-", "manager-", "analyst"] {
        assert!(
            recipients.iter().any(|r| r.starts_with(role)),
            "{role}: {recipients:?}"
        );
    }
    let users: serde_json::Value =
        serde_json::from_str(&ok(home, &["users", "list", "--format", "json"])).expect("users");
    let users = users.as_array().expect("users").clone();
    let period = ["from=2025-01-01", "to=2025-07-01"];
    let mut leads_checked = 0;
    for login in &recipients {
        let svg =
            std::fs::read_to_string(out.join(login).join("01-revenue_by_month.svg")).expect("svg");
        let rows = metric_as(home, login, "revenue_by_month", &period);
        for r in &rows {
            let label = format_value(number(&r["revenue"]), "RUB");
            assert!(svg.contains(&label), "{login}: the copy shows {label}");
        }
        if login.starts_with("lead-") && !rows.is_empty() {
            // Independently: the won deals of every staff member of the lead's team, by the owner.
            let team = users
                .iter()
                .find(|u| u["login"] == login.as_str())
                .and_then(|u| u["team"].as_str())
                .expect("a lead has a team")
                .replace('\'', "''");
            let sql = format!(
                "SELECT SUM(amount) FROM deals WHERE status = 'won' \
                 AND closed_at >= TIMESTAMP '2025-01-01T00:00:00Z' \
                 AND closed_at < TIMESTAMP '2025-07-01T00:00:00Z' \
                 AND owner_id IN (SELECT staff_id FROM staff WHERE team = '{team}')"
            );
            let team_total: f64 = ok(home, &["query", &sql, "--format", "csv"])
                .lines()
                .nth(1)
                .expect("a total")
                .parse()
                .expect("number");
            let copy_total: f64 = rows.iter().map(|r| number(&r["revenue"])).sum();
            assert!(
                (team_total - copy_total).abs() < 0.005,
                "{login}: the team's won deals {team_total}, the copy {copy_total}"
            );
            leads_checked += 1;
        }
    }
    assert!(
        leads_checked > 0,
        "a team lead with revenue: {recipients:?}"
    );
}

#[test]
fn invalid_specs_are_named_and_the_valid_ones_still_run() {
    let dir = demo_home();
    let home = dir.path();
    write_spec(home, "a-good.toml", &SPEC.replace("my-funnel", "good"));
    write_spec(
        home,
        "b-bad.toml",
        &SPEC
            .replace("my-funnel", "bad")
            .replace("\"funnel_conversion\"", "\"funnel_conversation\""),
    );
    let out = kartoteka()
        .arg("--dir")
        .arg(home)
        .args(["report", "list"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid spec fails the listing");
    assert!(
        stdout.contains("good") && stdout.contains("next"),
        "{stdout}"
    );
    assert!(
        stderr.contains("b-bad.toml: panels[1].metric") && stderr.contains("funnel_conversation"),
        "{stderr}"
    );
    let e = fail(home, &["report", "run", "bad"]);
    assert!(
        e.contains("b-bad.toml") && e.contains("panels[1].metric"),
        "{e}"
    );
    ok(home, &["report", "run", "good"]);
    let e = fail(home, &["report", "run", "nonesuch"]);
    assert!(e.contains("good"), "lists the reports: {e}");

    // Erasing a client deletes every copy drawn from the snapshots that held them.
    let runs = |home: &Path| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&ok(
            home,
            &["report", "runs", "--format", "json"],
        ))
        .expect("json")
        .as_array()
        .expect("runs")
        .clone()
    };
    let before = runs(home);
    assert!(!before.is_empty());
    let files: Vec<std::path::PathBuf> = before
        .iter()
        .flat_map(|r| r["files"].as_array().expect("files").clone())
        .map(|f| home.join("archive").join(f.as_str().expect("path")))
        .collect();
    assert!(files.iter().all(|f| f.exists()));
    ok(home, &["erase", "--client", "1", "--yes"]);
    assert!(
        runs(home).is_empty(),
        "no copy from before the erasure is kept"
    );
    assert!(files.iter().all(|f| !f.exists()), "their files are deleted");
}

/// A one-thread SMTP sink on loopback: every accepted message as (recipients, DATA text).
fn smtp_sink() -> (u16, std::sync::mpsc::Receiver<(Vec<String>, String)>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let _ = stream.write_all(b"220 sink ESMTP\r\n");
            let mut rcpt = Vec::new();
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let upper = line.to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                    b"250-sink\r\n250 8BITMIME\r\n"
                } else if upper.starts_with("RCPT TO:") {
                    rcpt.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                    b"250 OK\r\n"
                } else if upper.starts_with("DATA") {
                    let _ = stream.write_all(b"354 go ahead\r\n");
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        data.push_str(&line);
                    }
                    let _ = tx.send((std::mem::take(&mut rcpt), data));
                    b"250 queued\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = stream.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 OK\r\n"
                };
                let _ = stream.write_all(reply);
            }
        }
    });
    (port, rx)
}

/// A one-thread HTTP listener: every request body, answered 200.
fn webhook_sink() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

/// The base64 body of the MIME part whose headers mention `filename`.
fn attachment(data: &str, filename: &str) -> Vec<u8> {
    use base64::Engine as _;
    let at = data
        .find(&format!("filename=\"{filename}\""))
        .expect("the attachment");
    let rest = &data[at..];
    let body_start = rest.find("\r\n\r\n").expect("part body") + 4;
    let body: String = rest[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .expect("base64")
}

#[test]
fn copies_are_mailed_to_their_recipient_and_announced_by_webhook() {
    let dir = demo_home();
    let home = dir.path();
    let (smtp_port, mails) = smtp_sink();
    let (hook_port, hooks) = webhook_sink();
    let mut config: toml::Table = std::fs::read_to_string(home.join("kartoteka.toml"))
        .expect("config")
        .parse()
        .expect("toml");
    let smtp: toml::Table = format!(
        "host = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\nfrom = \"kartoteka@example.ru\""
    )
    .parse()
    .expect("smtp");
    config
        .entry("reports")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("reports")
        .insert("smtp".into(), toml::Value::Table(smtp));
    std::fs::write(home.join("kartoteka.toml"), config.to_string()).expect("config");

    // Two users in the audience: one with an address, one without.
    ok(home, &["users", "set-email", "owner", "owner@example.ru"]);
    let spec = SPEC
        .replace("roles = [\"manager\"]", "users = [\"owner\", \"analyst\"]")
        .replace(
            "[audience]",
            &format!("[delivery]\nemail = true\nwebhook = \"http://127.0.0.1:{hook_port}/kartoteka\"\n\n[audience]"),
        );
    write_spec(home, "my-funnel.toml", &spec);
    let out = home.join("out");
    ok(
        home,
        &[
            "report",
            "run",
            "my-funnel",
            "--out",
            out.to_str().expect("utf-8"),
        ],
    );

    let (to, data) = mails
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("an e-mail arrived");
    assert_eq!(to, vec!["owner@example.ru".to_string()]);
    assert!(
        mails.try_recv().is_err(),
        "the analyst has no address: no second e-mail"
    );
    assert!(
        data.contains("Subject:") && data.contains("Content-ID: <panel-1>"),
        "inline pictures"
    );
    for name in [
        "01-revenue_by_month.svg",
        "02-funnel_conversion.png",
        "03-avg_deal_size.png",
    ] {
        assert_eq!(
            attachment(&data, name),
            std::fs::read(out.join("owner").join(name)).expect("rendered file"),
            "{name} attached as rendered"
        );
    }

    let mut announced: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            serde_json::from_str(
                &hooks
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .expect("a webhook call"),
            )
            .expect("json")
        })
        .collect();
    announced.sort_by_key(|v| v["recipient"].as_str().unwrap_or_default().to_string());
    assert_eq!(announced[0]["recipient"], "analyst");
    assert_eq!(announced[1]["recipient"], "owner");
    assert_eq!(announced[1]["panels"].as_array().expect("panels").len(), 3);
    assert!(
        announced[1]["content_hash"]
            .as_str()
            .is_some_and(|h| h.len() == 64)
    );

    // Every delivery is audited: two webhooks and one e-mail succeeded, one e-mail was skipped.
    let tail = ok(home, &["audit", "tail", "--lines", "400"]);
    assert_eq!(tail.matches("report.deliver").count(), 4, "{tail}");
    assert!(tail.contains("no e-mail address"), "{tail}");
}
