//! Correctness: every metric shipped equals the same question answered independently — by SQLite's own
//! SQL over the *source* database (the demo CRM's schema, not the canonical one), or by plain Rust over
//! the source's raw rows. Exact: money to the kopeck, counts exactly, ratios to 1e-12.

// Raw source rows are read as tuples; naming each shape would add nothing.
#![allow(clippy::type_complexity)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{money, rows};
use chrono::{Datelike, NaiveDate};
use kartoteka_engine::{Engine, EngineConfig, Principal, QuerySession};
use kartoteka_ingest::SqliteSource;
use kartoteka_ingest::demo::{self, DemoConfig};
use kartoteka_queries::Catalog;
use sqlx::Row;

const FROM: &str = "2023-03-01 00:00:00";
const TO: &str = "2025-06-01 00:00:00";

struct Fixture {
    _dir: tempfile::TempDir,
    source: SqliteSource,
    lake: std::sync::Arc<kartoteka_engine::Lake>,
    engine: Engine,
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
    let (source, lake) = common::ingest_demo_source(dir.path(), &db).await;
    let engine = Engine::new(lake.clone(), EngineConfig::default()).expect("engine");
    let session = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    Fixture {
        _dir: dir,
        source,
        lake,
        engine,
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

const AS_OF: &str = TO;
/// `AS_OF` minus 14 days, the default quiet window of stalled_deals.
const QUIET_FROM: &str = "2025-05-18 00:00:00";

/// SQL over the demo CRM's own schema: leads with their status type (0 open, 1 won, 2 lost).
const LEADS: &str = "SELECT l.*, s.status_type AS st, s.title AS stage, s.sort AS sort, f.title AS pipeline
                     FROM leads l JOIN funnel_statuses s ON s.id = l.status_id JOIN funnels f ON f.id = l.funnel_id";

fn text(r: &sqlx::sqlite::SqliteRow, i: usize) -> String {
    r.get::<Option<String>, _>(i)
        .unwrap_or_else(|| "NULL".into())
}

fn int(r: &sqlx::sqlite::SqliteRow, i: usize) -> String {
    r.get::<i64, _>(i).to_string()
}

/// Exact rows: every cell compared as text, ratios (given by column index) to 1e-12.
fn same_rows(metric: &str, got: &[Vec<String>], want: &[Vec<String>], ratios: &[usize]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{metric}: row count\n got {got:?}\nwant {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            if ratios.contains(&i) && b != "NULL" {
                assert!(
                    close(a, b.parse().expect("ratio")),
                    "{metric}: {g:?} vs {w:?}"
                );
            } else {
                assert_eq!(a, b, "{metric}: column {i} of {g:?} vs {w:?}");
            }
        }
    }
}

fn ratio(num: i64, den: i64) -> String {
    if den == 0 {
        "NULL".into()
    } else {
        (num as f64 / den as f64).to_string()
    }
}

async fn check_sales(f: &Fixture) {
    // revenue_by_manager
    let want: Vec<Vec<String>> = f
        .source_rows(&format!(
            "SELECT COALESCE(CAST(l.closed_by_user_id AS TEXT), 'unknown') AS m, u.full_name,
                    SUM(COALESCE(l.price_kopecks, 0)) AS rev, COUNT(*)
             FROM ({LEADS}) l LEFT JOIN users u ON u.id = l.closed_by_user_id
             WHERE l.st = 1 AND l.closed_at >= ?1 AND l.closed_at < ?2
             GROUP BY l.closed_by_user_id ORDER BY rev DESC, m"
        ))
        .await
        .iter()
        .map(|r| vec![text(r, 0), text(r, 1), money(r.get(2)), int(r, 3)])
        .collect();
    assert!(want.len() >= 3);
    same_rows(
        "revenue_by_manager",
        &f.metric("revenue_by_manager", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[],
    );

    // win_rate: per manager, then the overall row
    let rows = f
        .source_rows(&format!(
            "SELECT COALESCE(CAST(closed_by_user_id AS TEXT), 'unknown') AS m, SUM(st = 1), SUM(st = 2)
             FROM ({LEADS}) WHERE st IN (1, 2) AND closed_at >= ?1 AND closed_at < ?2 GROUP BY m ORDER BY m"
        ))
        .await;
    let mut want: Vec<Vec<String>> = Vec::new();
    let (mut won, mut lost) = (0, 0);
    for r in &rows {
        let (w, l): (i64, i64) = (r.get(1), r.get(2));
        won += w;
        lost += l;
        want.push(vec![
            text(r, 0),
            w.to_string(),
            l.to_string(),
            ratio(w, w + l),
        ]);
    }
    want.push(vec![
        "all".into(),
        won.to_string(),
        lost.to_string(),
        ratio(won, won + lost),
    ]);
    same_rows(
        "win_rate",
        &f.metric("win_rate", &[("from", FROM), ("to", TO)]).await,
        &want,
        &[3],
    );

    // avg_deal_size: exact mean in kopecks, rounded half away from zero
    let r = &f
        .source_rows(&format!(
            "SELECT COUNT(*), COALESCE(SUM(price_kopecks), 0) FROM ({LEADS})
             WHERE st = 1 AND price_kopecks IS NOT NULL AND closed_at >= ?1 AND closed_at < ?2"
        ))
        .await[0];
    let (n, sum): (i64, i64) = (r.get(0), r.get(1));
    assert!(n > 0 && sum > 0);
    let mean = (2 * sum + n) / (2 * n);
    same_rows(
        "avg_deal_size",
        &f.metric("avg_deal_size", &[("from", FROM), ("to", TO)])
            .await,
        &[vec![n.to_string(), money(mean)]],
        &[],
    );

    // sales_cycle: elapsed days in plain Rust, exact median with interpolation
    let pairs: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT created_at, closed_at FROM ({LEADS})
         WHERE st = 1 AND created_at IS NOT NULL AND closed_at >= ?1 AND closed_at < ?2"
    )))
    .bind(FROM)
    .bind(TO)
    .fetch_all(f.source.pool())
    .await
    .expect("oracle");
    let ts =
        |t: &str| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").expect("timestamp");
    let mut days: Vec<f64> = pairs
        .iter()
        .map(|(a, b)| (ts(b) - ts(a)).num_seconds() as f64 / 86_400.0)
        .collect();
    days.sort_by(f64::total_cmp);
    let mean = days.iter().sum::<f64>() / days.len() as f64;
    let pos = 0.5 * (days.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let median = days[lo] + (days[hi] - days[lo]) * (pos - lo as f64);
    let got = f.metric("sales_cycle", &[("from", FROM), ("to", TO)]).await;
    assert_eq!(got[0][0], days.len().to_string());
    assert!(
        close(&got[0][1], mean) && close(&got[0][2], median),
        "{got:?} vs {mean} {median}"
    );

    // pipeline_by_stage: every open stage, zeros where empty
    let want: Vec<Vec<String>> = f
        .source_rows(
            "SELECT f.title, s.sort, s.title, COUNT(l.id), COALESCE(SUM(COALESCE(l.price_kopecks, 0)), 0)
             FROM funnel_statuses s JOIN funnels f ON f.id = s.funnel_id LEFT JOIN leads l ON l.status_id = s.id
             WHERE s.status_type = 0 AND ?1 <> ?2 GROUP BY s.id ORDER BY f.title, s.sort",
        )
        .await
        .iter()
        .map(|r| vec![text(r, 0), int(r, 1), text(r, 2), int(r, 3), money(r.get(4))])
        .collect();
    same_rows(
        "pipeline_by_stage",
        &f.metric("pipeline_by_stage", &[]).await,
        &want,
        &[],
    );

    // plan_vs_actual: in plain Rust over won leads and the sales plan
    let won: Vec<(Option<i64>, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT closed_by_user_id, closed_at, COALESCE(price_kopecks, 0) FROM ({LEADS})
         WHERE st = 1 AND closed_at >= ?1 AND closed_at < ?2"
    )))
    .bind(FROM)
    .bind(TO)
    .fetch_all(f.source.pool())
    .await
    .expect("oracle");
    let plan: Vec<(String, Option<i64>, i64)> =
        sqlx::query_as("SELECT month, user_id, plan_kopecks FROM sales_plan")
            .fetch_all(f.source.pool())
            .await
            .expect("oracle");
    // (ord, scope, month) → (target, revenue)
    let mut cells: BTreeMap<(u8, String, String), (Option<i64>, i64)> = BTreeMap::new();
    for (by, at, amount) in &won {
        let month = format!("{}-01", &at[..7]);
        cells
            .entry((0, "company".into(), month.clone()))
            .or_default()
            .1 += amount;
        if let Some(by) = by {
            cells.entry((1, by.to_string(), month)).or_default().1 += amount;
        }
    }
    for (month, user, amount) in &plan {
        let start = format!("{month}-01 00:00:00");
        if start.as_str() < FROM || start.as_str() >= TO {
            continue;
        }
        let key = match user {
            None => (0, "company".to_string(), format!("{month}-01")),
            Some(u) => (1, u.to_string(), format!("{month}-01")),
        };
        let cell = cells.entry(key).or_default();
        cell.0 = Some(cell.0.unwrap_or(0) + amount);
    }
    let want: Vec<Vec<String>> = cells
        .into_iter()
        .map(|((_, scope, month), (target, revenue))| {
            vec![
                scope,
                month,
                target.map_or("NULL".into(), money),
                money(revenue),
                match target {
                    Some(t) if t != 0 => (revenue as f64 / t as f64).to_string(),
                    _ => "NULL".into(),
                },
            ]
        })
        .collect();
    assert!(want.iter().any(|r| r[2] == "NULL") || want.len() > 20);
    same_rows(
        "plan_vs_actual",
        &f.metric("plan_vs_actual", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[4],
    );
    // Each level alone: the company's rows, then the managers' (level=company once failed inside
    // DataFusion, the union's branches giving `scope` different field metadata).
    let (company, staff): (Vec<Vec<String>>, Vec<Vec<String>>) =
        want.into_iter().partition(|r| r[0] == "company");
    assert!(!company.is_empty() && !staff.is_empty());
    for (level, rows) in [("company", company), ("staff", staff)] {
        same_rows(
            &format!("plan_vs_actual, level {level}"),
            &f.metric(
                "plan_vs_actual",
                &[("from", FROM), ("to", TO), ("level", level)],
            )
            .await,
            &rows,
            &[4],
        );
    }
}

