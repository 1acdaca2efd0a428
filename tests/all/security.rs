//! Access control, proven differentially: for generated principals and generated queries, the answer
//! under the engine's policy equals the same query over tables pre-filtered — in plain Rust, by an
//! independent reading of security.md's matrix — to that principal's rows. Plus the hostile-SQL
//! corpus, the analyst's masks, the admin's nothing, and mutations that prove the suite bites.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::common::rows;
use arrow::array::{Array, Int64Array, RecordBatch};
use chrono::NaiveDate;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kartoteka_engine::audit::{AuditConfig, AuditLog};
use kartoteka_engine::policy::{Barrier, Policy, RowRule};
use kartoteka_engine::{Engine, EngineConfig, Error, Limits, Principal, Role};
use kartoteka_ingest::demo::{self, DemoConfig};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Columns the differential corpus reads (pii columns are checked by the masking tests instead:
/// the oracle cannot compute tokens without the lake's token secret).
const TABLES: &[(&str, &[&str])] = &[
    ("staff", &["staff_id", "position", "team"]),
    (
        "clients",
        &[
            "client_id",
            "kind",
            "city",
            "source",
            "owner_id",
            "created_at",
            "consent_at",
        ],
    ),
    (
        "deals",
        &[
            "deal_id",
            "client_id",
            "owner_id",
            "stage",
            "status",
            "amount",
            "created_at",
            "closed_at",
        ],
    ),
    (
        "deal_stage_changes",
        &[
            "change_id",
            "deal_id",
            "from_stage",
            "to_stage",
            "changed_at",
            "changed_by",
        ],
    ),
    (
        "interactions",
        &[
            "interaction_id",
            "client_id",
            "deal_id",
            "staff_id",
            "channel",
            "direction",
            "occurred_at",
        ],
    ),
    (
        "tasks",
        &[
            "task_id",
            "staff_id",
            "client_id",
            "deal_id",
            "kind",
            "due_at",
            "completed_at",
        ],
    ),
    (
        "payments",
        &["payment_id", "client_id", "deal_id", "amount", "paid_at"],
    ),
    (
        "ownership_changes",
        &[
            "change_id",
            "client_id",
            "from_staff",
            "to_staff",
            "changed_at",
        ],
    ),
    ("targets", &["month", "staff_id", "revenue_target"]),
    ("marketing_spend", &["month", "source", "amount"]),
    (
        "pipeline_stages",
        &["pipeline", "stage", "position", "kind"],
    ),
];

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    audit: Arc<AuditLog>,
    /// Every table's rows (the corpus columns), read by the owner.
    full: BTreeMap<&'static str, Vec<RecordBatch>>,
    /// staff id → (position, team)
    staff: BTreeMap<i64, (String, Option<String>)>,
}

/// The fixture, built once per test process on a runtime of its own (the engine serves every test's
/// runtime afterwards): a demo CRM at scale 0.08 ingested into an audited lake with small role limits.
fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(build_fixture())
        })
        .join()
        .expect("the fixture builds")
    })
}

async fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crm.sqlite");
    let end = NaiveDate::from_ymd_opt(2025, 7, 1).expect("date");
    demo::generate(
        &db,
        DemoConfig {
            seed: 11,
            scale: 0.08,
            end,
        },
    )
    .await
    .expect("demo generates");
    let (_source, lake) = common::ingest_demo_source(dir.path(), &db).await;
    let audit =
        Arc::new(AuditLog::open(&dir.path().join("audit"), AuditConfig::default()).expect("audit"));
    let mut config = EngineConfig::default();
    // Small limits so the hostile corpus's giants hit them quickly.
    for role in [Role::Manager, Role::TeamLead, Role::Analyst] {
        config.role_limits.insert(
            role,
            Limits {
                max_rows: 50_000,
                memory_bytes: 256 << 20,
                timeout: Duration::from_secs(20),
            },
        );
    }
    let engine = Engine::new(lake, config)
        .expect("engine")
        .with_audit(Arc::clone(&audit));
    let owner = engine
        .session(&Principal::local_owner())
        .await
        .expect("owner");
    let mut full = BTreeMap::new();
    for (t, cols) in TABLES {
        let r = owner
            .sql(&format!("SELECT {} FROM {t}", cols.join(", ")))
            .await
            .expect("owner reads");
        full.insert(*t, r.batches);
    }
    let r = owner
        .sql("SELECT staff_id, position, team FROM staff")
        .await
        .expect("staff");
    let mut staff = BTreeMap::new();
    for row in rows(&r.batches) {
        let team = (row[2] != "NULL").then(|| row[2].clone());
        staff.insert(row[0].parse().expect("id"), (row[1].clone(), team));
    }
    Fixture {
        _dir: dir,
        engine,
        audit,
        full,
        staff,
    }
}

