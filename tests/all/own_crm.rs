//! A newcomer's path with their own CRM, through the CLI: an empty directory, `init`, a mapping
//! written from `mapping scaffold`, tried with `mapping check`, ingested, and the first numbers — on a
//! small music-store CRM whose schema is not the demo's (text invoice numbers, decimal text money in
//! dollars, no pipelines, tasks, activities or marketing spend). Also what protects a demo home, and
//! config keys that stand alone.

use std::path::Path;

use crate::common::{fail, kartoteka, ok, run};

/// The store's own schema and rows; its answers are computed again below with SQLite's own SQL.
const STORE: &str = "
CREATE TABLE employees (EmployeeId INTEGER PRIMARY KEY, FirstName TEXT, LastName TEXT, Title TEXT,
  Email TEXT, HireDate TEXT);
INSERT INTO employees VALUES (1, 'Andrew', 'Adams', 'General Manager', 'andrew@example.com', '2002-08-14'),
  (2, 'Jane', 'Peacock', 'Sales Support Agent', 'jane@example.com', '2002-04-01'),
  (3, 'Steve', 'Johnson', 'Sales Support Agent', 'steve@example.com', '2003-10-17');
CREATE TABLE customers (CustomerId INTEGER PRIMARY KEY, FirstName TEXT, LastName TEXT, Company TEXT,
  City TEXT, Country TEXT, Email TEXT, Phone TEXT, SupportRepId INTEGER, CreatedAt TEXT);
INSERT INTO customers VALUES
  (1, 'Luís', 'Gonçalves', 'Embraer', 'São José dos Campos', 'BR', 'luisg@example.com', '+55 12 3923-5555', 2, '2009-01-01 00:00:00'),
  (2, 'Leonie', 'Köhler', NULL, 'Stuttgart', 'DE', 'leonie@example.com', '+49 0711 2842222', 3, '2009-01-02 00:00:00'),
  (3, 'François', 'Tremblay', NULL, 'Montréal', 'CA', 'ftremblay@example.com', NULL, 2, '2009-02-01 00:00:00');
CREATE TABLE invoices (InvoiceNo TEXT PRIMARY KEY, CustomerId INTEGER, InvoiceDate TEXT, Total TEXT);
INSERT INTO invoices VALUES ('INV-1001', 1, '2009-01-03 00:00:00', '1.98'), ('INV-1002', 2, '2009-01-05 00:00:00', '3.96'),
  ('INV-1003', 1, '2009-02-11 00:00:00', '5.94'), ('INV-1004', 3, '2009-03-14 00:00:00', '8.91'),
  ('C-1005', 3, '2011-12-22 00:00:00', '-0.99');
";

/// The mapping a user writes from the scaffold: four tables, the rest left out.
const MAPPING: &str = r#"
name = "store"

[money]
currency = "USD"

[keys]
text = true

[tables.staff]
query = """
SELECT EmployeeId AS staff_id, FirstName || ' ' || LastName AS full_name, Email AS email,
       CASE WHEN Title LIKE 'Sales%' THEN 'manager' ELSE 'owner' END AS position, HireDate AS hired_at
FROM employees
"""

[tables.clients]
query = """
SELECT CustomerId AS client_id, CASE WHEN Company IS NULL THEN 'person' ELSE 'company' END AS kind,
       FirstName || ' ' || LastName AS name, Phone AS phone, Email AS email, City AS city, Country AS country,
       SupportRepId AS owner_id, CreatedAt AS created_at
FROM customers
"""

[tables.deals]
query = """
SELECT InvoiceNo AS deal_id, i.CustomerId AS client_id, c.SupportRepId AS owner_id, 'won' AS status,
       Total AS amount, InvoiceDate AS created_at, InvoiceDate AS closed_at, c.SupportRepId AS closed_by
FROM invoices i JOIN customers c ON c.CustomerId = i.CustomerId
"""

[tables.payments]
query = """
SELECT InvoiceNo AS payment_id, CustomerId AS client_id, InvoiceNo AS deal_id, Total AS amount,
       InvoiceDate AS paid_at
FROM invoices
"""
"#;

async fn store(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("store.sqlite");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
    sqlx::raw_sql(STORE).execute(&pool).await.expect("store");
    pool.close().await;
    db
}

/// Revenue per month by the store's own SQL: (month, dollars as text with cents, invoices).
async fn revenue_by_sqlite(db: &Path) -> Vec<(String, String, i64)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("sqlite");
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT strftime('%Y-%m-01', InvoiceDate), SUM(CAST(ROUND(CAST(Total AS REAL) * 100) AS INTEGER)), COUNT(*) \
         FROM invoices GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("oracle");
    rows.into_iter()
        .map(|(m, cents, n)| (m, crate::common::money(cents), n))
        .collect()
}

