//! Correctness: every metric shipped equals the same question answered independently — by SQLite's own
//! SQL over the *source* database (the demo CRM's schema, not the canonical one), or by plain Rust over
//! the source's raw rows. Exact: money to the kopeck, counts exactly, ratios to 1e-12.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use common::{money, rows};
use kartoteka_engine::{
    Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal, QuerySession,
};
use kartoteka_ingest::demo::{self, DemoConfig};
use kartoteka_ingest::{Mapping, NoProgress, SqliteSource};
use kartoteka_queries::Catalog;
use sqlx::Row;

const FROM: &str = "2023-03-01 00:00:00";
const TO: &str = "2025-06-01 00:00:00";

struct Fixture {
    _dir: tempfile::TempDir,
    source: SqliteSource,
    session: QuerySession,
    catalog: Catalog,
}

async fn fixture(scale: f64, seed: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crm.sqlite");
    let end = NaiveDate::from_ymd_opt(2025, 7, 1).expect("date");
    demo::generate(&db, DemoConfig { seed, scale, end })
        .await
        .expect("demo generates");
    let source = SqliteSource::open(&db).await.expect("source opens");
    let mapping =
        Mapping::parse(demo::MAPPING, std::path::Path::new("demo-mapping.toml")).expect("mapping");
    let store = LakeStore::local(&dir.path().join("lake")).expect("store");
    let key = MasterKeySource::create_key_file(&dir.path().join("master.key")).expect("key file");
    let lake = Arc::new(Lake::open_or_create(store, &key).await.expect("lake"));
    kartoteka_ingest::ingest_sqlite(&lake, &source, &mapping, "test", &NoProgress)
        .await
        .expect("ingest");
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    Fixture {
        _dir: dir,
        source,
        session,
        catalog: Catalog::builtin().expect("catalog"),
    }
}

impl Fixture {
    async fn metric(&self, name: &str, args: &[(&str, &str)]) -> Vec<Vec<String>> {
        let metric = self.catalog.get(name).expect("metric");
        let args: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = kartoteka_queries::run_metric(&self.session, metric, &args)
            .await
            .expect(name);
        rows(&r.batches)
    }

    async fn source_rows(&self, sql: &str) -> Vec<sqlx::sqlite::SqliteRow> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(FROM)
            .bind(TO)
            .fetch_all(self.source.pool())
            .await
            .expect("oracle SQL runs")
    }
}

fn close(a: &str, b: f64) -> bool {
    a.parse::<f64>()
        .is_ok_and(|a| (a - b).abs() <= 1e-12 * b.abs().max(1.0))
}