fn principal(role: Role, staff_id: Option<i64>, team: Vec<i64>, user: &str) -> Principal {
    Principal {
        user: user.into(),
        role,
        staff_id,
        team,
        preview_by: None,
    }
}

impl Fixture {
    fn principals(&self) -> Vec<Principal> {
        let mut out = vec![
            Principal::local_owner(),
            principal(Role::Analyst, None, vec![], "analyst"),
        ];
        for (&id, (position, team)) in &self.staff {
            match position.as_str() {
                "manager" => out.push(principal(
                    Role::Manager,
                    Some(id),
                    vec![],
                    &format!("manager-{id}"),
                )),
                "team_lead" => {
                    let members: Vec<i64> = self
                        .staff
                        .iter()
                        .filter(|(_, (_, t))| t.is_some() && t == team)
                        .map(|(&i, _)| i)
                        .collect();
                    out.push(principal(
                        Role::TeamLead,
                        Some(id),
                        members,
                        &format!("lead-{id}"),
                    ));
                }
                _ => {}
            }
        }
        out
    }

    fn column(&self, table: &str, batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
        let i = batch
            .schema()
            .index_of(name)
            .unwrap_or_else(|_| panic!("{table}.{name}"));
        let a = batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("BIGINT");
        (0..a.len())
            .map(|r| (!a.is_null(r)).then(|| a.value(r)))
            .collect()
    }

    /// The tables as `p` may see them, filtered row by row in plain Rust from security.md's matrix.
    fn prefiltered(&self, p: &Principal) -> SessionContext {
        let ctx = SessionContext::new();
        let scoped = matches!(p.role, Role::Manager | Role::TeamLead);
        let mut mine: HashSet<i64> = p.team.iter().copied().collect();
        mine.extend(p.staff_id);
        let ids_where = |table: &str, id: &str| -> HashSet<i64> {
            let mut out = HashSet::new();
            for b in &self.full[table] {
                let ids = self.column(table, b, id);
                let owners = self.column(table, b, "owner_id");
                for (i, o) in ids.iter().zip(owners) {
                    if let (Some(i), Some(o)) = (i, o)
                        && mine.contains(&o)
                    {
                        out.insert(*i);
                    }
                }
            }
            out
        };
        let clients = ids_where("clients", "client_id");
        let deals = ids_where("deals", "deal_id");
        for (t, _) in TABLES {
            let batches: Vec<RecordBatch> = self.full[t]
                .iter()
                .map(|b| {
                    if !scoped {
                        return b.clone();
                    }
                    let col = |n: &str| self.column(t, b, n);
                    let is =
                        |v: &Option<i64>, set: &HashSet<i64>| v.is_some_and(|v| set.contains(&v));
                    let keep: Vec<bool> = match *t {
                        "clients" | "deals" => {
                            col("owner_id").iter().map(|o| is(o, &mine)).collect()
                        }
                        "deal_stage_changes" => {
                            col("deal_id").iter().map(|d| is(d, &deals)).collect()
                        }
                        "interactions" | "tasks" => col("staff_id")
                            .iter()
                            .zip(col("client_id"))
                            .map(|(s, c)| is(s, &mine) || is(&c, &clients))
                            .collect(),
                        "payments" => col("client_id").iter().map(|c| is(c, &clients)).collect(),
                        "ownership_changes" => col("client_id")
                            .iter()
                            .zip(col("from_staff"))
                            .zip(col("to_staff"))
                            .map(|((c, f), to)| is(c, &clients) || is(&f, &mine) || is(&to, &mine))
                            .collect(),
                        "targets" => col("staff_id")
                            .iter()
                            .map(|s| s.is_none() || is(s, &mine))
                            .collect(),
                        _ => vec![true; b.num_rows()],
                    };
                    let mask = arrow::array::BooleanArray::from(keep);
                    arrow::compute::filter_record_batch(b, &mask).expect("filter")
                })
                .collect();
            let schema = batches.first().map(|b| b.schema()).expect("a batch");
            let table = MemTable::try_new(schema, vec![batches]).expect("memtable");
            ctx.register_table(*t, Arc::new(table)).expect("register");
        }
        ctx
    }
}

