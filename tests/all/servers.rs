//! Ingest from real database servers: the demo CRM loaded into PostgreSQL and into MariaDB/MySQL (with
//! their native types: NUMERIC/DECIMAL roubles, enums, TIMESTAMPTZ, DATE, wall-clock DATETIME in
//! Moscow time) must give exactly the lake the SQLite demo gives — every table, every value — and so
//! every metric; a handful of metrics are also asked of the server's own SQL. Types are checked value
//! by value against literals written here, unmappable types and broken connections give clear errors
//! and commit nothing.
//!
//! Servers come from `KARTOTEKA_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`) and
//! `KARTOTEKA_TEST_MYSQL` (e.g. `mysql://root@127.0.0.1:3306/test`); each test creates and drops its
//! own database. Without the variable a test prints why it skips; CI sets both.

#![allow(clippy::type_complexity)]

use crate::common;

use std::path::Path;
use std::sync::Arc;

use crate::common::rows;
use chrono::NaiveDate;
use kartoteka_engine::{Engine, EngineConfig, Lake, Principal, QuerySession};
use kartoteka_ingest::batch::{Decimal, Value};
use kartoteka_ingest::demo::servers;
use kartoteka_ingest::source::{Decoder, SourceRow};
use kartoteka_ingest::{IngestOptions, Mapping, NoProgress, Source, SourceSpec};
use kartoteka_queries::Catalog;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Postgres,
    MySql,
}

impl Server {
    fn var(self) -> &'static str {
        match self {
            Server::Postgres => "KARTOTEKA_TEST_POSTGRES",
            Server::MySql => "KARTOTEKA_TEST_MYSQL",
        }
    }
}

/// A database of its own on a test server, dropped when the test ends (also when it panics).
struct TestDb {
    server: Server,
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    /// `None` (with the reason printed) when the server is not configured.
    async fn create(server: Server, test: &str) -> Option<TestDb> {
        let Ok(admin_url) = std::env::var(server.var()) else {
            eprintln!(
                "SKIPPED {test}: {} is not set (CI sets it; e.g. {})",
                server.var(),
                match server {
                    Server::Postgres => "postgres://postgres@127.0.0.1:5432/test",
                    Server::MySql => "mysql://root@127.0.0.1:3306/test",
                }
            );
            return None;
        };
        let name = format!(
            "kartoteka_{}_{}_{:08x}",
            test.chars().take(20).collect::<String>(),
            std::process::id(),
            rand::random::<u32>()
        );
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .expect("URL with a database");
        let url = format!("{base}/{name}");
        admin(server, &admin_url, &format!("CREATE DATABASE {name}")).await;
        Some(TestDb {
            server,
            admin_url,
            name,
            url,
        })
    }
}

async fn admin(server: Server, url: &str, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match server {
        Server::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("admin connection");
            sqlx::raw_sql(sql).execute(&pool).await.expect("admin SQL");
            pool.close().await;
        }
        Server::MySql => {
            let pool = sqlx::MySqlPool::connect(url)
                .await
                .expect("admin connection");
            sqlx::raw_sql(sql).execute(&pool).await.expect("admin SQL");
            pool.close().await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, url) = (self.server, self.admin_url.clone());
        let sql = match server {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::MySql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Drop runs inside the test's runtime: use a runtime of its own on another thread.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(admin(server, &url, &sql))
        })
        .join();
    }
}

fn engine_over(lake: Arc<Lake>) -> Engine {
    Engine::new(lake, EngineConfig::default()).expect("engine")
}

async fn owner(engine: &Engine) -> QuerySession {
    engine
        .session(&Principal::local_owner())
        .await
        .expect("session")
}

/// Every metric (but the security family, which reads the audit log) with its default parameters and
/// the demo's end as "now".
async fn all_metrics(session: &QuerySession) -> Vec<(String, Vec<Vec<String>>)> {
    let catalog = Catalog::builtin().expect("catalog");
    let mut out = Vec::new();
    for metric in catalog
        .metrics()
        .iter()
        .filter(|m| m.family != kartoteka_queries::Family::Security)
    {
        let args: Vec<(String, String)> = ["to", "as_of"]
            .into_iter()
            .filter(|p| metric.has_param(p))
            .map(|p| (p.to_string(), "2025-07-01".to_string()))
            .collect();
        let r = kartoteka_queries::run_metric(session, metric, &args)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", metric.name));
        out.push((metric.name.clone(), rows(&r.batches)));
    }
    out
}