async fn check_funnel_and_audience(f: &Fixture) {
    let want: Vec<Vec<String>> = f
        .source_rows(&format!(
            "SELECT COALESCE(NULLIF(TRIM(loss_reason), ''), 'unknown') AS r, COUNT(*) AS n, SUM(COALESCE(price_kopecks, 0))
             FROM ({LEADS}) WHERE st = 2 AND closed_at >= ?1 AND closed_at < ?2 GROUP BY r ORDER BY n DESC, r"
        ))
        .await
        .iter()
        .map(|r| vec![text(r, 0), int(r, 1), money(r.get(2))])
        .collect();
    assert!(want.len() >= 3);
    same_rows(
        "lost_reasons",
        &f.metric("lost_reasons", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[],
    );

    let want: Vec<Vec<String>> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(CAST(l.responsible_user_id AS TEXT), 'unknown') AS o, COUNT(*) AS n,
                SUM(COALESCE(l.price_kopecks, 0))
         FROM ({LEADS}) l
         WHERE l.st = 0
           AND NOT EXISTS (SELECT 1 FROM lead_status_log g WHERE g.lead_id = l.id AND g.changed_at >= ?1 AND g.changed_at < ?2)
           AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.lead_id = l.id AND c.started_at >= ?1 AND c.started_at < ?2)
           AND NOT EXISTS (SELECT 1 FROM emails e WHERE e.lead_id = l.id AND e.sent_at >= ?1 AND e.sent_at < ?2)
           AND NOT EXISTS (SELECT 1 FROM chat_messages m WHERE m.lead_id = l.id AND m.sent_at >= ?1 AND m.sent_at < ?2)
           AND NOT EXISTS (SELECT 1 FROM meetings t WHERE t.lead_id = l.id AND t.held_at >= ?1 AND t.held_at < ?2)
         GROUP BY o ORDER BY n DESC, o"
    )))
    .bind(QUIET_FROM)
    .bind(AS_OF)
    .fetch_all(f.source.pool())
    .await
    .expect("oracle")
    .iter()
    .map(|r| vec![text(r, 0), int(r, 1), money(r.get(2))])
    .collect();
    assert!(!want.is_empty());
    same_rows(
        "stalled_deals",
        &f.metric("stalled_deals", &[("as_of", AS_OF)]).await,
        &want,
        &[],
    );

    let want: Vec<Vec<String>> = f
        .source_rows(
            "SELECT strftime('%Y-%m-01', created_at) AS m, COALESCE(lead_source, 'unknown') AS s,
                    COALESCE(contact_type, 'unknown') AS k, COUNT(*)
             FROM contacts WHERE created_at >= ?1 AND created_at < ?2 GROUP BY m, s, k ORDER BY m, s, k",
        )
        .await
        .iter()
        .map(|r| vec![text(r, 0), text(r, 1), text(r, 2), int(r, 3)])
        .collect();
    assert!(want.len() > 20);
    same_rows(
        "new_clients",
        &f.metric("new_clients", &[("from", FROM), ("to", TO)]).await,
        &want,
        &[],
    );

    let mut want = Vec::new();
    for (dim, col) in [
        ("kind", "contact_type"),
        ("industry", "industry"),
        ("city", "city"),
        ("country", "country_code"),
        ("source", "lead_source"),
    ] {
        for r in f
            .source_rows(&format!(
                "SELECT COALESCE({col}, 'unknown') AS v, COUNT(*) AS n FROM contacts WHERE ?1 <> ?2 GROUP BY v ORDER BY n DESC, v"
            ))
            .await
        {
            want.push(vec![dim.to_string(), text(&r, 0), int(&r, 1)]);
        }
    }
    same_rows(
        "client_base",
        &f.metric("client_base", &[]).await,
        &want,
        &[],
    );
}