/// A generated query over the corpus columns: joins, CTEs, UNION, windows, aggregates, COUNT(*).
fn generate_query(rng: &mut rand_chacha::ChaCha8Rng, staff: &[i64]) -> String {
    let s = *staff.choose(rng).expect("staff");
    let amount = rng.random_range(0..300_000);
    let day = format!("2024-{:02}-01", rng.random_range(1..=12));
    let table = TABLES.choose(rng).expect("table").0;
    let n = rng.random_range(0..22);
    match n {
        0 => format!("SELECT COUNT(*) FROM {table}"),
        1 => format!("SELECT COUNT(*) AS n FROM {table} t WHERE 1 = 1 HAVING COUNT(*) >= 0"),
        2 => format!("SELECT owner_id, COUNT(*), MIN(client_id), MAX(client_id) FROM clients WHERE owner_id <> {s} GROUP BY owner_id"),
        3 => format!("SELECT client_id FROM clients WHERE owner_id = {s}"),
        4 => format!("SELECT status, COUNT(*), SUM(amount) FROM deals WHERE amount > {amount} GROUP BY status"),
        5 => "SELECT c.client_id, COUNT(d.deal_id) AS deals FROM clients c LEFT JOIN deals d ON d.client_id = c.client_id GROUP BY c.client_id".into(),
        6 => "SELECT p.payment_id, c.owner_id FROM payments p JOIN clients c ON c.client_id = p.client_id".into(),
        7 => "WITH paid AS (SELECT client_id, SUM(amount) AS s FROM payments GROUP BY client_id) SELECT COUNT(*), SUM(s), MAX(s) FROM paid".into(),
        8 => "SELECT client_id FROM interactions UNION SELECT client_id FROM tasks".into(),
        9 => "SELECT client_id FROM interactions UNION ALL SELECT client_id FROM payments".into(),
        10 => "SELECT deal_id, ROW_NUMBER() OVER (PARTITION BY client_id ORDER BY deal_id) AS rn, COUNT(*) OVER () AS total FROM deals".into(),
        11 => "SELECT COUNT(*) FROM clients WHERE client_id IN (SELECT client_id FROM payments)".into(),
        12 => "SELECT COUNT(*) FROM clients c WHERE NOT EXISTS (SELECT 1 FROM deals d WHERE d.client_id = c.client_id)".into(),
        13 => format!("SELECT channel, COUNT(*) FROM interactions WHERE occurred_at >= TIMESTAMP '{day} 00:00:00' GROUP BY channel"),
        14 => "SELECT (SELECT COUNT(*) FROM deals) AS deals, (SELECT COUNT(*) FROM clients) AS clients, (SELECT COUNT(*) FROM staff) AS staff".into(),
        15 => format!("SELECT staff_id, COUNT(*) FROM tasks WHERE staff_id = {s} OR client_id IN (SELECT client_id FROM clients) GROUP BY staff_id"),
        16 => "SELECT d.deal_id, COUNT(x.change_id) FROM deals d JOIN deal_stage_changes x ON x.deal_id = d.deal_id GROUP BY d.deal_id".into(),
        17 => "SELECT o.change_id, o.from_staff, o.to_staff FROM ownership_changes o".into(),
        18 => "SELECT month, staff_id, revenue_target FROM targets".into(),
        19 => format!("SELECT COUNT(*) FROM (SELECT client_id FROM clients ORDER BY client_id LIMIT {})", rng.random_range(1..50)),
        20 => "WITH a AS (SELECT client_id, MIN(occurred_at) AS f FROM interactions GROUP BY client_id), b AS (SELECT client_id, MIN(paid_at) AS p FROM payments GROUP BY client_id) SELECT COUNT(*) FROM a JOIN b ON a.client_id = b.client_id WHERE b.p >= a.f".into(),
        _ => "SELECT s.team, COUNT(DISTINCT d.client_id) FROM deals d JOIN staff s ON s.staff_id = d.owner_id GROUP BY s.team".into(),
    }
}