/// The demo through `server` equals the demo through SQLite: every table, every metric.
async fn demo_through(
    server: Server,
    test: &str,
) -> Option<(TestDb, tempfile::TempDir, QuerySession, Source)> {
    let db = TestDb::create(server, test).await?;
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = common::demo_sqlite(dir.path(), 0.05, 11).await;
    let copied = servers::copy_to_server(&sqlite, &db.url)
        .await
        .expect("demo copied to the server");
    assert!(copied > 10_000, "the demo has many rows ({copied})");

    let (_, sqlite_lake) = common::ingest_demo_source(&dir.path().join("a"), &sqlite).await;
    let source = Source::open(&SourceSpec::new(db.url.clone()))
        .await
        .expect("server source opens");
    let mapping = match server {
        Server::Postgres => servers::POSTGRES_MAPPING,
        Server::MySql => servers::MYSQL_MAPPING,
    };
    let server_lake = common::ingest_into_new_lake(&dir.path().join("b"), &source, mapping).await;

    let a = owner(&engine_over(sqlite_lake)).await;
    let b = owner(&engine_over(server_lake)).await;
    let (want, got) = (
        common::lake_contents(&a).await,
        common::lake_contents(&b).await,
    );
    for ((table, want), (_, got)) in want.iter().zip(&got) {
        assert!(!want.is_empty(), "{table} has rows");
        assert_eq!(want.len(), got.len(), "{table}: row count");
        for (w, g) in want.iter().zip(got) {
            assert_eq!(w, g, "{table}: the same row through SQLite and the server");
        }
    }
    let (want, got) = (all_metrics(&a).await, all_metrics(&b).await);
    assert!(want.len() >= 25, "the catalog's metrics ({})", want.len());
    for ((metric, want), (_, got)) in want.iter().zip(&got) {
        assert_eq!(want, got, "{metric} through SQLite and the server");
    }
    Some((db, dir, b, source))
}

#[tokio::test]
async fn postgres_demo_ingests_exactly_like_sqlite_and_agrees_with_postgres_sql() {
    let Some((_db, _dir, lake, source)) = demo_through(Server::Postgres, "pg_demo").await else {
        return;
    };
    let Source::Postgres(pg) = &source else {
        panic!("a PostgreSQL source")
    };
    // revenue_by_month in PostgreSQL's own SQL: won deals by the calendar month (UTC) of closing;
    // closed_at is Moscow wall-clock time in this CRM.
    let want: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT to_char(date_trunc('month', l.closed_at AT TIME ZONE 'Europe/Moscow' AT TIME ZONE 'UTC'), 'YYYY-MM-DD'),
                SUM(COALESCE(l.price, 0))::text, COUNT(*)
         FROM leads l JOIN funnel_statuses s ON s.id = l.status_id
         WHERE s.status_type = 1
           AND l.closed_at AT TIME ZONE 'Europe/Moscow' >= '2024-01-01 00:00:00+00'
           AND l.closed_at AT TIME ZONE 'Europe/Moscow' < '2025-07-01 00:00:00+00'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pg.pool())
    .await
    .expect("PostgreSQL answers");
    let got = metric(
        &lake,
        "revenue_by_month",
        &[("from", "2024-01-01"), ("to", "2025-07-01")],
    )
    .await;
    assert!(want.len() >= 12, "18 months of sales ({})", want.len());
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|(m, sum, n)| vec![m, sum, n.to_string()])
        .collect();
    assert_eq!(got, want);

    // Paid money per client in PostgreSQL's own SQL vs the lake's payments.
    let want: Vec<(i64, String)> = sqlx::query_as(
        "SELECT contact_id, SUM(total)::text FROM invoices WHERE status = 'paid'
         GROUP BY contact_id ORDER BY contact_id",
    )
    .fetch_all(pg.pool())
    .await
    .expect("PostgreSQL answers");
    let got = lake
        .sql("SELECT client_id, CAST(SUM(amount) AS VARCHAR) FROM payments GROUP BY client_id ORDER BY client_id")
        .await
        .expect("lake answers");
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|(c, s)| vec![c.to_string(), s])
        .collect();
    assert_eq!(rows(&got.batches), want);
}

#[tokio::test]
async fn mysql_demo_ingests_exactly_like_sqlite_and_agrees_with_mysql_sql() {
    let Some((_db, _dir, lake, source)) = demo_through(Server::MySql, "my_demo").await else {
        return;
    };
    let Source::MySql(my) = &source else {
        panic!("a MySQL source")
    };
    // revenue_by_month in MariaDB's own SQL; every time in this CRM is Moscow wall-clock (UTC+3).
    let want: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT DATE_FORMAT(DATE_SUB(l.closed_at, INTERVAL 3 HOUR), '%Y-%m-01'),
                CAST(SUM(COALESCE(l.price, 0)) AS CHAR), COUNT(*)
         FROM leads l JOIN funnel_statuses s ON s.id = l.status_id
         WHERE s.status_type = 1
           AND DATE_SUB(l.closed_at, INTERVAL 3 HOUR) >= '2024-01-01'
           AND DATE_SUB(l.closed_at, INTERVAL 3 HOUR) < '2025-07-01'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(my.pool())
    .await
    .expect("MariaDB answers");
    let got = metric(
        &lake,
        "revenue_by_month",
        &[("from", "2024-01-01"), ("to", "2025-07-01")],
    )
    .await;
    assert!(want.len() >= 12, "18 months of sales ({})", want.len());
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|(m, sum, n)| vec![m, sum, n.to_string()])
        .collect();
    assert_eq!(got, want);

    // Calls per manager and direction in MariaDB's own SQL vs the lake's interactions.
    let want: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT user_id, CAST(CASE direction WHEN 'in' THEN 'inbound' ELSE 'outbound' END AS CHAR), COUNT(*)
         FROM calls GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(my.pool())
    .await
    .expect("MariaDB answers");
    let got = lake
        .sql("SELECT staff_id, direction, COUNT(*) FROM interactions WHERE channel = 'call' GROUP BY 1, 2 ORDER BY 1, 2")
        .await
        .expect("lake answers");
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|(u, d, n)| vec![u.to_string(), d, n.to_string()])
        .collect();
    assert_eq!(rows(&got.batches), want);
}