async fn check_revenue_by_month(f: &Fixture) {
    let got = f
        .metric("revenue_by_month", &[("from", FROM), ("to", TO)])
        .await;
    let want = f
        .source_rows(
            "SELECT strftime('%Y-%m-01', l.closed_at) AS month, SUM(COALESCE(l.price_kopecks, 0)), COUNT(*)
             FROM leads l JOIN funnel_statuses s ON s.id = l.status_id
             WHERE s.status_type = 1 AND l.closed_at >= ?1 AND l.closed_at < ?2
             GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert!(
        want.len() >= 20,
        "the period holds many months of sales ({})",
        want.len()
    );
    let want: Vec<Vec<String>> = want
        .iter()
        .map(|r| {
            vec![
                r.get::<String, _>(0),
                money(r.get(1)),
                r.get::<i64, _>(2).to_string(),
            ]
        })
        .collect();
    assert_eq!(got, want);
}

async fn check_funnel(f: &Fixture) {
    for pipeline in ["Продажи", "Тендеры"] {
        let got = f
            .metric(
                "funnel_conversion",
                &[("from", FROM), ("to", TO), ("pipeline", pipeline)],
            )
            .await;
        let want = sqlx::query(
            "WITH st AS (SELECT s.id, s.title, s.sort FROM funnel_statuses s JOIN funnels f ON f.id = s.funnel_id
                         WHERE f.title = ?3 AND s.status_type <> 2),
                  furthest AS (SELECT l.id, MAX(st.sort) AS pos FROM leads l
                               JOIN funnels f ON f.id = l.funnel_id AND f.title = ?3
                               JOIN lead_status_log g ON g.lead_id = l.id
                               JOIN st ON st.id = g.new_status_id
                               WHERE l.created_at >= ?1 AND l.created_at < ?2 GROUP BY l.id)
             SELECT st.sort, st.title, (SELECT COUNT(*) FROM furthest WHERE furthest.pos >= st.sort) FROM st ORDER BY st.sort",
        )
        .bind(FROM)
        .bind(TO)
        .bind(pipeline)
        .fetch_all(f.source.pool())
        .await
        .expect("oracle");
        assert_eq!(
            got.len(),
            want.len(),
            "{pipeline}: one row per non-lost stage"
        );
        let mut prev: Option<i64> = None;
        for (g, w) in got.iter().zip(&want) {
            let reached: i64 = w.get(2);
            assert_eq!(g[0], pipeline);
            assert_eq!(g[1], w.get::<i64, _>(0).to_string());
            assert_eq!(g[2], w.get::<String, _>(1));
            assert_eq!(g[3], reached.to_string(), "{pipeline} {}", g[2]);
            match prev {
                Some(p) if p > 0 => assert!(close(&g[4], reached as f64 / p as f64), "{g:?}"),
                _ => assert_eq!(g[4], "NULL", "first stage or empty previous stage"),
            }
            prev = Some(reached);
        }
        assert!(
            want.iter().map(|w| w.get::<i64, _>(2)).sum::<i64>() > 0,
            "{pipeline} has deals"
        );
    }
    // The default pipeline is the one with the most deals.
    let busiest: String = sqlx::query_scalar(
        "SELECT f.title FROM leads l JOIN funnels f ON f.id = l.funnel_id GROUP BY f.title ORDER BY COUNT(*) DESC, f.title LIMIT 1",
    )
    .fetch_one(f.source.pool())
    .await
    .expect("oracle");
    let got = f
        .metric("funnel_conversion", &[("from", FROM), ("to", TO)])
        .await;
    assert_eq!(got[0][0], busiest);
}

async fn check_activity(f: &Fixture) {
    for (grain, bucket) in [
        ("day", "date(t)"),
        ("week", "date(t, '-6 days', 'weekday 1')"),
    ] {
        let got = f
            .metric(
                "activity_by_manager",
                &[("from", FROM), ("to", TO), ("grain", grain)],
            )
            .await;
        let sql = format!(
            "WITH acts AS (
                SELECT user_id AS u, started_at AS t, 'call' AS ch, direction AS dir, duration_sec AS secs FROM calls
                UNION ALL SELECT user_id, sent_at, 'email', direction, NULL FROM emails
                UNION ALL SELECT user_id, sent_at, 'chat', direction, NULL FROM chat_messages
                UNION ALL SELECT user_id, held_at, 'meeting', 'out', NULL FROM meetings)
             SELECT u, {bucket} AS period,
                    SUM(ch = 'call' AND dir = 'out'), SUM(ch = 'email' AND dir = 'out'),
                    SUM(ch = 'chat' AND dir = 'out'), SUM(ch = 'meeting'),
                    SUM(CASE WHEN ch = 'call' THEN COALESCE(secs, 0) ELSE 0 END)
             FROM acts WHERE t >= ?1 AND t < ?2 AND (dir = 'out' OR ch = 'call')
             GROUP BY u, period ORDER BY period, u"
        );
        let want = f.source_rows(&sql).await;
        assert_eq!(got.len(), want.len(), "{grain}: same staff×period rows");
        assert!(want.len() > 100);
        for (g, w) in got.iter().zip(&want) {
            let expect = [
                w.get::<i64, _>(0).to_string(),
                w.get::<String, _>(1),
                w.get::<i64, _>(2).to_string(),
                w.get::<i64, _>(3).to_string(),
                w.get::<i64, _>(4).to_string(),
                w.get::<i64, _>(5).to_string(),
            ];
            assert_eq!(
                [&g[0], &g[2], &g[3], &g[4], &g[5], &g[6]],
                expect.each_ref(),
                "{grain}"
            );
            assert!(close(&g[7], w.get::<i64, _>(6) as f64 / 60.0), "{g:?}");
        }
    }
}