#[tokio::test]
async fn a_newcomer_goes_from_an_empty_directory_to_their_own_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store(dir.path()).await;
    let db_arg = db.to_str().expect("utf-8");
    let home = dir.path().join("home");

    // Before `init`, the home is not there, and the message says how to make one.
    let e = fail(&home, &["query", "SELECT 1"]);
    assert!(e.contains("kartoteka init --dir"), "{e}");
    let said = ok(&home, &["init"]);
    assert!(
        said.contains("mapping scaffold") && said.contains("mapping check"),
        "{said}"
    );
    let config = std::fs::read_to_string(home.join("kartoteka.toml")).expect("config");
    assert!(
        config.contains("# time_zone = \"UTC\"") && config.contains("# memory_limit_mb = 2048"),
        "every default is written out:\n{config}"
    );
    // A second init changes nothing.
    assert!(fail(&home, &["init"]).contains("already a Kartoteka home"));

    // The scaffold lists the source's own tables and guesses where the names say.
    let scaffold = dir.path().join("scaffold.toml");
    ok(
        &home,
        &[
            "mapping",
            "scaffold",
            "--sqlite",
            db_arg,
            "--out",
            scaffold.to_str().expect("utf-8"),
        ],
    );
    let text = std::fs::read_to_string(&scaffold).expect("scaffold");
    for needle in [
        "# customers: CustomerId INTEGER",
        "# invoices: InvoiceNo TEXT",
        "# [tables.clients]",
        "# FROM customers",
        "Email AS email",
        "TODO AS client_id",
    ] {
        assert!(text.contains(needle), "scaffold lacks {needle:?}:\n{text}");
    }
    // As written (every section commented out) it maps nothing, and says so.
    let e = fail(
        &home,
        &[
            "mapping",
            "check",
            "--sqlite",
            db_arg,
            "--mapping",
            scaffold.to_str().expect("utf-8"),
        ],
    );
    assert!(e.contains("map at least one canonical table"), "{e}");

    let mapping = dir.path().join("store.toml");
    std::fs::write(&mapping, MAPPING).expect("mapping");
    let mapping_arg = mapping.to_str().expect("utf-8");
    let check = ok(
        &home,
        &[
            "mapping",
            "check",
            "--sqlite",
            db_arg,
            "--mapping",
            mapping_arg,
        ],
    );
    for needle in [
        "deals — 5 rows read, key (deal_id) unique",
        "phone",
        "33 % NULL",
        "(unmapped: NULL)",
        "unmapped (loaded empty; metrics that need them say so): pipeline_stages, deal_stage_changes, interactions, tasks, ownership_changes, targets, marketing_spend",
        "currency: USD",
        "nothing was loaded",
    ] {
        assert!(check.contains(needle), "check lacks {needle:?}:\n{check}");
    }
    assert!(
        !home.join("lake").join("_meta").join("snapshots").exists()
            || std::fs::read_dir(home.join("lake").join("_meta").join("snapshots"))
                .expect("dir")
                .next()
                .is_none(),
        "check loads nothing"
    );

    let out = run(
        &home,
        &["ingest", "--sqlite", db_arg, "--mapping", mapping_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Later runs need only `ingest`: the source is the home's default.
    ok(&home, &["ingest"]);

    // The first numbers: revenue by month in dollars, equal to the store's own SQL.
    let got = ok(
        &home,
        &[
            "metric",
            "revenue_by_month",
            "--param",
            "from=2009-01-01",
            "--param",
            "to=2012-01-01",
            "--format",
            "csv",
        ],
    );
    let want: Vec<String> = revenue_by_sqlite(&db)
        .await
        .into_iter()
        .map(|(m, dollars, n)| format!("{m},{dollars},{n}"))
        .collect();
    let got_rows: Vec<&str> = got.lines().skip(1).collect();
    assert_eq!(got_rows, want);
    let table = ok(
        &home,
        &[
            "metric",
            "revenue_by_month",
            "--param",
            "from=2009-01-01",
            "--param",
            "to=2012-01-01",
        ],
    );
    assert!(table.contains("revenue, USD"), "{table}");
    let chart = dir.path().join("revenue.svg");
    ok(
        &home,
        &[
            "metric",
            "revenue_by_month",
            "--param",
            "from=2009-01-01",
            "--param",
            "to=2012-01-01",
            "--chart",
            chart.to_str().expect("utf-8"),
        ],
    );
    let svg = std::fs::read_to_string(&chart).expect("chart");
    assert!(
        svg.contains('$') && !svg.contains('₽'),
        "dollars, not roubles"
    );

    // Without parameters the period is said, and an empty answer says where the data ends.
    let out = run(&home, &["metric", "revenue_by_month"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.contains("the default period"), "{stderr}");
    assert!(
        stdout.contains("(no rows for ") && stdout.contains("the data ends 2011-12-22"),
        "{stdout}"
    );

    // A metric over what the store does not have names it instead of answering 0.
    let e = fail(&home, &["metric", "first_contact_sla"]);
    assert!(
        e.contains("needs `interactions`") && e.contains("which the mapping does not provide"),
        "{e}"
    );
    // An ad-hoc query over a table the mapping left out answers (0 tasks) and says why.
    let out = run(&home, &["query", "SELECT COUNT(*) AS n FROM tasks"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reads tasks, which the source's mapping does not provide"),
        "{stderr}"
    );
    // The CRM's own invoice number finds its deal.
    let found = ok(
        &home,
        &[
            "query",
            "SELECT amount FROM deals WHERE deal_id = source_key('C-1005')",
            "--format",
            "csv",
        ],
    );
    assert_eq!(found.lines().nth(1), Some("-0.99"), "{found}");
    // The same key erases that client: customer 3 by the CRM's own id written as text.
    let erased = run(&home, &["erase", "--client-key", "3", "--yes"]);
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let left = ok(
        &home,
        &[
            "query",
            "SELECT COUNT(*) AS n FROM deals WHERE client_id = 3",
            "--format",
            "csv",
        ],
    );
    assert_eq!(left.lines().nth(1), Some("0"), "{left}");
}

#[tokio::test]
async fn a_demo_home_keeps_its_demo_and_an_own_home_keeps_the_demo_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store(dir.path()).await;
    let db_arg = db.to_str().expect("utf-8");
    let mapping = dir.path().join("store.toml");
    std::fs::write(&mapping, MAPPING).expect("mapping");
    let mapping_arg = mapping.to_str().expect("utf-8");

    let demo = dir.path().join("demo");
    let out = kartoteka()
        .args(["demo", "--scale", "0.02", "--end", "2025-07-01", "--dir"])
        .arg(&demo)
        .output()
        .expect("runs");
    assert!(out.status.success());
    // Your CRM into the demo home: refused, with both ways out.
    let e = fail(
        &demo,
        &["ingest", "--sqlite", db_arg, "--mapping", mapping_arg],
    );
    assert!(
        e.contains("holds the demo CRM")
            && e.contains("kartoteka init")
            && e.contains("--replace-demo"),
        "{e}"
    );
    // Web sessions of a user can be ended from the CLI (none yet); an unknown login is an error.
    let said = ok(&demo, &["users", "revoke-sessions", "owner"]);
    assert!(said.contains("0 web session(s) of owner ended"), "{said}");
    assert!(fail(&demo, &["users", "revoke-sessions", "nobody"]).contains("no user"));
    // Asked for, it replaces the demo: the demo's source and users go.
    let users_before = ok(&demo, &["users", "list"]);
    assert!(users_before.contains("manager-"), "{users_before}");
    ok(
        &demo,
        &[
            "ingest",
            "--sqlite",
            db_arg,
            "--mapping",
            mapping_arg,
            "--replace-demo",
        ],
    );
    let users = ok(&demo, &["users", "list"]);
    assert!(
        !users.contains("manager-") && !users.contains("analyst"),
        "{users}"
    );
    let config = std::fs::read_to_string(demo.join("kartoteka.toml")).expect("config");
    assert!(
        !config.contains("[sources.demo]") && config.contains("default_source = \"store\""),
        "{config}"
    );
    // A plain `ingest` now reads the store, not the demo.
    ok(&demo, &["ingest"]);
    let count = ok(
        &demo,
        &[
            "query",
            "SELECT COUNT(*) AS n FROM deals",
            "--format",
            "csv",
        ],
    );
    assert_eq!(count.lines().nth(1), Some("5"), "{count}");

    // The demo into a home for your own CRM: refused.
    let own = dir.path().join("own");
    ok(&own, &["init"]);
    let e = fail(&own, &["demo", "--scale", "0.02"]);
    assert!(e.contains("a home for your own CRM"), "{e}");

    // Config keys stand alone: a [query] section with only the zone takes the defaults for the rest.
    std::fs::write(
        own.join("kartoteka.toml"),
        "[query]\ntime_zone = \"Europe/Moscow\"\n",
    )
    .expect("config");
    ok(
        &own,
        &["ingest", "--sqlite", db_arg, "--mapping", mapping_arg],
    );
    let monthly = ok(
        &own,
        &[
            "metric",
            "revenue_by_month",
            "--param",
            "from=2009-01-01",
            "--param",
            "to=2012-01-01",
            "--format",
            "csv",
        ],
    );
    assert_eq!(monthly.lines().count(), 5, "{monthly}");
}