async fn metric(session: &QuerySession, name: &str, args: &[(&str, &str)]) -> Vec<Vec<String>> {
    let catalog = Catalog::builtin().expect("catalog");
    let args: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = kartoteka_queries::run_metric(session, catalog.get(name).expect("metric"), &args)
        .await
        .expect(name);
    rows(&r.batches)
}

/// Decode the single row of `sql` column by column.
async fn decoded(source: &Source, sql: &str) -> Vec<(String, Option<Decoder>, String)> {
    let columns = source.describe(sql).await.expect("describes");
    let render = |v: Value<'_>| format!("{v:?}");
    let values: Vec<String> = match source {
        Source::Postgres(s) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(s.pool())
                .await
                .expect("row");
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    c.decoder.map_or("unmappable".into(), |d| {
                        row.value(i, d)
                            .map_or_else(|e| format!("error: {e}"), render)
                    })
                })
                .collect()
        }
        Source::MySql(s) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(s.pool())
                .await
                .expect("row");
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    c.decoder.map_or("unmappable".into(), |d| {
                        row.value(i, d)
                            .map_or_else(|e| format!("error: {e}"), render)
                    })
                })
                .collect()
        }
        Source::Sqlite(_) => unreachable!("server sources only"),
    };
    columns
        .into_iter()
        .zip(values)
        .map(|(c, v)| (c.name, c.decoder, v))
        .collect()
}

fn dec(mantissa: i128, scale: u32) -> String {
    format!("{:?}", Value::Decimal(Decimal { mantissa, scale }))
}

fn local(s: &str) -> String {
    format!(
        "{:?}",
        Value::Local(
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("literal")
        )
    )
}

fn date(s: &str) -> String {
    format!(
        "{:?}",
        Value::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("literal"))
    )
}