fn sorted(mut r: Vec<Vec<String>>) -> Vec<Vec<String>> {
    r.sort();
    r
}

/// Runs `pairs` (principal, query) pairs; returns the mismatches (principal, query).
async fn differential(
    f: &Fixture,
    policy_for: impl Fn(Role) -> Policy,
    barrier: Barrier,
    pairs: usize,
) -> Vec<(String, String)> {
    let principals = f.principals();
    let staff: Vec<i64> = f.staff.keys().copied().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let snapshot = f.engine.lake().current().await.expect("snapshot");
    let mut failures = Vec::new();
    let per = pairs.div_ceil(principals.len());
    for p in &principals {
        let session = f
            .engine
            .session_with_policy(p, snapshot.clone(), &policy_for(p.role), barrier)
            .await
            .expect("session");
        let oracle = f.prefiltered(p);
        for _ in 0..per {
            let sql = generate_query(&mut rng, &staff);
            let got = session
                .sql(&sql)
                .await
                .unwrap_or_else(|e| panic!("{} on {sql}: {e}", p.user));
            let want = oracle
                .sql(&sql)
                .await
                .expect("oracle plans")
                .collect()
                .await
                .expect("oracle runs");
            if sorted(rows(&got.batches)) != sorted(rows(&want)) {
                failures.push((p.user.clone(), sql));
            }
        }
    }
    failures
}