async fn check_repeat_and_tasks(f: &Fixture) {
    let r = &f
        .source_rows(
            "SELECT COUNT(*), COALESCE(SUM(n >= 2), 0) FROM
               (SELECT contact_id, COUNT(*) AS n FROM invoices WHERE status = 'paid' AND paid_at >= ?1 AND paid_at < ?2 GROUP BY contact_id)",
        )
        .await[0];
    let (payers, repeat): (i64, i64) = (r.get(0), r.get(1));
    assert!(payers > 0);
    same_rows(
        "repeat_rate",
        &f.metric("repeat_rate", &[("from", FROM), ("to", TO)]).await,
        &[vec![
            payers.to_string(),
            repeat.to_string(),
            ratio(repeat, payers),
        ]],
        &[2],
    );

    let want: Vec<Vec<String>> = sqlx::query(
        "SELECT COALESCE(CAST(assignee_id AS TEXT), 'unknown') AS s,
                SUM(done_at IS NULL AND deadline_at < ?3) AS overdue,
                SUM(deadline_at >= ?1 AND deadline_at < ?2) AS due,
                SUM(deadline_at >= ?1 AND deadline_at < ?2 AND done_at <= deadline_at) AS on_time
         FROM todo GROUP BY s HAVING overdue > 0 OR due > 0 ORDER BY overdue DESC, s",
    )
    .bind(FROM)
    .bind(TO)
    .bind(AS_OF)
    .fetch_all(f.source.pool())
    .await
    .expect("oracle")
    .iter()
    .map(|r| {
        let (due, on_time): (i64, i64) = (r.get(2), r.get(3));
        vec![
            text(r, 0),
            int(r, 1),
            due.to_string(),
            on_time.to_string(),
            ratio(on_time, due),
        ]
    })
    .collect();
    assert!(want.len() >= 3);
    same_rows(
        "overdue_tasks",
        &f.metric(
            "overdue_tasks",
            &[("from", FROM), ("to", TO), ("as_of", AS_OF)],
        )
        .await,
        &want,
        &[4],
    );
}

fn ts(t: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").expect("timestamp")
}

/// Exact continuous percentile with linear interpolation over sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

fn close_or_null(got: &str, want: Option<f64>) -> bool {
    match want {
        None => got == "NULL",
        Some(w) => close(got, w),
    }
}

/// Paid invoices: (client, paid_at, kopecks).
async fn payments(f: &Fixture) -> Vec<(i64, chrono::NaiveDateTime, i64)> {
    let raw: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT contact_id, paid_at, total_kopecks FROM invoices WHERE status = 'paid'",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("raw rows");
    raw.into_iter().map(|(c, t, k)| (c, ts(&t), k)).collect()
}

/// Round a mean of kopecks half away from zero (amounts here are non-negative).
fn mean_kopecks(sum: i64, n: i64) -> i64 {
    (2 * sum + n) / (2 * n)
}

async fn check_time_in_stage(f: &Fixture) {
    let changes: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT g.id, g.lead_id, f.title, s.title, g.changed_at FROM lead_status_log g
         JOIN funnel_statuses s ON s.id = g.new_status_id JOIN funnels f ON f.id = s.funnel_id",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("oracle");
    let mut by_deal: BTreeMap<i64, Vec<(chrono::NaiveDateTime, i64, String, String)>> =
        BTreeMap::new();
    for (id, lead, pipeline, stage, at) in changes {
        by_deal
            .entry(lead)
            .or_default()
            .push((ts(&at), id, pipeline, stage));
    }
    let (from, to) = (ts(FROM), ts(TO));
    // (pipeline, stage) → (hours of entries followed by a change, entries still open)
    let mut cells: BTreeMap<(String, String), (Vec<f64>, i64)> = BTreeMap::new();
    for list in by_deal.values_mut() {
        list.sort();
        for (i, (at, _, pipeline, stage)) in list.iter().enumerate() {
            if *at < from || *at >= to {
                continue;
            }
            let cell = cells.entry((pipeline.clone(), stage.clone())).or_default();
            match list.get(i + 1) {
                Some((next, ..)) => cell.0.push((*next - *at).num_seconds() as f64 / 3600.0),
                None => cell.1 += 1,
            }
        }
    }
    let stages = f
        .source_rows(
            "SELECT f.title, s.sort, s.title FROM funnel_statuses s JOIN funnels f ON f.id = s.funnel_id
             WHERE s.status_type = 0 AND ?1 <> ?2 ORDER BY f.title, s.sort",
        )
        .await;
    let got = f
        .metric("time_in_stage", &[("from", FROM), ("to", TO)])
        .await;
    assert_eq!(got.len(), stages.len());
    let mut timed = 0;
    for (g, st) in got.iter().zip(&stages) {
        let key = (text(st, 0), text(st, 2));
        let (mut hours, open) = cells.remove(&key).unwrap_or_default();
        hours.sort_by(f64::total_cmp);
        timed += hours.len();
        assert_eq!(
            [&g[0], &g[1], &g[2], &g[3]],
            [&key.0, &int(st, 1), &key.1, &hours.len().to_string()]
        );
        assert!(close_or_null(&g[4], percentile(&hours, 0.5)), "{g:?}");
        assert!(
            close_or_null(&g[5], percentile(&hours, 0.9)),
            "{g:?}: p90 {:?} of {} values",
            percentile(&hours, 0.9),
            hours.len()
        );
        assert_eq!(g[6], open.to_string(), "{g:?}");
    }
    assert!(timed > 100);
}