#[tokio::test]
async fn postgres_types_decode_to_exact_values() {
    let Some(db) = TestDb::create(Server::Postgres, "pg_types").await else {
        return;
    };
    admin(
        Server::Postgres,
        &db.url,
        "CREATE TYPE mood AS ENUM ('ok', 'плохо');
         CREATE DOMAIN money_rub AS NUMERIC(18, 2);
         CREATE TABLE t (i2 SMALLINT, i4 INTEGER, i8 BIGINT, f4 REAL, f8 DOUBLE PRECISION, n NUMERIC,
           n2 money_rub, txt TEXT, vc VARCHAR(10), ch CHAR(3), e mood, j JSON, jb JSONB, b BOOLEAN,
           bin BYTEA, tz TIMESTAMPTZ, ts TIMESTAMP, d DATE, nul TEXT, p POINT, u UUID);
         INSERT INTO t VALUES (-32768, 2147483647, -9223372036854775808, 1.5, -0.25,
           -123456789012345678.000000123, 1234567.89, 'Пётр «Ёж»', 'abc', 'x', 'плохо', '{\"a\": [1, 2]}',
           '{\"b\": true}', TRUE, '\\x00ff', '2025-03-30 01:30:00.123456+03', '2025-10-26 02:30:00', '2024-02-29',
           NULL, '(1,2)', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    )
    .await;
    let source = Source::open(&SourceSpec::new(db.url.clone()))
        .await
        .expect("opens");
    let got = decoded(&source, "SELECT * FROM t").await;
    let want: Vec<(&str, String)> = vec![
        ("i2", "Int(-32768)".into()),
        ("i4", "Int(2147483647)".into()),
        ("i8", "Int(-9223372036854775808)".into()),
        ("f4", "Real(1.5)".into()),
        ("f8", "Real(-0.25)".into()),
        ("n", dec(-123_456_789_012_345_678_000_000_123, 9)),
        ("n2", dec(123_456_789, 2)),
        ("txt", "Text(\"Пётр «Ёж»\")".into()),
        ("vc", "Text(\"abc\")".into()),
        ("ch", "Text(\"x  \")".into()),
        ("e", "Text(\"плохо\")".into()),
        ("j", "Text(\"{\\\"a\\\": [1, 2]}\")".into()),
        ("jb", "Text(\"{\\\"b\\\": true}\")".into()),
        ("b", "Bool(true)".into()),
        ("bin", "Blob([0, 255])".into()),
        // 01:30:00.123456 at +03 is 22:30:00.123456 UTC the day before.
        (
            "tz",
            format!(
                "Instant({})",
                chrono::DateTime::parse_from_rfc3339("2025-03-29T22:30:00.123456Z")
                    .expect("literal")
                    .timestamp_micros()
            ),
        ),
        ("ts", local("2025-10-26 02:30:00")),
        ("d", date("2024-02-29")),
        ("nul", "Null".into()),
        ("p", "unmappable".into()),
        ("u", "unmappable".into()),
    ];
    assert_eq!(got.len(), want.len());
    for ((name, _, value), (want_name, want_value)) in got.iter().zip(&want) {
        assert_eq!(name, want_name);
        assert_eq!(value, want_value, "column {name}");
    }
}

#[tokio::test]
async fn mysql_types_decode_to_exact_values() {
    let Some(db) = TestDb::create(Server::MySql, "my_types").await else {
        return;
    };
    admin(
        Server::MySql,
        &db.url,
        "CREATE TABLE t (i1 TINYINT, i2 SMALLINT, i3 MEDIUMINT, i4 INT, i8 BIGINT, u8 BIGINT UNSIGNED,
           big BIGINT UNSIGNED, f4 FLOAT, f8 DOUBLE, n DECIMAL(38, 9), txt TEXT, vc VARCHAR(10), e ENUM('ok', 'плохо'),
           j JSON, b BOOLEAN, bin VARBINARY(4), ts TIMESTAMP NULL, dt DATETIME(6), d DATE, y YEAR, nul TEXT, tm TIME,
           g POINT) CHARACTER SET utf8mb4;
         INSERT INTO t VALUES (-128, -32768, 8388607, 2147483647, -9223372036854775808, 9223372036854775807,
           18446744073709551615, 1.5, -0.25, -12345678901234567890.000000123, 'Пётр «Ёж»', 'abc', 'плохо',
           '{\"a\": [1, 2]}', TRUE, x'00ff', '2025-03-30 01:30:00', '2025-10-26 02:30:00.5', '2024-02-29', 2025,
           NULL, '10:00:00', POINT(1, 2))",
    )
    .await;
    let source = Source::open(&SourceSpec::new(db.url.clone()))
        .await
        .expect("opens");
    let got = decoded(&source, "SELECT * FROM t").await;
    let want: Vec<(&str, String)> = vec![
        ("i1", "Int(-128)".into()),
        ("i2", "Int(-32768)".into()),
        ("i3", "Int(8388607)".into()),
        ("i4", "Int(2147483647)".into()),
        ("i8", "Int(-9223372036854775808)".into()),
        ("u8", "Int(9223372036854775807)".into()),
        ("big", "error".into()),
        ("f4", "Real(1.5)".into()),
        ("f8", "Real(-0.25)".into()),
        ("n", dec(-12_345_678_901_234_567_890_000_000_123, 9)),
        ("txt", "Text(\"Пётр «Ёж»\")".into()),
        ("vc", "Text(\"abc\")".into()),
        ("e", "Text(\"плохо\")".into()),
        ("j", "json".into()),
        ("b", "Bool(true)".into()),
        ("bin", "Blob([0, 255])".into()),
        // TIMESTAMP written and read in a UTC session: the instant itself.
        (
            "ts",
            format!(
                "Instant({})",
                chrono::DateTime::parse_from_rfc3339("2025-03-30T01:30:00Z")
                    .expect("literal")
                    .timestamp_micros()
            ),
        ),
        ("dt", local("2025-10-26 02:30:00.5")),
        ("d", date("2024-02-29")),
        ("y", "Int(2025)".into()),
        ("nul", "Null".into()),
        ("tm", "unmappable".into()),
        ("g", "unmappable".into()),
    ];
    assert_eq!(got.len(), want.len());
    for ((name, _, value), (want_name, want_value)) in got.iter().zip(&want) {
        assert_eq!(name, want_name);
        match want_value.as_str() {
            "error" => assert!(
                value.starts_with("error") && value.contains("larger than BIGINT"),
                "column {name}: {value}"
            ),
            // MariaDB's JSON is LONGTEXT with a binary collation: it arrives as bytes (which the
            // batch builder takes as UTF-8 text); MySQL's JSON as text, possibly respaced.
            "json" => assert!(
                value == &format!("{:?}", Value::Blob(b"{\"a\": [1, 2]}"))
                    || value.replace(' ', "") == "Text(\"{\\\"a\\\":[1,2]}\")",
                "column {name}: {value}"
            ),
            _ => assert_eq!(value, want_value, "column {name}"),
        }
    }
}