fn pairs() -> usize {
    std::env::var("KARTOTEKA_RLS_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

#[test]
fn the_fixture_has_several_managers_and_a_team_lead() {
    let f = fixture();
    assert!(
        f.principals()
            .iter()
            .filter(|p| p.role == Role::Manager)
            .count()
            >= 2
            && f.principals().iter().any(|p| p.role == Role::TeamLead),
        "the fixture has several managers and a team lead"
    );
}

/// Differential RLS: policy answers equal pre-filtered answers, for every generated pair — and the
/// suite bites: a manager policy that forgets payments' row rule is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_answers_equal_answers_over_pre_filtered_tables() {
    let f = fixture();
    let n = pairs();
    let failures = differential(f, Policy::for_role, Barrier::On, n).await;
    assert!(
        failures.is_empty(),
        "{} of {n} pairs differ, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("differential RLS: {n} principal×query pairs agree");

    let weakened = |role: Role| {
        let p = Policy::for_role(role);
        if role == Role::Manager {
            let mut t = p.table("payments").expect("payments policy").clone();
            t.rows = RowRule::All;
            p.with_table("payments", Some(t))
        } else {
            p
        }
    };
    let caught = differential(f, weakened, Barrier::On, 300).await;
    assert!(
        !caught.is_empty(),
        "removing the payments row rule must make the differential suite fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_never_sees_another_managers_client() {
    manager_isolation(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_expression_runs_below_the_policy_filter() {
    barrier(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_statistics_do_not_leak_totals() {
    statistics_do_not_leak(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_join_filters_cross_the_barrier() {
    dynamic_filters_cross_the_barrier(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicates_that_cannot_fail_reach_the_parquet_reader_and_no_other() {
    safe_predicates_reach_the_reader(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_get_tokens_and_no_pii_key() {
    analyst(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_reads_no_crm_data() {
    admin(fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_statements_are_refused_clearly_and_audited() {
    hostile(fixture()).await;
}

/// A manager never obtains a client row of another manager, whatever the query.
async fn manager_isolation(f: &Fixture) {
    for p in f
        .principals()
        .into_iter()
        .filter(|p| p.role == Role::Manager)
    {
        let me = p.staff_id.expect("staff id");
        let s = f.engine.session(&p).await.expect("session");
        for sql in [
            "SELECT owner_id FROM clients".to_string(),
            format!("SELECT owner_id FROM clients WHERE owner_id <> {me}"),
            "SELECT c.owner_id FROM clients c JOIN deals d ON d.client_id = c.client_id".into(),
            "SELECT owner_id FROM clients UNION ALL SELECT owner_id FROM deals".into(),
            "WITH x AS (SELECT * FROM clients) SELECT owner_id FROM x".into(),
            "SELECT owner_id FROM (SELECT owner_id, ROW_NUMBER() OVER () r FROM deals)".into(),
            "SELECT owner_id FROM kartoteka.crm.clients".into(),
        ] {
            let r = s.sql(&sql).await.expect("runs");
            for row in rows(&r.batches) {
                assert_eq!(
                    row[0],
                    me.to_string(),
                    "{} got another owner's row with {sql}",
                    p.user
                );
            }
        }
    }
}

/// User predicates never run on hidden rows: an error they would raise there does not happen.
async fn barrier(f: &Fixture) {
    let p = f
        .principals()
        .into_iter()
        .find(|p| p.role == Role::Manager)
        .expect("a manager");
    let me = p.staff_id.expect("id");
    let hidden = f.full["clients"]
        .iter()
        .flat_map(|b| {
            let ids = f.column("clients", b, "client_id");
            let owners = f.column("clients", b, "owner_id");
            ids.into_iter()
                .zip(owners)
                .filter(|(_, o)| *o != Some(me))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        })
        .flatten()
        .next()
        .expect("a client of someone else");
    let sql = format!("SELECT COUNT(*) FROM clients WHERE 1 / (client_id - {hidden}) >= 0");
    let snapshot = f.engine.lake().current().await.expect("snapshot");
    let policy = Policy::for_role(Role::Manager);
    let safe = f
        .engine
        .session_with_policy(&p, snapshot.clone(), &policy, Barrier::On)
        .await
        .expect("session");
    safe.sql(&sql)
        .await
        .expect("the failing predicate never sees the hidden row");
    let leaky = f
        .engine
        .session_with_policy(&p, snapshot, &policy, Barrier::LeakForTests)
        .await
        .expect("session");
    let err = leaky
        .sql(&sql)
        .await
        .expect_err("with the barrier broken, the hidden row raises the error");
    assert!(
        err.to_string().to_lowercase().contains("divide by zero"),
        "{err}"
    );
}

/// DataFusion's own dynamic join filters (bounds that cannot fail) do reach the scans below the barrier.
async fn dynamic_filters_cross_the_barrier(f: &Fixture) {
    let owner = f
        .engine
        .session(&Principal::local_owner())
        .await
        .expect("owner");
    let plan = rows(
        &owner
            .sql(
                "EXPLAIN ANALYZE SELECT COUNT(*) FROM interactions i JOIN deals d ON d.deal_id = i.deal_id \
                 WHERE d.status = 'open'",
            )
            .await
            .expect("explain")
            .batches,
    );
    let text: String = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("PolicyBarrierExec") && text.contains("DynamicFilter"),
        "{text}"
    );
}

/// A column compared with a literal reaches the encrypted scan as the Parquet reader's predicate (row
/// groups pruned by statistics), for the owner and under a manager's row rule; an expression that
/// could fail on a hidden row does not.
async fn safe_predicates_reach_the_reader(f: &Fixture) {
    let manager = f
        .principals()
        .into_iter()
        .find(|p| p.role == Role::Manager)
        .expect("a manager");
    for p in [Principal::local_owner(), manager] {
        let s = f.engine.session(&p).await.expect("session");
        let scan_line = async |sql: &str| -> String {
            let plan = s.sql(sql).await.expect("explain").batches;
            rows(&plan)
                .into_iter()
                .map(|r| r.join(" "))
                .flat_map(|r| r.lines().map(str::to_string).collect::<Vec<_>>())
                .find(|l| l.contains("DataSourceExec") && l.contains("interactions"))
                .unwrap_or_else(|| panic!("no scan of interactions in {plan:?}"))
        };
        let safe = scan_line(
            "EXPLAIN SELECT deal_id FROM interactions \
             WHERE occurred_at >= TIMESTAMP '2025-01-01T00:00:00Z' AND channel = 'call'",
        )
        .await;
        assert!(
            safe.contains("pruning_predicate") && safe.contains("occurred_at"),
            "{}: {safe}",
            p.user
        );
        let unsafe_ = scan_line(
            "EXPLAIN SELECT deal_id FROM interactions WHERE 1 / (interaction_id - 42) = 0",
        )
        .await;
        assert!(!unsafe_.contains("- 42"), "{}: {unsafe_}", p.user);
    }
}

/// COUNT(*) is never answered from file statistics past the row filter.
async fn statistics_do_not_leak(f: &Fixture) {
    let p = f
        .principals()
        .into_iter()
        .find(|p| p.role == Role::Manager)
        .expect("a manager");
    let s = f.engine.session(&p).await.expect("session");
    let total: usize = f.full["interactions"].iter().map(|b| b.num_rows()).sum();
    let oracle = f.prefiltered(&p);
    let want = rows(
        &oracle
            .sql("SELECT COUNT(*) FROM interactions")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run"),
    );
    for sql in [
        "SELECT COUNT(*) FROM interactions",
        "SELECT COUNT(1) FROM interactions",
        "SELECT COUNT(*) FROM interactions a CROSS JOIN (SELECT 1) b",
    ] {
        let got = rows(&s.sql(sql).await.expect("count").batches);
        assert_eq!(got, want, "{sql}");
        assert_ne!(
            got[0][0],
            total.to_string(),
            "{sql} answered with the unfiltered total"
        );
        let plan = rows(
            &s.sql(&format!("EXPLAIN {sql}"))
                .await
                .expect("explain")
                .batches,
        );
        assert!(
            plan.iter()
                .any(|r| r.join(" ").contains("PolicyBarrierExec")),
            "{plan:?}"
        );
    }
    // Not even a table they see whole is counted from footers: their sessions gather no statistics.
    for who in [p.clone(), principal(Role::Analyst, None, vec![], "analyst")] {
        let s = f.engine.session(&who).await.expect("session");
        let plan = rows(
            &s.sql("EXPLAIN SELECT COUNT(*) FROM pipeline_stages")
                .await
                .expect("explain")
                .batches,
        );
        assert!(
            plan.iter()
                .any(|r| r.join(" ").contains("PolicyBarrierExec")),
            "{}: {plan:?}",
            who.user
        );
    }
    // The owner sees every table whole: answered from the files' row counts, and exactly.
    let owner = f
        .engine
        .session(&Principal::local_owner())
        .await
        .expect("owner");
    let got = rows(
        &owner
            .sql("SELECT COUNT(*) FROM interactions")
            .await
            .expect("count")
            .batches,
    );
    assert_eq!(got[0][0], total.to_string());
}

async fn analyst(f: &Fixture) {
    let p = principal(Role::Analyst, None, vec![], "analyst");
    let s = f.engine.session(&p).await.expect("session");
    assert!(
        s.key_ids().iter().all(|k| !k.contains(".pii.")),
        "the analyst's session holds no pii key: {:?}",
        s.key_ids()
    );
    let r = s
        .sql("SELECT name, phone, email FROM clients")
        .await
        .expect("masked read");
    let mut seen = 0;
    for row in rows(&r.batches) {
        for v in row {
            assert!(
                v == "NULL" || (v.starts_with("tok_") && v.len() == 24),
                "unmasked pii: {v}"
            );
            seen += 1;
        }
    }
    assert!(seen > 0);
    let r = s
        .sql("SELECT full_name, email FROM staff")
        .await
        .expect("staff masked");
    assert!(
        rows(&r.batches)
            .iter()
            .flatten()
            .all(|v| v == "NULL" || v.starts_with("tok_"))
    );
    // Tokens keep equality: distinct counts and group sizes match the owner's on the raw values.
    let owner = f
        .engine
        .session(&Principal::local_owner())
        .await
        .expect("owner");
    for sql in [
        "SELECT COUNT(DISTINCT email), COUNT(DISTINCT phone), COUNT(email) FROM clients",
        "SELECT n, COUNT(*) FROM (SELECT city, name, COUNT(*) n FROM clients GROUP BY city, name) GROUP BY n",
    ] {
        let a = sorted(rows(&s.sql(sql).await.expect("analyst").batches));
        let o = sorted(rows(&owner.sql(sql).await.expect("owner").batches));
        assert_eq!(a, o, "{sql}");
    }
    // The raw column cannot be forced: no table of the session exposes it, and token columns are
    // not columns of the canonical tables.
    for sql in [
        "SELECT name__tok FROM clients",
        "SELECT * FROM clients WHERE name = 'x' AND name__tok IS NULL",
    ] {
        let err = s.sql(sql).await.expect_err("hidden columns are not there");
        assert!(err.to_string().contains("name__tok"), "{err}");
    }
    let info = rows(
        &s.sql("SELECT table_name, column_name FROM information_schema.columns")
            .await
            .expect("info")
            .batches,
    );
    assert!(
        info.iter().all(|r| !r[1].ends_with("__tok")),
        "token columns are hidden"
    );
    assert!(
        info.iter().all(|r| r[0] != "audit_log"),
        "analysts do not see the audit log"
    );
}

async fn admin(f: &Fixture) {
    let p = principal(Role::Admin, None, vec![], "admin");
    let err = f
        .engine
        .session(&p)
        .await
        .expect_err("admin gets no CRM session");
    assert!(matches!(err, Error::Denied(_)), "{err}");
    let entries = f.audit.entries().expect("entries");
    assert!(entries.iter().any(|e| e.actor == "admin"
        && e.action == "session"
        && e.outcome == kartoteka_engine::audit::Outcome::Denied));
}

async fn hostile(f: &Fixture) {
    let manager = f
        .principals()
        .into_iter()
        .find(|p| p.role == Role::Manager)
        .expect("manager");
    let analyst = principal(Role::Analyst, None, vec![], "analyst");
    let corpus = [
        "CREATE TABLE x AS SELECT 1",
        "DROP TABLE clients",
        "INSERT INTO clients (client_id) VALUES (1)",
        "DELETE FROM clients",
        "UPDATE clients SET name = 'x'",
        "COPY clients TO '/tmp/kartoteka-leak.csv'",
        "COPY (SELECT * FROM clients) TO '/tmp/kartoteka-leak.parquet'",
        "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE VIEW v AS SELECT * FROM clients",
        "SET datafusion.execution.target_partitions = 1",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM parquet_metadata('x.parquet')",
        "SELECT repeat('x', 2000000000)",
        "SELECT lpad('x', 2000000000, 'y')",
        "SELECT repeat(name, CAST(client_id AS INT) * 1000000) FROM clients",
        "EXPLAIN ANALYZE SELECT COUNT(*) FROM clients",
        "SELECT 1; SELECT 2",
        "SELECT a.interaction_id FROM interactions a, interactions b",
        "SELECT * FROM audit_log WHERE actor <> 'nobody' AND 1 = 0 UNION ALL SELECT * FROM kartoteka.crm.audit_logs",
        "SELECT * FROM information_schema.tables t JOIN clients c ON 1 = 1 JOIN deals d ON 1 = 1 JOIN interactions i ON 1 = 1",
    ];
    for p in [&manager, &analyst] {
        let s = f.engine.session(p).await.expect("session");
        for sql in corpus {
            let before = f.audit.entries().expect("entries").len();
            let err = s
                .sql(sql)
                .await
                .expect_err(&format!("{} ran {sql}", p.user));
            let msg = err.to_string();
            eprintln!(
                "{:>10} {sql:<60.60} → {}",
                p.user,
                msg.lines().next().unwrap_or("")
            );
            assert!(
                !msg.is_empty() && msg.len() < 2_000,
                "{sql}: unclear error {msg:?}"
            );
            // Other tests share this audit log: find this statement's entry among the new ones.
            let entries = f.audit.entries().expect("entries");
            let mine: Vec<_> = entries[before..]
                .iter()
                .filter(|e| e.actor == p.user && e.details["sql"] == sql)
                .collect();
            assert_eq!(mine.len(), 1, "{sql} was not audited once");
            assert_ne!(
                mine[0].outcome,
                kartoteka_engine::audit::Outcome::Ok,
                "{sql}"
            );
        }
    }
    assert!(!std::path::Path::new("/tmp/kartoteka-leak.csv").exists());
}