async fn check_retention(f: &Fixture) {
    let pays = payments(f).await;
    let (from, to, as_of) = (ts(FROM), ts(TO), ts(AS_OF));
    let month = |d: chrono::NaiveDateTime, k: u32| {
        chrono::NaiveDate::from_ymd_opt(d.year(), d.month(), 1)
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("time")
            .checked_add_months(chrono::Months::new(k))
            .expect("month")
    };

    // churn
    let active = |d: chrono::NaiveDateTime| -> BTreeSet<i64> {
        let start = d - chrono::Duration::days(90);
        pays.iter()
            .filter(|(_, t, _)| *t >= start && *t < d)
            .map(|(c, ..)| *c)
            .collect()
    };
    let mut want = Vec::new();
    let mut m = month(from, 0);
    while m < to && month(m, 1) <= as_of {
        let (now, next) = (active(m), active(month(m, 1)));
        if !now.is_empty() {
            let churned = now.difference(&next).count() as i64;
            want.push(vec![
                m.date().to_string(),
                now.len().to_string(),
                churned.to_string(),
                ratio(churned, now.len() as i64),
            ]);
        }
        m = month(m, 1);
    }
    assert!(want.len() > 12);
    same_rows(
        "churn",
        &f.metric("churn", &[("from", FROM), ("to", TO), ("as_of", AS_OF)])
            .await,
        &want,
        &[3],
    );

    // ltv_by_cohort
    let mut first: BTreeMap<i64, chrono::NaiveDateTime> = BTreeMap::new();
    for (c, t, _) in pays.iter().filter(|(_, t, _)| *t < as_of) {
        let e = first.entry(*c).or_insert(*t);
        *e = (*e).min(*t);
    }
    // cohort month → (clients, sum of totals, complete)
    let mut cohorts: BTreeMap<chrono::NaiveDateTime, (i64, i64, bool)> = BTreeMap::new();
    for (c, start) in &first {
        if *start < from || *start >= to {
            continue;
        }
        let end = start
            .checked_add_months(chrono::Months::new(12))
            .expect("end");
        let total: i64 = pays
            .iter()
            .filter(|(pc, t, _)| pc == c && t >= start && *t < end && *t < as_of)
            .map(|(.., k)| k)
            .sum();
        let e = cohorts.entry(month(*start, 0)).or_insert((0, 0, true));
        e.0 += 1;
        e.1 += total;
        e.2 &= end <= as_of;
    }
    let want: Vec<Vec<String>> = cohorts
        .iter()
        .map(|(m, (n, sum, complete))| {
            vec![
                m.date().to_string(),
                n.to_string(),
                money(mean_kopecks(*sum, *n)),
                complete.to_string(),
            ]
        })
        .collect();
    assert!(want.iter().any(|r| r[3] == "true") && want.iter().any(|r| r[3] == "false"));
    same_rows(
        "ltv_by_cohort",
        &f.metric(
            "ltv_by_cohort",
            &[("from", FROM), ("to", TO), ("as_of", AS_OF)],
        )
        .await,
        &want,
        &[],
    );

    // rfm
    let year_ago = as_of
        .checked_sub_months(chrono::Months::new(12))
        .expect("year");
    let mut base: BTreeMap<i64, (chrono::NaiveDate, i64, i64)> = BTreeMap::new();
    for (c, t, k) in pays.iter().filter(|(_, t, _)| *t < as_of) {
        let e = base.entry(*c).or_insert((t.date(), 0, 0));
        e.0 = e.0.max(t.date());
        if *t >= year_ago {
            e.1 += 1;
            e.2 += k;
        }
    }
    let ids: Vec<i64> = base.keys().copied().collect();
    let ntile = |mut order: Vec<i64>, key: &dyn Fn(i64) -> i64| -> BTreeMap<i64, i64> {
        // worst first; ties by client id ascending
        order.sort_by_key(|&c| (key(c), c));
        let n = order.len();
        let (size, extra) = (n / 5, n % 5);
        let mut out = BTreeMap::new();
        let mut i = 0;
        for bucket in 1..=5 {
            let len = size + usize::from(bucket <= extra);
            for &c in &order[i..i + len] {
                out.insert(c, bucket as i64);
            }
            i += len;
        }
        out
    };
    let recency = |c: i64| (as_of.date() - base[&c].0).num_days();
    let r = ntile(ids.clone(), &|c| -recency(c));
    let fr = ntile(ids.clone(), &|c| base[&c].1);
    let mo = ntile(ids.clone(), &|c| base[&c].2);
    let names: BTreeMap<i64, Option<String>> =
        sqlx::query_as("SELECT id, display_name FROM contacts")
            .fetch_all(f.source.pool())
            .await
            .expect("names")
            .into_iter()
            .collect();
    let want: Vec<Vec<String>> = ids
        .iter()
        .map(|&c| {
            let (rs, fs, ms) = (r[&c], fr[&c], mo[&c]);
            let segment = if rs >= 4 && fs >= 4 {
                "champions"
            } else if fs >= 4 {
                "loyal"
            } else if rs >= 4 && fs <= 2 {
                "new"
            } else if rs <= 2 && fs >= 3 {
                "at_risk"
            } else if rs <= 2 && fs <= 2 {
                "hibernating"
            } else {
                "needs_attention"
            };
            vec![
                c.to_string(),
                names
                    .get(&c)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "NULL".into()),
                recency(c).to_string(),
                base[&c].1.to_string(),
                money(base[&c].2),
                rs.to_string(),
                fs.to_string(),
                ms.to_string(),
                segment.to_string(),
            ]
        })
        .collect();
    let segments: BTreeSet<&str> = want.iter().map(|r| r[8].as_str()).collect();
    assert!(segments.len() >= 4, "{segments:?}");
    same_rows(
        "rfm",
        &f.metric("rfm", &[("as_of", AS_OF)]).await,
        &want,
        &[],
    );
}

/// One interaction of the source, with the lake's key (`id * 10 + channel digit`, see the mapping).
#[derive(Debug, Clone)]
struct Act {
    key: i64,
    client: Option<i64>,
    staff: Option<i64>,
    channel: &'static str,
    outbound: bool,
    at: chrono::NaiveDateTime,
}

async fn acts(f: &Fixture) -> Vec<Act> {
    let mut out = Vec::new();
    for (sql, digit, channel) in [
        (
            "SELECT id, contact_id, user_id, direction, started_at FROM calls",
            1,
            "call",
        ),
        (
            "SELECT id, contact_id, user_id, direction, sent_at FROM emails",
            2,
            "email",
        ),
        (
            "SELECT id, contact_id, user_id, direction, sent_at FROM chat_messages",
            3,
            "messenger",
        ),
        (
            "SELECT id, contact_id, user_id, 'out', held_at FROM meetings",
            4,
            "meeting",
        ),
    ] {
        let rows: Vec<(i64, Option<i64>, Option<i64>, Option<String>, String)> =
            sqlx::query_as(sql)
                .fetch_all(f.source.pool())
                .await
                .expect("acts");
        for (id, client, staff, dir, at) in rows {
            out.push(Act {
                key: id * 10 + digit,
                client,
                staff,
                channel,
                outbound: dir.as_deref() != Some("in"),
                at: ts(&at),
            });
        }
    }
    out
}

fn label(id: Option<i64>) -> String {
    id.map_or("unknown".into(), |i| i.to_string())
}