#[tokio::test]
async fn unmappable_types_and_wrong_values_name_table_and_column_and_commit_nothing() {
    let Some(db) = TestDb::create(Server::Postgres, "pg_unmappable").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = common::demo_sqlite(dir.path(), 0.01, 3).await;
    servers::copy_to_server(&sqlite, &db.url)
        .await
        .expect("copied");
    let source = Source::open(&SourceSpec::new(db.url.clone()))
        .await
        .expect("opens");
    let text = servers::POSTGRES_MAPPING.replace(" city,", " point(1, 2) AS city,");
    assert_ne!(text, servers::POSTGRES_MAPPING);
    let mapping = Mapping::parse(&text, Path::new("m.toml")).expect("mapping");
    let (lake, before) = empty_lake(dir.path()).await;
    let msg = common::ingest_error(&engine_over(lake.clone()), &source, &mapping).await;
    assert!(
        msg.contains("clients")
            && msg.contains("city")
            && msg.contains("POINT")
            && msg.contains("CAST"),
        "{msg}"
    );
    // A mappable type whose values are wrong for the canonical column: text where a staff id goes
    // (found at the first row, after earlier tables were read), named by table, column and row.
    let text = servers::POSTGRES_MAPPING.replace(
        "assignee_id AS staff_id",
        "'staff-' || assignee_id AS staff_id",
    );
    assert_ne!(text, servers::POSTGRES_MAPPING);
    let mapping = Mapping::parse(&text, Path::new("m.toml")).expect("mapping");
    let msg = common::ingest_error(&engine_over(lake.clone()), &source, &mapping).await;
    assert!(
        msg.contains("tasks")
            && msg.contains("staff_id")
            && msg.contains("row 1")
            && msg.contains("integer"),
        "{msg}"
    );
    assert_eq!(
        lake.snapshot_ids().await.expect("snapshots").len() as u64,
        before,
        "nothing committed"
    );
}

async fn empty_lake(dir: &Path) -> (Arc<Lake>, u64) {
    let store = kartoteka_engine::LakeStore::local(&dir.join("lake-empty")).expect("store");
    let key =
        kartoteka_engine::MasterKeySource::create_key_file(&dir.join("empty.key")).expect("key");
    let lake = Arc::new(Lake::open_or_create(store, &key).await.expect("lake"));
    let snapshots = lake.snapshot_ids().await.expect("snapshots").len() as u64;
    (lake, snapshots)
}

#[tokio::test]
async fn mapping_queries_cannot_write_to_the_source() {
    for server in [Server::Postgres, Server::MySql] {
        let Some(db) = TestDb::create(server, "readonly").await else {
            continue;
        };
        admin(
            server,
            &db.url,
            "CREATE TABLE victim (id INT); INSERT INTO victim VALUES (1)",
        )
        .await;
        let source = Source::open(&SourceSpec::new(db.url.clone()))
            .await
            .expect("opens");
        let (write, check) = match &source {
            Source::Postgres(_) => (
                "WITH gone AS (DELETE FROM victim RETURNING id) SELECT id FROM gone",
                "SELECT COUNT(*) FROM victim",
            ),
            _ => ("DELETE FROM victim", "SELECT COUNT(*) FROM victim"),
        };
        let outcome = match &source {
            Source::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(write))
                .execute(s.pool())
                .await
                .map(|_| ()),
            Source::MySql(s) => sqlx::query(sqlx::AssertSqlSafe(write))
                .execute(s.pool())
                .await
                .map(|_| ()),
            Source::Sqlite(_) => unreachable!(),
        };
        let err = outcome.expect_err("a read-only session refuses writes");
        assert!(err.to_string().to_lowercase().contains("read"), "{err}");
        let n: i64 = match &source {
            Source::Postgres(s) => sqlx::query_scalar(check).fetch_one(s.pool()).await,
            Source::MySql(s) => sqlx::query_scalar(check).fetch_one(s.pool()).await,
            Source::Sqlite(_) => unreachable!(),
        }
        .expect("count");
        assert_eq!(n, 1, "the row is still there");
    }
}