/// Cohort retention in plain Rust over the source's raw paid invoices.
async fn check_cohorts(f: &Fixture) {
    let got = f
        .metric(
            "cohort_retention",
            &[("from", FROM), ("to", TO), ("months", "12")],
        )
        .await;
    let payments: Vec<(i64, String)> =
        sqlx::query_as("SELECT contact_id, paid_at FROM invoices WHERE status = 'paid'")
            .fetch_all(f.source.pool())
            .await
            .expect("raw rows");
    let month_index = |t: &str| {
        let d = NaiveDate::parse_from_str(&t[..10], "%Y-%m-%d").expect("date");
        d.year() as i64 * 12 + d.month0() as i64
    };
    let mut first: BTreeMap<i64, &str> = BTreeMap::new();
    let mut months: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for (c, t) in &payments {
        let e = first.entry(*c).or_insert(t);
        if t.as_str() < *e {
            *e = t;
        }
        months.entry(*c).or_default().insert(month_index(t));
    }
    let latest = payments
        .iter()
        .map(|(_, t)| month_index(t))
        .max()
        .expect("payments exist");
    let mut cohorts: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (c, t) in &first {
        if *t >= FROM && *t < TO {
            cohorts.entry(month_index(t)).or_default().push(*c);
        }
    }
    let mut want = Vec::new();
    for (cohort, members) in &cohorts {
        for k in 0..=12 {
            if cohort + k > latest {
                break;
            }
            let active = members
                .iter()
                .filter(|c| months[c].contains(&(cohort + k)))
                .count();
            let date = NaiveDate::from_ymd_opt((cohort / 12) as i32, (cohort % 12 + 1) as u32, 1)
                .expect("date");
            want.push((date.to_string(), k, members.len(), active));
        }
    }
    assert_eq!(got.len(), want.len());
    assert!(want.len() > 50);
    for (g, (date, k, size, active)) in got.iter().zip(&want) {
        assert_eq!(
            [&g[0], &g[1], &g[2], &g[3]],
            [date, &k.to_string(), &size.to_string(), &active.to_string()]
        );
        assert!(close(&g[4], *active as f64 / *size as f64), "{g:?}");
    }
}

#[tokio::test]
async fn metrics_equal_independent_answers_from_the_source() {
    for (scale, seed) in [(0.05, 7), (0.12, 1234)] {
        let f = fixture(scale, seed).await;
        check_revenue_by_month(&f).await;
        check_funnel(&f).await;
        check_activity(&f).await;
        check_cohorts(&f).await;
    }
}

#[tokio::test]
async fn every_source_row_arrives_and_money_is_exact() {
    let f = fixture(0.05, 99).await;
    for (table, source_sql) in [
        ("clients", "SELECT COUNT(*), 0 FROM contacts"),
        (
            "deals",
            "SELECT COUNT(*), SUM(COALESCE(price_kopecks, 0)) FROM leads",
        ),
        (
            "payments",
            "SELECT COUNT(*), SUM(total_kopecks) FROM invoices WHERE status = 'paid'",
        ),
        (
            "interactions",
            "SELECT (SELECT COUNT(*) FROM calls) + (SELECT COUNT(*) FROM emails) + (SELECT COUNT(*) FROM chat_messages) + (SELECT COUNT(*) FROM meetings), 0",
        ),
        ("tasks", "SELECT COUNT(*), 0 FROM todo"),
        (
            "deal_stage_changes",
            "SELECT COUNT(*), 0 FROM lead_status_log",
        ),
    ] {
        let (n, sum): (i64, i64) = sqlx::query_as(source_sql)
            .fetch_one(f.source.pool())
            .await
            .expect("oracle");
        let money_sql = match table {
            "deals" | "payments" => {
                format!("SELECT COUNT(*), CAST(COALESCE(SUM(amount), 0) AS VARCHAR) FROM {table}")
            }
            _ => format!("SELECT COUNT(*), '0.00' FROM {table}"),
        };
        let r = f.session.sql(&money_sql).await.expect("lake query");
        let got = rows(&r.batches);
        assert_eq!(got[0], vec![n.to_string(), money(sum)], "{table}");
    }
}