async fn check_staff_metrics(f: &Fixture) {
    let all = acts(f).await;
    let (from, to, as_of) = (ts(FROM), ts(TO), ts(AS_OF));
    let week = chrono::Duration::days(7);
    let owners: BTreeMap<i64, Option<i64>> =
        sqlx::query_as("SELECT id, responsible_user_id FROM contacts")
            .fetch_all(f.source.pool())
            .await
            .expect("owners")
            .into_iter()
            .collect();
    let mut outbound_by_client: BTreeMap<i64, Vec<&Act>> = BTreeMap::new();
    for a in all.iter().filter(|a| a.outbound) {
        if let Some(c) = a.client {
            outbound_by_client.entry(c).or_default().push(a);
        }
    }
    for list in outbound_by_client.values_mut() {
        list.sort_by_key(|a| (a.at, a.key));
    }

    // response_time
    let mut minutes: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut unanswered: BTreeMap<String, i64> = BTreeMap::new();
    for i in all.iter().filter(|a| {
        !a.outbound
            && matches!(a.channel, "email" | "messenger")
            && a.client.is_some()
            && a.at >= from
            && a.at < to
    }) {
        let c = i.client.expect("client");
        let answer = outbound_by_client.get(&c).and_then(|l| {
            l.iter()
                .find(|o| o.at > i.at && o.at <= i.at + week && o.at < as_of)
        });
        match answer {
            Some(o) => minutes
                .entry(label(o.staff))
                .or_default()
                .push((o.at - i.at).num_seconds() as f64 / 60.0),
            None if i.at + week <= as_of => {
                *unanswered
                    .entry(label(owners.get(&c).copied().flatten()))
                    .or_default() += 1
            }
            None => {}
        }
    }
    let staff: BTreeSet<String> = minutes.keys().chain(unanswered.keys()).cloned().collect();
    let got = f
        .metric(
            "response_time",
            &[("from", FROM), ("to", TO), ("as_of", AS_OF)],
        )
        .await;
    assert_eq!(got.len(), staff.len());
    for (g, s) in got.iter().zip(&staff) {
        let mut m = minutes.get(s).cloned().unwrap_or_default();
        m.sort_by(f64::total_cmp);
        assert_eq!(
            [&g[0], &g[1], &g[4]],
            [
                s,
                &m.len().to_string(),
                &unanswered.get(s).copied().unwrap_or(0).to_string()
            ]
        );
        assert!(
            close_or_null(&g[2], percentile(&m, 0.5)) && close_or_null(&g[3], percentile(&m, 0.9)),
            "{g:?}"
        );
    }
    assert!(
        got.iter()
            .map(|g| g[1].parse::<i64>().expect("n"))
            .sum::<i64>()
            > 100
    );

    // first_contact_sla
    let fresh: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT id, responsible_user_id, created_at FROM contacts WHERE created_at >= ?1 AND created_at < ?2",
    )
    .bind(FROM)
    .bind(TO)
    .fetch_all(f.source.pool())
    .await
    .expect("fresh");
    let first_change: BTreeMap<i64, Option<i64>> = sqlx::query_as(
        "SELECT contact_id, old_user_id FROM responsible_log r
         WHERE NOT EXISTS (SELECT 1 FROM responsible_log e WHERE e.contact_id = r.contact_id
                           AND (e.changed_at < r.changed_at OR (e.changed_at = r.changed_at AND e.id < r.id)))",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("first change")
    .into_iter()
    .collect();
    let mut sla: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (c, owner, created) in &fresh {
        let created = ts(created);
        let owner = first_change.get(c).copied().unwrap_or(*owner);
        let hit = outbound_by_client.get(c).is_some_and(|l| {
            l.iter()
                .any(|o| o.at > created && o.at <= created + chrono::Duration::hours(24))
        });
        let e = sla.entry(label(owner)).or_default();
        e.0 += 1;
        e.1 += i64::from(hit);
    }
    let want: Vec<Vec<String>> = sla
        .iter()
        .map(|(o, (n, hit))| vec![o.clone(), n.to_string(), hit.to_string(), ratio(*hit, *n)])
        .collect();
    same_rows(
        "first_contact_sla",
        &f.metric("first_contact_sla", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[3],
    );

    // step_compliance
    let changes: Vec<(i64, i64, Option<i64>, String, Option<i64>)> = sqlx::query_as(
        "SELECT id, lead_id, old_status_id, changed_at, user_id FROM lead_status_log",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("changes");
    let deals: BTreeMap<i64, (Option<i64>, Option<String>)> =
        sqlx::query_as::<_, (i64, Option<i64>, Option<String>)>(
            "SELECT id, contact_id, created_at FROM leads",
        )
        .fetch_all(f.source.pool())
        .await
        .expect("deals")
        .into_iter()
        .map(|(id, c, t)| (id, (c, t)))
        .collect();
    let mut by_deal: BTreeMap<i64, Vec<(chrono::NaiveDateTime, i64, Option<i64>, Option<i64>)>> =
        BTreeMap::new();
    for (id, deal, old, at, by) in changes {
        by_deal
            .entry(deal)
            .or_default()
            .push((ts(&at), id, old, by));
    }
    let mut steps: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (deal, list) in by_deal.iter_mut() {
        list.sort();
        let Some((client, created)) = deals.get(deal) else {
            continue;
        };
        for (i, (at, _, old, by)) in list.iter().enumerate() {
            if old.is_none() || *at < from || *at >= to {
                continue;
            }
            let start = if i > 0 {
                Some(list[i - 1].0)
            } else {
                created.as_deref().map(ts)
            };
            let ok = match (start, client, by) {
                (Some(start), Some(c), Some(by)) => outbound_by_client.get(c).is_some_and(|l| {
                    l.iter()
                        .any(|o| o.staff == Some(*by) && o.at >= start && o.at < *at)
                }),
                _ => false,
            };
            let e = steps.entry(label(*by)).or_default();
            e.0 += 1;
            e.1 += i64::from(ok);
        }
    }
    let want: Vec<Vec<String>> = steps
        .iter()
        .map(|(s, (n, ok))| vec![s.clone(), n.to_string(), ok.to_string(), ratio(*ok, *n)])
        .collect();
    assert!(
        want.iter().any(|r| r[1] != r[2]),
        "some steps are not compliant"
    );
    same_rows(
        "step_compliance",
        &f.metric("step_compliance", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[3],
    );

    // data_discipline (SQLite over the source)
    let want: Vec<Vec<String>> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH m AS (SELECT id FROM users WHERE job_title IN ('manager', 'team_lead')),
              d AS (SELECT responsible_user_id AS u, COUNT(*) AS n,
                           SUM(COALESCE(price_kopecks, 0) > 0 AND expected_close_on IS NOT NULL) AS ok
                    FROM ({LEADS}) WHERE st = 0 GROUP BY u),
              c AS (SELECT responsible_user_id AS u, COUNT(*) AS n,
                           SUM(NULLIF(TRIM(phone), '') IS NOT NULL OR NULLIF(TRIM(email), '') IS NOT NULL) AS ok
                    FROM contacts GROUP BY u),
              k AS (SELECT user_id AS u, COUNT(*) AS n, SUM(NULLIF(TRIM(result), '') IS NOT NULL) AS ok
                    FROM calls WHERE started_at >= ?1 AND started_at < ?2 GROUP BY u)
         SELECT CAST(m.id AS TEXT), d.n, d.ok, c.n, c.ok, k.n, k.ok FROM m
         LEFT JOIN d ON d.u = m.id LEFT JOIN c ON c.u = m.id LEFT JOIN k ON k.u = m.id
         WHERE d.n > 0 OR c.n > 0 OR k.n > 0 ORDER BY CAST(m.id AS TEXT)"
    )))
    .bind(FROM)
    .bind(TO)
    .fetch_all(f.source.pool())
    .await
    .expect("oracle")
    .iter()
    .map(|r| {
        let share = |n: usize| {
            let (den, num): (Option<i64>, Option<i64>) = (r.get(n), r.get(n + 1));
            den.filter(|&d| d > 0).map(|d| num.unwrap_or(0) as f64 / d as f64)
        };
        let shares = [share(1), share(3), share(5)];
        let defined: Vec<f64> = shares.iter().flatten().copied().collect();
        let mut row = vec![text(r, 0)];
        row.extend(shares.iter().map(|s| s.map_or("NULL".into(), |v| v.to_string())));
        row.push((defined.iter().sum::<f64>() / defined.len() as f64).to_string());
        row
    })
    .collect();
    assert!(want.len() >= 3);
    same_rows(
        "data_discipline",
        &f.metric("data_discipline", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[1, 2, 3, 4],
    );

    // handover_impact (SQLite over the source)
    let want: Vec<Vec<String>> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(CAST(r.new_user_id AS TEXT), 'unknown') AS o, r.id, r.contact_id,
                COALESCE(CAST(r.old_user_id AS TEXT), 'unknown'), r.changed_at,
                (SELECT COALESCE(SUM(COALESCE(price_kopecks, 0)), 0) FROM ({LEADS}) l WHERE l.st = 1 AND l.contact_id = r.contact_id
                   AND l.closed_at >= datetime(r.changed_at, '-90 days') AND l.closed_at < r.changed_at),
                (SELECT COALESCE(SUM(COALESCE(price_kopecks, 0)), 0) FROM ({LEADS}) l WHERE l.st = 1 AND l.contact_id = r.contact_id
                   AND l.closed_at >= r.changed_at AND l.closed_at < datetime(r.changed_at, '+90 days')),
                datetime(r.changed_at, '+90 days') <= ?3
         FROM responsible_log r WHERE r.changed_at >= ?1 AND r.changed_at < ?2
         ORDER BY o, r.changed_at, r.id"
    )))
    .bind(FROM)
    .bind(TO)
    .bind(AS_OF)
    .fetch_all(f.source.pool())
    .await
    .expect("oracle")
    .iter()
    .map(|r| {
        vec![
            text(r, 0),
            int(r, 1),
            int(r, 2),
            text(r, 3),
            format!("{}Z", text(r, 4).replace(' ', "T")),
            money(r.get(5)),
            money(r.get(6)),
            (r.get::<i64, _>(7) != 0).to_string(),
        ]
    })
    .collect();
    assert!(
        want.iter().any(|r| r[5] != "0.00" || r[6] != "0.00"),
        "some handovers carry revenue"
    );
    same_rows(
        "handover_impact",
        &f.metric(
            "handover_impact",
            &[("from", FROM), ("to", TO), ("as_of", AS_OF)],
        )
        .await,
        &want,
        &[],
    );
}