#[tokio::test]
async fn a_connection_killed_mid_stream_fails_clearly_and_commits_nothing() {
    let Some(db) = TestDb::create(Server::Postgres, "pg_killed").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = common::demo_sqlite(dir.path(), 0.02, 5).await;
    servers::copy_to_server(&sqlite, &db.url)
        .await
        .expect("copied");
    // Slow the tasks table down (a sleep per row) so the run is surely mid-stream when its backend is
    // terminated.
    let text = servers::POSTGRES_MAPPING.replace(
        "FROM todo\n",
        "FROM todo CROSS JOIN LATERAL (SELECT pg_sleep(0.002 + 0 * todo.id)) AS slow\n",
    );
    assert_ne!(text, servers::POSTGRES_MAPPING);
    let mapping = Mapping::parse(&text, Path::new("m.toml")).expect("mapping");
    let source = Source::open(&SourceSpec::new(db.url.clone()))
        .await
        .expect("opens");
    let (lake, before) = empty_lake(dir.path()).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (url, done) = (db.url.clone(), done.clone());
        tokio::spawn(async move {
            let pool = sqlx::PgPool::connect(&url).await.expect("connects");
            // Until the run ends (however long a loaded machine makes it).
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let killed: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'kartoteka-ingest' AND state = 'active' AND query LIKE '%pg_sleep%'",
                )
                .fetch_all(&pool)
                .await
                .expect("terminates");
                if killed.contains(&true) {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            false
        })
    };
    let outcome = kartoteka_ingest::ingest(
        &engine_over(lake.clone()),
        &source,
        &mapping,
        "test",
        &NoProgress,
        IngestOptions::default(),
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        killer.await.expect("killer"),
        "the backend was found and killed"
    );
    let err = outcome.expect_err("the connection was killed");
    let msg = err.to_string();
    assert!(msg.contains("tasks") && msg.contains("failed"), "{msg}");
    assert_eq!(
        lake.snapshot_ids().await.expect("snapshots").len() as u64,
        before,
        "nothing committed"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    for url in [
        "postgres://crm:topsecret@127.0.0.1:1/crm",
        "mysql://crm:topsecret@127.0.0.1:1/crm",
    ] {
        let spec = SourceSpec {
            connect_attempts: 2,
            connect_timeout: std::time::Duration::from_secs(1),
            ..SourceSpec::new(url)
        };
        let err = Source::open(&spec).await.expect_err("unreachable");
        let msg = err.to_string();
        assert!(
            msg.contains("cannot open source") && msg.contains("127.0.0.1:1"),
            "{msg}"
        );
        // What happened, in the words of the network, not of a connection pool.
        assert!(
            msg.contains("connection refused (after 2 attempts)") && !msg.contains("pool"),
            "{msg}"
        );
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(!format!("{err:?}").contains("topsecret"), "Debug too");
    }
}