async fn check_source_and_forecast(f: &Fixture) {
    // revenue_by_source
    let won: Vec<(Option<i64>, String, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT l.contact_id, l.closed_at, COALESCE(l.price_kopecks, 0), COALESCE(k.lead_source, 'unknown')
         FROM ({LEADS}) l LEFT JOIN contacts k ON k.id = l.contact_id WHERE l.st = 1 AND l.closed_at IS NOT NULL"
    )))
    .fetch_all(f.source.pool())
    .await
    .expect("won");
    let in_period = |t: &str| (FROM..TO).contains(&t);
    // source → (revenue, new clients, spend)
    let mut per: BTreeMap<String, (i64, i64, Option<i64>)> = BTreeMap::new();
    let mut first: BTreeMap<(i64, String), String> = BTreeMap::new();
    for (client, at, amount, source) in &won {
        if in_period(at) {
            per.entry(source.clone()).or_default().0 += amount;
        }
        if let Some(c) = client {
            let e = first
                .entry((*c, source.clone()))
                .or_insert_with(|| at.clone());
            if at < e {
                *e = at.clone();
            }
        }
    }
    for ((_, source), at) in &first {
        if in_period(at) {
            per.entry(source.clone()).or_default().1 += 1;
        }
    }
    let spend: Vec<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT month, channel, spent_kopecks FROM ad_budget")
            .fetch_all(f.source.pool())
            .await
            .expect("spend");
    for (month, source, amount) in spend {
        if in_period(&format!("{month}-01 00:00:00")) {
            let e = per
                .entry(source.unwrap_or_else(|| "unknown".into()))
                .or_default();
            e.2 = Some(e.2.unwrap_or(0) + amount);
        }
    }
    let mut rows: Vec<(i64, String, i64, i64)> = per
        .into_iter()
        .map(|(s, (rev, new, spend))| (rev, s, new, spend.unwrap_or(0)))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let want: Vec<Vec<String>> = rows
        .iter()
        .map(|(rev, s, new, spend)| {
            vec![
                s.clone(),
                money(*rev),
                new.to_string(),
                money(*spend),
                if *new == 0 {
                    "NULL".into()
                } else {
                    money(mean_kopecks(*spend, *new))
                },
                if *spend == 0 {
                    "NULL".into()
                } else {
                    ((rev - spend) as f64 / *spend as f64).to_string()
                },
            ]
        })
        .collect();
    assert!(want.iter().any(|r| r[3] != "0.00") && want.iter().any(|r| r[3] == "0.00"));
    same_rows(
        "revenue_by_source",
        &f.metric("revenue_by_source", &[("from", FROM), ("to", TO)])
            .await,
        &want,
        &[5],
    );
    let err = kartoteka_queries::run_metric(
        &f.session,
        f.catalog.get("revenue_by_source").expect("metric"),
        &[
            ("from".into(), "2024-03-15".into()),
            ("to".into(), "2025-01-01".into()),
        ],
    )
    .await
    .expect_err("from must be a month start");
    assert!(err.to_string().contains("first day of a month"), "{err}");

    // forecast, in plain Rust
    let as_of = ts(AS_OF);
    let year_ago = as_of
        .checked_sub_months(chrono::Months::new(12))
        .expect("year");
    let statuses: BTreeMap<i64, (i64, i64, i64)> = sqlx::query_as::<_, (i64, i64, i64, i64)>(
        "SELECT id, funnel_id, sort, status_type FROM funnel_statuses",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("statuses")
    .into_iter()
    .map(|(id, funnel, sort, kind)| (id, (funnel, sort, kind)))
    .collect();
    let leads: Vec<(i64, i64, i64, Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT id, funnel_id, status_id, closed_at, price_kopecks, expected_close_on FROM leads",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("leads");
    let log: Vec<(i64, i64)> = sqlx::query_as("SELECT lead_id, new_status_id FROM lead_status_log")
        .fetch_all(f.source.pool())
        .await
        .expect("log");
    let mut furthest: BTreeMap<i64, i64> = BTreeMap::new();
    let funnel_of: BTreeMap<i64, i64> = leads.iter().map(|l| (l.0, l.1)).collect();
    for (lead, status) in &log {
        let (funnel, sort, kind) = statuses[status];
        if kind != 2 && funnel_of.get(lead) == Some(&funnel) {
            let e = furthest.entry(*lead).or_insert(sort);
            *e = (*e).max(sort);
        }
    }
    // status id → (reached, won) among deals closed in the year before as_of
    let mut p: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (lead, funnel, status, closed, ..) in &leads {
        let kind = statuses[status].2;
        let Some(closed) = closed.as_deref().map(ts) else {
            continue;
        };
        if kind == 0 || closed < year_ago || closed >= as_of {
            continue;
        }
        let Some(max) = furthest.get(lead) else {
            continue;
        };
        for (id, (sf, sort, sk)) in &statuses {
            if sf == funnel && *sk != 2 && sort <= max {
                let e = p.entry(*id).or_default();
                e.0 += 1;
                e.1 += i64::from(kind == 1);
            }
        }
    }
    // month (None sorts last) → (deals, amount, weighted, unforecast deals, unforecast amount)
    let mut months: BTreeMap<(bool, String), (i64, i64, f64, i64, i64)> = BTreeMap::new();
    for (_, _, status, _, amount, expected) in &leads {
        if statuses[status].2 != 0 {
            continue;
        }
        let key = match expected {
            Some(e) => (false, format!("{}-01", &e[..7])),
            None => (true, "NULL".to_string()),
        };
        let e = months.entry(key).or_default();
        e.0 += 1;
        e.1 += amount.unwrap_or(0);
        match p.get(status).filter(|(reached, _)| *reached > 0) {
            Some((reached, won)) => {
                e.2 += amount.unwrap_or(0) as f64 / 100.0 * (*won as f64 / *reached as f64)
            }
            None => {
                e.3 += 1;
                e.4 += amount.unwrap_or(0);
            }
        }
    }
    let got = f.metric("forecast", &[("as_of", AS_OF)]).await;
    assert_eq!(got.len(), months.len());
    for (g, ((_, month), (n, amount, weighted, un, un_amount))) in got.iter().zip(&months) {
        assert_eq!(
            [&g[0], &g[1], &g[2], &g[4], &g[5]],
            [
                month,
                &n.to_string(),
                &money(*amount),
                &un.to_string(),
                &money(*un_amount)
            ]
        );
        // Double precision, rounded once: equal to the cent up to the last ulp of the sum.
        let w: f64 = g[3].parse().expect("money");
        assert!((w - weighted).abs() <= 0.01, "{g:?} vs {weighted}");
    }
    assert!(months.len() >= 2);
}

/// The scorecard: revenue, win rate, activity and attainment recomputed from the source; response time
/// and step compliance must equal the per-staff metrics already proven above.
async fn check_scorecard(f: &Fixture) {
    let args = [("from", FROM), ("to", TO), ("as_of", AS_OF)];
    let got = f.metric("manager_scorecard", &args).await;
    let managers: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, full_name FROM users WHERE job_title IN ('manager', 'team_lead')
         AND (hired_on IS NULL OR hired_on < substr(?2, 1, 10)) AND (fired_on IS NULL OR fired_on >= substr(?1, 1, 10))
         ORDER BY CAST(id AS TEXT)",
    )
    .bind(FROM)
    .bind(TO)
    .fetch_all(f.source.pool())
    .await
    .expect("managers");
    assert_eq!(
        got.len(),
        managers.len(),
        "one row per manager employed in the period"
    );
    let response = f.metric("response_time", &args).await;
    let steps = f
        .metric("step_compliance", &[("from", FROM), ("to", TO)])
        .await;
    let all = acts(f).await;
    let (from, to) = (ts(FROM), ts(TO));
    for (g, (id, name)) in got.iter().zip(&managers) {
        let r = &f
            .source_rows(&format!(
                "SELECT COALESCE(SUM(CASE WHEN st = 1 THEN COALESCE(price_kopecks, 0) END), 0), SUM(st = 1), SUM(st = 2)
                 FROM ({LEADS}) WHERE st IN (1, 2) AND closed_at >= ?1 AND closed_at < ?2 AND closed_by_user_id = {id}"
            ))
            .await[0];
        let (rev, won, lost): (i64, Option<i64>, Option<i64>) = (r.get(0), r.get(1), r.get(2));
        let (won, lost) = (won.unwrap_or(0), lost.unwrap_or(0));
        let activities = all
            .iter()
            .filter(|a| a.outbound && a.staff == Some(*id) && a.at >= from && a.at < to)
            .count();
        let key = id.to_string();
        let median = response
            .iter()
            .find(|r| r[0] == key)
            .map_or("NULL".to_string(), |r| r[2].clone());
        let compliance = steps
            .iter()
            .find(|r| r[0] == key)
            .map_or("NULL".to_string(), |r| r[3].clone());
        // attainment: revenue in months with a target / the sum of those targets
        let plan: Vec<(String, i64)> =
            sqlx::query_as("SELECT month, plan_kopecks FROM sales_plan WHERE user_id = ?1")
                .bind(id)
                .fetch_all(f.source.pool())
                .await
                .expect("plan");
        let (mut in_months, mut target) = (0i64, 0i64);
        for (month, t) in plan {
            let start = format!("{month}-01 00:00:00");
            if start.as_str() < FROM || start.as_str() >= TO {
                continue;
            }
            target += t;
            let r = &f
                .source_rows(&format!(
                    "SELECT COALESCE(SUM(COALESCE(price_kopecks, 0)), 0) FROM ({LEADS})
                     WHERE st = 1 AND closed_by_user_id = {id} AND substr(closed_at, 1, 7) = '{month}'
                       AND closed_at >= ?1 AND closed_at < ?2"
                ))
                .await[0];
            in_months += r.get::<i64, _>(0);
        }
        let want = [
            key.clone(),
            name.clone(),
            money(rev),
            ratio(won, won + lost),
            activities.to_string(),
            median,
            compliance,
            ratio(in_months, target),
        ];
        for i in [0, 1, 2, 4] {
            assert_eq!(g[i], want[i], "scorecard {key} column {i}");
        }
        for i in [3, 5, 6, 7] {
            assert!(
                (g[i] == "NULL" && want[i] == "NULL")
                    || close(&g[i], want[i].parse().unwrap_or(f64::NAN)),
                "scorecard {key} column {i}: {} vs {}",
                g[i],
                want[i]
            );
        }
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
        check_sales(&f).await;
        check_funnel_and_audience(&f).await;
        check_repeat_and_tasks(&f).await;
        check_time_in_stage(&f).await;
        check_retention(&f).await;
        check_staff_metrics(&f).await;
        check_source_and_forecast(&f).await;
        check_scorecard(&f).await;
    }
}