#[tokio::test]
async fn the_cli_registers_a_server_source_reconciles_and_records_every_run() {
    let Some(db) = TestDb::create(Server::Postgres, "pg_cli").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    common::ok(home, &["demo", "--scale", "0.02", "--end", "2025-07-01"]);
    servers::copy_to_server(&home.join("demo-crm.sqlite"), &db.url)
        .await
        .expect("copied");
    let mapping = home.join("pg-mapping.toml");
    std::fs::write(&mapping, servers::POSTGRES_MAPPING).expect("mapping written");
    let mapping = mapping.to_str().expect("utf-8");

    // A password in the URL would end up in the config file: refused before anything happens.
    let with_password = db
        .url
        .replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
    assert_ne!(with_password, db.url);
    let e = common::fail(
        home,
        &[
            "ingest",
            "--url",
            &with_password,
            "--mapping",
            mapping,
            "--name",
            "crm",
        ],
    );
    assert!(e.contains("--password-env") && !e.contains("s3cret"), "{e}");

    let out = common::run(
        home,
        &[
            "ingest",
            "--url",
            &db.url,
            "--mapping",
            mapping,
            "--name",
            "crm",
            // The same CRM on a server takes the demo's place (its users go).
            "--replace-demo",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("reconciled: every table"), "{stderr}");
    let config = std::fs::read_to_string(home.join("kartoteka.toml")).expect("config");
    assert!(
        config.contains("[sources.crm]") && !config.contains("s3cret"),
        "{config}"
    );
    // Registered: later runs need only the name.
    common::ok(home, &["ingest", "--source", "crm"]);
    // The server unreachable: a failed run, recorded with its reason.
    let broken = config.replace(&db.url, "postgres://postgres@127.0.0.1:1/nowhere");
    std::fs::write(home.join("kartoteka.toml"), broken).expect("config");
    let e = common::fail(home, &["ingest", "--source", "crm"]);
    assert!(e.contains("cannot open source"), "{e}");

    let runs: serde_json::Value =
        serde_json::from_str(&common::ok(home, &["runs", "--format", "json"])).expect("json");
    let runs = runs.as_array().expect("array");
    // Newest first: the failed run, two runs of crm, the demo's run.
    let outcomes: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["source"].as_str().expect("source"),
                r["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("crm", "failed"),
            ("crm", "ok"),
            ("crm", "ok"),
            ("demo", "ok")
        ]
    );
    assert!(
        runs[0]["error"]
            .as_str()
            .expect("error")
            .contains("cannot open source")
    );
    let tables = runs[1]["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), kartoteka_engine::model::tables().len());
    for t in tables {
        assert_eq!(t["reconciled"], serde_json::json!(true), "{t}");
        assert_eq!(t["source_keys"], t["lake_keys"], "{t}");
        assert_eq!(t["source_keys"]["rows"], t["live_rows"], "{t}");
    }
    // The server's rows equal the demo's: the same key fingerprints as the SQLite run.
    let demo_tables = runs[3]["tables"].as_array().expect("tables");
    for (a, b) in demo_tables.iter().zip(tables) {
        assert_eq!(a["lake_keys"], b["lake_keys"], "{}", a["table"]);
    }
}

/// Incremental runs against each server: the cursor is handed back in the server's own type
/// (PostgreSQL TIMESTAMPTZ, MariaDB DATETIME in Moscow time), changed rows replace their older
/// versions, deleted rows go, and the lake ends equal to a full load of the server as it is now.
/// The lake behind `engine` holds exactly what a full load of `source` into a new lake under `dir`
/// gives.
async fn assert_equal_to_a_full_load(engine: &Engine, dir: &Path, source: &Source, mapping: &str) {
    let fresh = common::ingest_into_new_lake(dir, source, mapping).await;
    common::assert_same_contents(
        &common::lake_contents(&owner(&engine_over(fresh)).await).await,
        &common::lake_contents(&owner(engine).await).await,
        "incremental vs full",
    );
}

#[tokio::test]
async fn incremental_runs_against_servers_end_equal_to_a_full_load() {
    for server in [Server::Postgres, Server::MySql] {
        let Some(db) = TestDb::create(server, "incr").await else {
            continue;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = common::demo_sqlite(dir.path(), 0.03, 8).await;
        servers::copy_to_server(&sqlite, &db.url)
            .await
            .expect("copied");
        let mapping_text = match server {
            Server::Postgres => servers::POSTGRES_MAPPING,
            Server::MySql => servers::MYSQL_MAPPING,
        };
        let mapping = Mapping::parse(mapping_text, Path::new("m.toml")).expect("mapping");
        let source = Source::open(&SourceSpec::new(db.url.clone()))
            .await
            .expect("opens");
        let lake = common::ingest_into_new_lake(&dir.path().join("a"), &source, mapping_text).await;
        let engine = engine_over(lake);
        let changes: &[&str] = match server {
            Server::Postgres => &[
                "UPDATE leads SET price = COALESCE(price, 0) + 1.5, modified_at = TIMESTAMPTZ '2025-07-02 10:00:00+00' WHERE id % 17 = 0",
                "INSERT INTO calls SELECT id + 1000000, contact_id, lead_id, user_id, direction, TIMESTAMPTZ '2025-07-02 11:00:00+00', duration_sec, result, note, NULL FROM calls WHERE id % 23 = 0",
                // An edited call (its note rewritten) moves its modified_at: the lake must follow.
                "UPDATE calls SET note = 'исправлено', modified_at = TIMESTAMPTZ '2025-07-02 11:30:00+00' WHERE id % 29 = 0",
                "DELETE FROM todo WHERE id % 13 = 0",
            ],
            Server::MySql => &[
                "UPDATE leads SET price = COALESCE(price, 0) + 1.5, modified_at = '2025-07-02 13:00:00' WHERE id % 17 = 0",
                "INSERT INTO calls SELECT id + 1000000, contact_id, lead_id, user_id, direction, '2025-07-02 14:00:00', duration_sec, result, note, NULL FROM calls WHERE id % 23 = 0",
                "UPDATE calls SET note = 'исправлено', modified_at = '2025-07-02 14:30:00' WHERE id % 29 = 0",
                "DELETE FROM todo WHERE id % 13 = 0",
            ],
        };
        admin(server, &db.url, &changes.join(";\n")).await;
        let report =
            common::ingest_reconciled(&engine, &source, &mapping, IngestOptions::default()).await;
        let deals = report
            .tables
            .iter()
            .find(|t| t.table == "deals")
            .expect("deals");
        assert_eq!(deals.mode, kartoteka_ingest::LoadMode::Incremental);
        assert!(
            deals.rows > 0 && deals.rows * 5 < deals.live_rows,
            "{deals:?}"
        );
        // The server computed each incremental table's key checksum itself (three numbers, not every
        // key), and `ingest_reconciled` found it equal to the lake's, read back by Rust.
        for t in &report.tables {
            if t.mode == kartoteka_ingest::LoadMode::Incremental {
                assert_eq!(
                    t.source_keys_from,
                    Some(kartoteka_ingest::KeysFrom::SourceAggregate),
                    "{server:?} {}",
                    t.table
                );
            }
        }
        assert!(
            report
                .tables
                .iter()
                .find(|t| t.table == "tasks")
                .expect("tasks")
                .rows_dropped
                > 0,
            "deleted tasks found"
        );
        assert_equal_to_a_full_load(&engine, &dir.path().join("b"), &source, mapping_text).await;

        // A client erased on request stays out: the server's checksum leaves their rows out in SQL
        // (`client_id IN (…)`, `deal_id IN (…)`) exactly as the lake does, or this run would not
        // reconcile.
        let client = owner(&engine)
            .await
            .sql("SELECT client_id FROM deals GROUP BY client_id ORDER BY COUNT(*) DESC, client_id LIMIT 1")
            .await
            .expect("a client with deals")
            .text_column("client_id")[0]
            .clone()
            .expect("an id")
            .parse::<i64>()
            .expect("a number");
        let erasure = engine.erase_client(client).await.expect("erased");
        assert!(erasure.deals > 0, "{erasure:?}");
        let after =
            common::ingest_reconciled(&engine, &source, &mapping, IngestOptions::default()).await;
        for table in ["clients", "deals", "interactions", "tasks", "payments"] {
            let t = after
                .tables
                .iter()
                .find(|t| t.table == table)
                .expect("table");
            assert_eq!(t.mode, kartoteka_ingest::LoadMode::Incremental, "{table}");
            assert_eq!(
                t.source_keys_from,
                Some(kartoteka_ingest::KeysFrom::SourceAggregate),
                "{server:?} {table}"
            );
        }
        let left = owner(&engine)
            .await
            .sql(&format!(
                "SELECT (SELECT COUNT(*) FROM clients WHERE client_id = {client}) \
                      + (SELECT COUNT(*) FROM deals WHERE client_id = {client}) \
                      + (SELECT COUNT(*) FROM interactions WHERE client_id = {client}) AS n"
            ))
            .await
            .expect("counted")
            .text_column("n");
        assert_eq!(left, vec![Some("0".to_string())], "{server:?}");
    }
}

/// Keys of every integer width get the server's own checksum (PostgreSQL's INTEGER and SMALLINT are
/// widened before squaring), and a text key — stored as a surrogate — falls back to reading every
/// key; either way an incremental run with an update, an insert and a delete ends equal to a full
/// load.
#[tokio::test]
async fn narrow_integer_keys_and_text_keys_reconcile_incrementally() {
    for server in [Server::Postgres, Server::MySql] {
        let Some(db) = TestDb::create(server, "keys").await else {
            continue;
        };
        let (int4, int2, stamp) = match server {
            Server::Postgres => ("INTEGER", "SMALLINT", "TIMESTAMP"),
            Server::MySql => ("INT", "SMALLINT", "DATETIME"),
        };
        admin(
            server,
            &db.url,
            &format!(
                "CREATE TABLE people (id {int4} PRIMARY KEY, name TEXT, changed_at {stamp});
                 CREATE TABLE teams (id {int2} PRIMARY KEY, boss {int4}, changed_at {stamp});
                 CREATE TABLE accounts (code VARCHAR(20) PRIMARY KEY, boss {int4}, changed_at {stamp});
                 INSERT INTO people VALUES (2000000000, 'Анна', '2025-01-01 10:00:00'),
                   (1999999999, 'Борис', '2025-01-01 10:00:00'), (7, 'Вера', '2025-01-01 10:00:00');
                 INSERT INTO teams VALUES (32000, 7, '2025-01-01 10:00:00'), (-5, 7, '2025-01-01 10:00:00');
                 INSERT INTO accounts VALUES ('AC-1', 7, '2025-01-01 10:00:00'),
                   ('AC-2', 7, '2025-01-01 10:00:00'), ('AC-3', 7, '2025-01-01 10:00:00')"
            ),
        )
        .await;
        let mapping_text = r#"
name = "keys"

[keys]
text = true

[tables.staff]
incremental = true
query = "SELECT id AS staff_id, name AS full_name, changed_at AS updated_at FROM people"

[tables.clients]
incremental = true
query = "SELECT code AS client_id, boss AS owner_id, changed_at AS updated_at FROM accounts"

[tables.ownership_changes]
incremental = true
query = "SELECT id AS change_id, boss AS to_staff, changed_at, changed_at AS updated_at FROM teams"
"#;
        let mapping = Mapping::parse(mapping_text, Path::new("m.toml")).expect("mapping");
        let source = Source::open(&SourceSpec::new(db.url.clone()))
            .await
            .expect("opens");
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_over(
            common::ingest_into_new_lake(&dir.path().join("a"), &source, mapping_text).await,
        );
        admin(
            server,
            &db.url,
            "UPDATE people SET name = 'Анна Петровна', changed_at = '2025-02-01 10:00:00' WHERE id = 2000000000;
             INSERT INTO people VALUES (2147483647, 'Глеб', '2025-02-01 10:00:00');
             DELETE FROM people WHERE id = 7;
             INSERT INTO teams VALUES (-32000, 7, '2025-02-01 10:00:00');
             DELETE FROM teams WHERE id = 32000;
             DELETE FROM accounts WHERE code = 'AC-2'",
        )
        .await;
        let report =
            common::ingest_reconciled(&engine, &source, &mapping, IngestOptions::default()).await;
        let from = |table: &str| {
            let t = report
                .tables
                .iter()
                .find(|t| t.table == table)
                .expect("table");
            assert_eq!(t.mode, kartoteka_ingest::LoadMode::Incremental, "{table}");
            t.source_keys_from
        };
        use kartoteka_ingest::KeysFrom;
        assert_eq!(from("staff"), Some(KeysFrom::SourceAggregate), "{server:?}");
        assert_eq!(
            from("ownership_changes"),
            Some(KeysFrom::SourceAggregate),
            "{server:?}"
        );
        assert_eq!(from("clients"), Some(KeysFrom::KeysRead), "{server:?}");
        assert_equal_to_a_full_load(&engine, &dir.path().join("b"), &source, mapping_text).await;
    }
}