/// The reporting zone. With Australia/Sydney (UTC+10, +11 in summer; DST changes in April and
/// October), metrics bucket instants by Sydney's calendar and read date parameters as Sydney midnights:
/// checked against plain Rust with chrono-tz over the source's UTC rows. The same metrics in UTC give
/// other answers, so the check discriminates.
#[tokio::test]
async fn calendar_buckets_follow_the_reporting_zone_across_dst() {
    use chrono::TimeZone;
    let f = fixture(0.05, 31).await;
    let zone = chrono_tz::Australia::Sydney;
    let engine = Engine::new(
        f.lake.clone(),
        EngineConfig {
            time_zone: zone,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let sydney = engine
        .session(&Principal::local_owner())
        .await
        .expect("session");
    let run = async |session: &QuerySession, name: &str, args: Vec<(String, String)>| {
        let metric = f.catalog.get(name).expect("metric");
        rows(
            &kartoteka_queries::run_metric(session, metric, &args)
                .await
                .expect(name)
                .batches,
        )
    };
    let args = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        [("from", "2024-01-01"), ("to", "2025-07-01")]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let midnight = |d: &str| {
        zone.from_local_datetime(
            &NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .expect("date")
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        )
        .single()
        .expect("unambiguous")
        .with_timezone(&chrono::Utc)
    };
    let (from, to) = (midnight("2024-01-01"), midnight("2025-07-01"));
    let local = |t: chrono::NaiveDateTime| t.and_utc().with_timezone(&zone);

    // revenue_by_month: won deals by Sydney month of closed_at.
    let deals: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.closed_at, COALESCE(l.price_kopecks, 0) FROM leads l
         JOIN funnel_statuses s ON s.id = l.status_id WHERE s.status_type = 1 AND l.closed_at IS NOT NULL",
    )
    .fetch_all(f.source.pool())
    .await
    .expect("deals");
    let mut months: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (closed, kopecks) in &deals {
        let t = ts(closed);
        if t.and_utc() >= from && t.and_utc() < to {
            let m = local(t).format("%Y-%m-01").to_string();
            let e = months.entry(m).or_default();
            e.0 += kopecks;
            e.1 += 1;
        }
    }
    let want: Vec<Vec<String>> = months
        .into_iter()
        .map(|(m, (sum, n))| vec![m, money(sum), n.to_string()])
        .collect();
    let got = run(&sydney, "revenue_by_month", args(&[])).await;
    assert!(want.len() >= 17, "18 months ({})", want.len());
    assert_eq!(got, want, "revenue_by_month in Sydney");
    assert_ne!(
        run(&f.session, "revenue_by_month", args(&[])).await,
        got,
        "UTC buckets differ"
    );

    // activity_by_manager by Sydney day: outbound messages of each kind, and calls either way.
    let mut days: BTreeMap<(chrono::NaiveDate, bool, Option<i64>), [i64; 4]> = BTreeMap::new();
    for a in acts(&f).await {
        let at = a.at.and_utc();
        if at < from || at >= to || !(a.outbound || a.channel == "call") {
            continue;
        }
        // ORDER BY period, staff_id: NULL staff last within a day.
        let e = days
            .entry((local(a.at).date_naive(), a.staff.is_none(), a.staff))
            .or_default();
        let i = ["call", "email", "messenger", "meeting"]
            .iter()
            .position(|c| *c == a.channel)
            .expect("channel");
        if a.outbound {
            e[i] += 1;
        }
    }
    let want: Vec<Vec<String>> = days
        .into_iter()
        .map(|((day, _, staff), n)| {
            let mut row = vec![
                staff.map_or("NULL".into(), |s| s.to_string()),
                day.to_string(),
            ];
            row.extend(n.iter().map(|v| v.to_string()));
            row
        })
        .collect();
    let got: Vec<Vec<String>> = run(&sydney, "activity_by_manager", args(&[("grain", "day")]))
        .await
        .into_iter()
        .map(|r| {
            let mut row = vec![r[0].clone(), r[2].clone()];
            row.extend(r[3..7].iter().cloned());
            row
        })
        .collect();
    assert!(want.len() > 100, "many staff-days ({})", want.len());
    assert_eq!(got, want, "activity_by_manager by Sydney day");
}

/// Empty periods and empty scopes: every metric answers (no error), and no ratio is infinite or NaN —
/// a zero denominator gives NULL.
#[tokio::test]
async fn empty_periods_and_scopes_give_empty_answers_and_null_ratios() {
    let f = fixture(0.05, 21).await;
    let nobody = Principal {
        user: "manager-without-deals".into(),
        role: kartoteka_engine::Role::Manager,
        staff_id: Some(999_999),
        team: vec![],
        preview_by: None,
    };
    let empty_scope = f.engine.session(&nobody).await.expect("session");
    let empty_period = [
        ("from", "2030-01-01"),
        ("to", "2030-01-01"),
        ("as_of", "2030-01-01"),
    ];
    for metric in f
        .catalog
        .metrics()
        .iter()
        .filter(|m| m.family != kartoteka_queries::Family::Security)
    {
        for (who, session, args) in [
            ("owner, empty period", &f.session, &empty_period[..]),
            ("manager without deals", &empty_scope, &[][..]),
        ] {
            let args: Vec<(String, String)> = args
                .iter()
                .filter(|(k, _)| metric.has_param(k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if !metric.allows(session.principal().role) {
                let err = kartoteka_queries::run_metric(session, metric, &args)
                    .await
                    .expect_err("role not allowed");
                assert!(err.to_string().contains("not available"), "{err}");
                continue;
            }
            let r = kartoteka_queries::run_metric(session, metric, &args)
                .await
                .unwrap_or_else(|e| panic!("{} ({who}): {e}", metric.name));
            for row in rows(&r.batches) {
                for cell in row {
                    assert!(
                        !["inf", "-inf", "NaN"].contains(&cell.as_str()),
                        "{} ({who}) produced {cell}",
                        metric.name
                    );
                }
            }
        }
    }
    // Single-row aggregates over nothing: counts 0, means and ratios NULL.
    let empty = [("from", "2030-01-01"), ("to", "2030-01-01")];
    assert_eq!(
        f.metric("avg_deal_size", &empty).await,
        vec![vec!["0".to_string(), "NULL".into()]]
    );
    assert_eq!(
        f.metric("repeat_rate", &empty).await,
        vec![vec!["0".to_string(), "0".into(), "NULL".into()]]
    );
    assert_eq!(
        f.metric("sales_cycle", &empty).await,
        vec![vec!["0".to_string(), "NULL".into(), "NULL".into()]]
    );
    assert_eq!(
        f.metric("win_rate", &empty).await,
        vec![vec![
            "all".to_string(),
            "0".into(),
            "0".into(),
            "NULL".into()
        ]]
    );
    // A stage nobody reached: its conversion and the next one's are NULL, not an error.
    let funnel = f.metric("funnel_conversion", &empty).await;
    assert!(
        !funnel.is_empty() && funnel.iter().all(|r| r[3] == "0" && r[4] == "NULL"),
        "{funnel:?}"
    );
    // Every open stage still has a row, with zeros.
    let stages = f.metric("time_in_stage", &empty).await;
    assert!(
        !stages.is_empty()
            && stages
                .iter()
                .all(|r| r[3] == "0" && r[4] == "NULL" && r[6] == "0")
    );
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
