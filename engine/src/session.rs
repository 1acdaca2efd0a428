//! Query sessions: a DataFusion `SessionContext` over one pinned snapshot, built for one principal.
//!
//! Every path to the data (CLI, metrics, reports, the future web API) builds its session here, so the
//! principal's role decides everything the session can reach: each table is wrapped in the role's
//! policy ([`crate::policy`]) so row filters and column masks are part of every plan; the session
//! receives only the data keys of the classes the policy shows in the clear (an analyst's session never
//! holds the pii key); per-role limits cap rows, memory and time; and every statement — answered or
//! refused — is written to the audit log.
//!
//! One [`RuntimeEnv`] is shared by all sessions (one memory pool, spilling disabled because DataFusion's
//! spill files are plaintext); each session gets its own encryption-factory registry holding its keys.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;
use datafusion::common::config::{EncryptionFactoryOptions, TableParquetOptions};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::parquet_encryption::{EncryptionFactory, EncryptionFactoryRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::sqlparser::ast::Statement as SqlStatement;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use futures::StreamExt;
use object_store::path::Path;
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::audit::{AUDIT_TABLE, AuditLog, AuditTable, Event, Outcome};
use crate::error::{Error, Result};
use crate::keyring::SessionKeys;
use crate::lake::{Lake, Snapshot};
use crate::limits::CappedPool;
use crate::model::{self, Class};
use crate::policy::{Barrier, ColumnRule, Policy, PolicyTable, Scope};
use crate::store::LAKE_URL;

pub use crate::principal::{Principal, Role};

/// Per-role limits on one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most result rows a statement may return; more is an error, not a silent cut.
    pub max_rows: usize,
    /// Memory one statement may hold (within the engine's shared pool).
    pub memory_bytes: usize,
    /// Wall-clock limit.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

impl Limits {
    /// Defaults: the owner is bounded only by the engine; others get less, managers least.
    pub fn default_for(role: Role, config: &EngineConfig) -> Limits {
        let (rows, mem_share, timeout) = match role {
            Role::Owner => (10_000_000, 1, config.query_timeout),
            Role::Analyst => (
                1_000_000,
                2,
                config.query_timeout.min(Duration::from_secs(120)),
            ),
            Role::TeamLead => (
                200_000,
                4,
                config.query_timeout.min(Duration::from_secs(60)),
            ),
            Role::Manager | Role::Admin => (
                100_000,
                4,
                config.query_timeout.min(Duration::from_secs(60)),
            ),
        };
        Limits {
            max_rows: rows,
            memory_bytes: config.memory_limit_bytes / mem_share,
            timeout,
        }
    }
}

/// Limits and tuning shared by all sessions of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Memory all running queries together may use.
    pub memory_limit_bytes: usize,
    /// Wall-clock limit of one statement.
    pub query_timeout: Duration,
    /// Parallelism of one query.
    pub target_partitions: usize,
    /// Limits per role that differ from [`Limits::default_for`].
    pub role_limits: HashMap<Role, Limits>,
    /// The reporting time zone: which calendar day, week and month an instant belongs to, and what
    /// a date parameter means (its midnight there). Default UTC.
    pub time_zone: chrono_tz::Tz,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_limit_bytes: 2 << 30,
            query_timeout: Duration::from_secs(300),
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            role_limits: HashMap::new(),
            time_zone: chrono_tz::UTC,
        }
    }
}

impl EngineConfig {
    /// The limits of `role`.
    pub fn limits(&self, role: Role) -> Limits {
        self.role_limits
            .get(&role)
            .copied()
            .unwrap_or_else(|| Limits::default_for(role, self))
    }
}

/// Which snapshot a cached thing was made from: its number alone is not enough, since a deliberate
/// restore forgets newer commits and the next commit takes a number again (with a new time and code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SnapshotKey {
    id: u64,
    committed_at: chrono::DateTime<chrono::Utc>,
    mac: Option<String>,
}

impl SnapshotKey {
    fn of(snapshot: &Snapshot) -> SnapshotKey {
        SnapshotKey {
            id: snapshot.id,
            committed_at: snapshot.committed_at,
            mac: snapshot.mac.clone(),
        }
    }
}

/// A resolved scope's cache key: the snapshot and the principal's staff ids.
type ScopeKey = (SnapshotKey, Vec<i64>);

/// The policy-wrapped tables of one role session: everything a session is made of that depends only
/// on the snapshot, the role's policy, the principal's scope and the key set — shared by every session
/// with the same four (a provider keeps no state of its own between statements).
type Tables = Arc<[(&'static str, Arc<dyn TableProvider>)]>;

/// The key [`Tables`] are kept under: snapshot, role, staff scope, ids of the keys held.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TablesKey {
    snapshot: SnapshotKey,
    role: Role,
    staff: Vec<i64>,
    keys: Arc<str>,
}

/// Role sessions' tables kept at most (several per principal and snapshot are unusual: a key set
/// changes only by rotation).
const TABLES_CAPACITY: usize = 256;

/// The query engine over one lake.
pub struct Engine {
    lake: Arc<Lake>,
    runtime: Arc<RuntimeEnv>,
    config: EngineConfig,
    audit: Option<Arc<AuditLog>>,
    /// Resolved scopes per (snapshot, staff ids): a manager's visible clients and deals.
    scopes: std::sync::Mutex<HashMap<ScopeKey, Arc<Scope>>>,
    /// Role sessions' policy-wrapped tables, for the newest snapshot asked for.
    tables: std::sync::Mutex<HashMap<TablesKey, Tables>>,
    /// Decrypted footers kept between statements, per key set.
    footers: Arc<crate::footers::FooterCache>,
    /// File statistics, gathered and read only by sessions that see every table whole (the owner's):
    /// a whole file's statistics never reach a principal who does not see the whole file.
    statistics: Arc<datafusion::execution::cache::cache_manager::FileStatisticsCache>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("lake", &self.lake)
            .field("config", &self.config)
            .finish()
    }
}

const FACTORY_ID: &str = "kartoteka";

impl Engine {
    /// An engine over `lake`.
    pub fn new(lake: Arc<Lake>, config: EngineConfig) -> Result<Engine> {
        // Queries cannot spill (see below), so a fair-share pool would only fail them earlier than
        // needed: first come, first served up to the limit, and errors name the biggest consumers.
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(config.memory_limit_bytes),
            std::num::NonZeroUsize::new(3).expect("3 is not zero"),
        ));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            // DataFusion's spill files are plaintext Arrow IPC: never spill CRM data to disk.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let url = Url::parse(LAKE_URL).expect("LAKE_URL is a valid URL");
        runtime.register_object_store(&url, lake.store().object_store());
        Ok(Engine {
            lake,
            runtime,
            config,
            audit: None,
            scopes: std::sync::Mutex::new(HashMap::new()),
            tables: std::sync::Mutex::new(HashMap::new()),
            footers: Arc::default(),
            statistics: Arc::new(
                datafusion::execution::cache::default_cache::DefaultCache::<
                    datafusion::execution::cache::TableScopedPath,
                    datafusion::execution::cache::cache_manager::CachedFileMetadata,
                >::new(16 << 20)
                .with_name("kartoteka-whole-table-statistics"),
            ),
        })
    }

    /// Record every statement and refusal of this engine's sessions in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Engine {
        self.audit = Some(audit);
        self
    }

    /// The audit log this engine writes, if any.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The lake this engine reads.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// A session for `principal` over the current snapshot, under the principal's role policy.
    pub async fn session(&self, principal: &Principal) -> Result<QuerySession> {
        // `current()` has checked the snapshot's files.
        let snapshot = self.lake.current().await?;
        self.role_session(principal, snapshot).await
    }

    /// A session for `principal` pinned to `snapshot`.
    pub async fn session_at(
        &self,
        principal: &Principal,
        snapshot: Snapshot,
    ) -> Result<QuerySession> {
        // A file the snapshot lists but the disk lacks would read as no rows: refuse instead.
        self.lake.check_files(&snapshot).await?;
        self.role_session(principal, snapshot).await
    }

    /// A session under the principal's role policy, the barrier on.
    async fn role_session(
        &self,
        principal: &Principal,
        snapshot: Snapshot,
    ) -> Result<QuerySession> {
        self.session_under(
            principal,
            snapshot,
            &Policy::for_role(principal.role),
            Barrier::On,
        )
        .await
    }

    /// A session under an explicit policy, for the security suite's mutation tests (weakened policies,
    /// a leaking barrier) — only in builds with the `bypass-for-tests` feature, which the product never
    /// enables (CI checks the `kartoteka` binary without it).
    #[cfg(feature = "bypass-for-tests")]
    pub async fn session_with_policy(
        &self,
        principal: &Principal,
        snapshot: Snapshot,
        policy: &Policy,
        barrier: Barrier,
    ) -> Result<QuerySession> {
        self.session_under(principal, snapshot, policy, barrier)
            .await
    }

    /// A session under an explicit policy: the one function every path goes through; the public
    /// entry points pass the role's built-in policy and the barrier on.
    async fn session_under(
        &self,
        principal: &Principal,
        snapshot: Snapshot,
        policy: &Policy,
        barrier: Barrier,
    ) -> Result<QuerySession> {
        let refused = |reason: String| -> Result<QuerySession> {
            self.record(
                principal,
                crate::audit::action::SESSION,
                "lake",
                serde_json::json!({ "role": principal.role.as_str(), "reason": &reason }),
                Outcome::Denied,
            )?;
            Err(Error::Denied(reason))
        };
        if model::tables()
            .iter()
            .all(|t| policy.table(t.name).is_none())
        {
            return refused(format!(
                "user {} has the {} role, which reads no CRM data",
                principal.user,
                principal.role.as_str()
            ));
        }
        let scope = if policy.needs_scope() {
            self.scope(principal, &snapshot).await?
        } else {
            Arc::new(Scope::default())
        };
        // Keys only for the classes some table shows in the clear (visible, or visible where a
        // condition holds): a masked class is read from its internal-class tokens.
        let mut classes = vec![Class::Internal];
        for t in model::tables() {
            if let Some(p) = policy.table(t.name) {
                for (class, rule) in &p.columns {
                    if matches!(rule, ColumnRule::Visible | ColumnRule::VisibleIf(_))
                        && !classes.contains(class)
                    {
                        classes.push(*class);
                    }
                }
            }
        }
        let keys = self.lake.keyring().read().await.session_keys(&classes);
        let key_ids = keys.ids();
        let footer_keys: Arc<str> = Arc::from(key_ids.join(",").as_str());
        let limits = self.config.limits(principal.role);
        // File statistics only for a principal who sees every table whole: for anyone else a row
        // count or a min/max from a footer would describe rows and values they may not see.
        let whole_lake = model::tables()
            .iter()
            .all(|t| policy.table(t.name).is_some_and(|p| p.shows_whole(t)));
        let ctx = self.context(keys, Some(limits.memory_bytes), whole_lake);
        let tables = self.policy_tables(
            principal,
            &snapshot,
            (policy, barrier, &scope),
            &classes,
            footer_keys,
            whole_lake,
        )?;
        for (name, table) in tables.iter() {
            ctx.register_table(*name, Arc::clone(table))?;
        }
        if let Some(audit) = &self.audit {
            let own = match principal.role {
                Role::Owner => Some(None),
                Role::Manager | Role::TeamLead => Some(Some(principal.user.clone())),
                Role::Analyst | Role::Admin => None,
            };
            if let Some(actor) = own {
                ctx.register_table(
                    AUDIT_TABLE,
                    Arc::new(AuditTable::new(Arc::clone(audit), actor)),
                )?;
            }
        }
        Ok(QuerySession {
            ctx,
            snapshot: Arc::new(snapshot),
            principal: principal.clone(),
            limits,
            audit: self.audit.clone(),
            key_ids,
            time_zone: self.config.time_zone,
        })
    }

    /// The tables of a session under `policy` for `principal`, wrapped in it: kept for the next
    /// session of a principal with the same role, staff scope and key set over the same snapshot
    /// when the policy is the role's own and the barrier on (a weakened policy of the security
    /// suite's mutation tests is never kept, nor served from what was kept).
    fn policy_tables(
        &self,
        principal: &Principal,
        snapshot: &Snapshot,
        (policy, barrier, scope): (&Policy, Barrier, &Scope),
        classes: &[Class],
        footer_keys: Arc<str>,
        whole_lake: bool,
    ) -> Result<Tables> {
        let lock = || self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let key =
            (barrier == Barrier::On && *policy == Policy::for_role(principal.role)).then(|| {
                TablesKey {
                    snapshot: SnapshotKey::of(snapshot),
                    role: principal.role,
                    staff: scope.staff.clone(),
                    keys: Arc::clone(&footer_keys),
                }
            });
        if let Some(key) = &key
            && let Some(tables) = lock().get(key)
        {
            return Ok(Arc::clone(tables));
        }
        let statistics = whole_lake.then_some(&self.statistics);
        let mut wrapped: Vec<(&'static str, Arc<dyn TableProvider>)> = Vec::new();
        for table in model::tables() {
            let Some(table_policy) = policy.table(table.name) else {
                continue;
            };
            let raw = raw_provider(table, snapshot, classes, statistics, Read::Session)?;
            let provider = PolicyTable::new(table, raw, table_policy, scope, barrier)?
                .with_footers(Arc::clone(&self.footers), Arc::clone(&footer_keys));
            wrapped.push((table.name, Arc::new(provider)));
        }
        let tables: Tables = wrapped.into();
        if let Some(key) = key {
            let mut cache = lock();
            cache.retain(|k, _| k.snapshot == key.snapshot);
            if cache.len() >= TABLES_CAPACITY {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&tables));
        }
        Ok(tables)
    }

    /// A session without any policy wrapper, holding every key: only for measuring what the wrapper
    /// costs (`kartoteka-bench`), in builds with the `bypass-for-tests` feature. It is not audited.
    #[cfg(feature = "bypass-for-tests")]
    pub async fn unwrapped_session_for_benchmarks(&self) -> Result<QuerySession> {
        let snapshot = self.lake.current().await?;
        let classes = [Class::Internal, Class::Pii];
        let ctx = self
            .raw_context_reading(&snapshot, &classes, Read::Session)
            .await?;
        let key_ids = self
            .lake
            .keyring()
            .read()
            .await
            .session_keys(&classes)
            .ids();
        Ok(QuerySession {
            ctx,
            snapshot: Arc::new(snapshot),
            principal: Principal::local_owner(),
            limits: self.config.limits(Role::Owner),
            audit: None,
            key_ids,
            time_zone: self.config.time_zone,
        })
    }

    /// A DataFusion context over the shared runtime with its own key registry and, optionally, its
    /// own memory cap inside the shared pool.
    fn context(
        &self,
        keys: Arc<SessionKeys>,
        memory_cap: Option<usize>,
        statistics: bool,
    ) -> SessionContext {
        let registry = EncryptionFactoryRegistry::default();
        registry.register_factory(FACTORY_ID, Arc::new(SessionDecryption { keys }));
        let memory_pool = match memory_cap {
            Some(cap) => Arc::new(CappedPool::new(Arc::clone(&self.runtime.memory_pool), cap))
                as Arc<dyn MemoryPool>,
            None => Arc::clone(&self.runtime.memory_pool),
        };
        let runtime = Arc::new(RuntimeEnv {
            memory_pool,
            disk_manager: Arc::clone(&self.runtime.disk_manager),
            cache_manager: Arc::clone(&self.runtime.cache_manager),
            object_store_registry: Arc::clone(&self.runtime.object_store_registry),
            parquet_encryption_factory_registry: Arc::new(registry),
        });
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions)
            .with_default_catalog_and_schema("kartoteka", "crm");
        // Statistics gathered from file footers could answer COUNT(*) past row filters: gathered only
        // for sessions that see every table whole (the barrier hides them for any other table too).
        config.options_mut().execution.collect_statistics = statistics;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_udf(crate::zone::local_udf(self.config.time_zone));
        ctx.register_udf(crate::calendar::date_trunc_udf());
        ctx.register_udf(crate::zone::source_key_udf());
        crate::sized::register(&ctx);
        crate::percentile::register(&ctx);
        ctx
    }

    /// An unrestricted context over the raw stored tables of `snapshot` with the keys of `classes`:
    /// for the engine's own work (scopes, rewrites), never handed to a user.
    pub(crate) async fn raw_context(
        &self,
        snapshot: &Snapshot,
        classes: &[Class],
    ) -> Result<SessionContext> {
        self.raw_context_reading(snapshot, classes, Read::Stored)
            .await
    }

    /// [`Engine::raw_context`] with the stored columns typed as `read` says.
    async fn raw_context_reading(
        &self,
        snapshot: &Snapshot,
        classes: &[Class],
        read: Read,
    ) -> Result<SessionContext> {
        // A file the snapshot lists but the disk lacks would read as no rows: refuse instead.
        self.lake.check_files(snapshot).await?;
        let keys = self.lake.keyring().read().await.session_keys(classes);
        let ctx = self.context(keys, None, false);
        for table in model::tables() {
            let raw = raw_provider(table, snapshot, classes, None, read)?;
            ctx.register_table(table.name, raw)?;
        }
        Ok(ctx)
    }

    /// Staff ids of the members of `team` in `snapshot` (a team lead's scope).
    pub(crate) async fn team_members(&self, snapshot: &Snapshot, team: &str) -> Result<Vec<i64>> {
        let ctx = self.raw_context(snapshot, &[Class::Internal]).await?;
        let batches = ctx
            .table("staff")
            .await?
            .filter(datafusion::prelude::col("team").eq(datafusion::prelude::lit(team)))?
            .select_columns(&["staff_id"])?
            .collect()
            .await?;
        let mut ids = Vec::new();
        for b in &batches {
            if let Some(a) = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
            {
                ids.extend(a.iter().flatten());
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The clients and deals a manager or team lead may see in `snapshot`, cached per snapshot.
    async fn scope(&self, principal: &Principal, snapshot: &Snapshot) -> Result<Arc<Scope>> {
        let staff = principal.staff_scope();
        let key = (SnapshotKey::of(snapshot), staff.clone());
        if let Some(s) = self.scopes.lock().expect("scope cache lock").get(&key) {
            return Ok(Arc::clone(s));
        }
        let ctx = self.raw_context(snapshot, &[Class::Internal]).await?;
        let ids = |table: &'static str, id: &'static str| {
            let ctx = ctx.clone();
            let staff = staff.clone();
            async move {
                if staff.is_empty() {
                    return Ok::<_, Error>(Vec::new());
                }
                let filter = datafusion::prelude::col("owner_id").in_list(
                    staff.iter().map(|&s| datafusion::prelude::lit(s)).collect(),
                    false,
                );
                let batches = ctx
                    .table(table)
                    .await?
                    .filter(filter)?
                    .select_columns(&[id])?
                    .collect()
                    .await?;
                let mut out = Vec::new();
                for b in &batches {
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .ok_or_else(|| Error::SchemaMismatch {
                            table: table.to_string(),
                            detail: format!("{id} is not BIGINT"),
                        })?;
                    out.extend(a.iter().flatten());
                }
                out.sort_unstable();
                out.dedup();
                Ok(out)
            }
        };
        let scope = Arc::new(Scope {
            clients: ids("clients", "client_id").await?,
            deals: ids("deals", "deal_id").await?,
            staff,
        });
        let mut cache = self.scopes.lock().expect("scope cache lock");
        cache.retain(|(made_from, _), _| made_from == &key.0);
        cache.insert(key, Arc::clone(&scope));
        Ok(scope)
    }

    fn record(
        &self,
        principal: &Principal,
        action: &str,
        target: &str,
        details: serde_json::Value,
        outcome: Outcome,
    ) -> Result<()> {
        record(
            self.audit.as_deref(),
            principal,
            action,
            target,
            details,
            outcome,
        )
    }
}

fn record(
    audit: Option<&AuditLog>,
    principal: &Principal,
    action: &str,
    target: &str,
    mut details: serde_json::Value,
    outcome: Outcome,
) -> Result<()> {
    let Some(audit) = audit else { return Ok(()) };
    if principal.preview_by.is_some()
        && let Some(map) = details.as_object_mut()
    {
        map.insert("as".into(), principal.user.clone().into());
    }
    audit.append(Event {
        actor: principal.actor().to_string(),
        action: action.to_string(),
        target: target.to_string(),
        details,
        outcome,
    })?;
    Ok(())
}

/// How a raw provider types the stored columns.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// As stored: for the engine's own work, whose rewrites write what they read.
    Stored,
    /// As user sessions read them ([`model::read_type`]: text as `Utf8View`).
    Session,
}

/// The raw provider of `table` in `snapshot`: its stored columns (tokens included), no policy.
fn raw_provider(
    table: &'static model::Table,
    snapshot: &Snapshot,
    classes: &[Class],
    statistics: Option<&Arc<datafusion::execution::cache::cache_manager::FileStatisticsCache>>,
    read: Read,
) -> Result<Arc<dyn TableProvider>> {
    let schema = match read {
        Read::Stored => table.stored_schema(),
        Read::Session => table.read_schema(),
    };
    let files = snapshot
        .table(table.name)
        .map(|t| t.files.as_slice())
        .unwrap_or(&[]);
    if files.is_empty() {
        return Ok(Arc::new(EmptyTable::new(schema)));
    }
    let mut options = TableParquetOptions::default();
    options.crypto.factory_id = Some(FACTORY_ID.to_string());
    // The page index of every column is read with the footer, and each column's page index is
    // encrypted with that column's key: a session without some class's key must not ask for it
    // (it keeps row-group pruning, which uses statistics of the columns it can decrypt).
    options.global.enable_page_index = table.classes().iter().all(|c| classes.contains(c));
    let format = ParquetFormat::default().with_options(options);
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(format!("{LAKE_URL}{}", f.path)))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(ListingOptions::new(Arc::new(format)).with_file_extension(".parquet"))
        .with_schema(schema);
    let listing: Arc<dyn TableProvider> =
        Arc::new(ListingTable::try_new(config)?.with_cache(statistics.cloned()));
    // Files with delete vectors are read without their deleted rows, by every reader.
    let deleted: HashMap<_, _> = files
        .iter()
        .filter_map(|f| {
            let d = f.deleted.as_ref()?;
            Some((
                Path::from(f.path.as_str()).to_string(),
                (d.clone(), f.rows_written()),
            ))
        })
        .collect();
    if deleted.is_empty() {
        return Ok(listing);
    }
    Ok(Arc::new(crate::deletions::LiveRows::new(listing, deleted)))
}

/// Hands a session's keys to DataFusion's Parquet reader, file by file.
struct SessionDecryption {
    keys: Arc<SessionKeys>,
}

impl fmt::Debug for SessionDecryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionDecryption")
            .field("keys", &self.keys)
            .finish()
    }
}

#[async_trait]
impl EncryptionFactory for SessionDecryption {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        _file_path: &Path,
    ) -> datafusion::error::Result<Option<Arc<FileEncryptionProperties>>> {
        // Sessions are read-only: DML and COPY are refused before planning, so nothing writes here.
        Err(datafusion::error::DataFusionError::Plan(
            "query sessions cannot write to the lake".into(),
        ))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        file_path: &Path,
    ) -> datafusion::error::Result<Option<Arc<FileDecryptionProperties>>> {
        self.keys
            .decryption_properties(file_path.as_ref())
            .map(Some)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// A query session pinned to one snapshot, for one principal.
pub struct QuerySession {
    ctx: SessionContext,
    snapshot: Arc<Snapshot>,
    principal: Principal,
    limits: Limits,
    audit: Option<Arc<AuditLog>>,
    key_ids: Vec<String>,
    time_zone: chrono_tz::Tz,
}

impl fmt::Debug for QuerySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuerySession")
            .field("snapshot", &self.snapshot.id)
            .field("principal", &self.principal)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The answer to one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
    /// The snapshot the answer was computed from ("data as of").
    pub snapshot_id: u64,
    /// When that snapshot was committed.
    pub snapshot_time: chrono::DateTime<chrono::Utc>,
    /// Wall-clock time of the statement.
    pub elapsed: Duration,
}

impl QueryResult {
    /// Number of result rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Bytes of the result in memory.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.get_array_memory_size()).sum()
    }

    /// Column `name` as text, row by row (NULL as `None`); empty when there is no such column.
    pub fn text_column(&self, name: &str) -> Vec<Option<String>> {
        use arrow::array::AsArray;
        let mut out = Vec::new();
        let Ok(i) = self.schema.index_of(name) else {
            return out;
        };
        for batch in &self.batches {
            if let Ok(text) =
                arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
            {
                let text = text.as_string::<i32>();
                out.extend(text.iter().map(|v| v.map(str::to_string)));
            }
        }
        out
    }

    /// Column `name` as numbers, row by row (NULL, or a value that is no number, as `None`); empty
    /// when there is no such column.
    pub fn f64_column(&self, name: &str) -> Vec<Option<f64>> {
        use arrow::array::AsArray;
        let mut out = Vec::new();
        let Ok(i) = self.schema.index_of(name) else {
            return out;
        };
        for batch in &self.batches {
            if let Ok(v) =
                arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Float64)
            {
                let v = v.as_primitive::<arrow::datatypes::Float64Type>();
                out.extend(v.iter());
            }
        }
        out
    }
}

/// Refuse anything but a single read-only query, naming what was refused.
pub fn check_read_only(sql: &str) -> Result<()> {
    parse_query(sql).map(|_| ())
}

/// Parse one read-only statement; `Ok(true)` when it is `EXPLAIN ANALYZE`.
fn parse_query(sql: &str) -> Result<bool> {
    check_size(sql)?;
    let statements = DFParser::parse_sql(sql).map_err(Error::DataFusion)?;
    if statements.len() != 1 {
        return Err(Error::NotAQuery(format!(
            "expected exactly one statement, got {}",
            statements.len()
        )));
    }
    let refuse = |what: String| Err(Error::NotAQuery(format!("{what} is refused")));
    match &statements[0] {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) => Ok(false),
            SqlStatement::Explain {
                statement, analyze, ..
            } if matches!(statement.as_ref(), SqlStatement::Query(_)) => Ok(*analyze),
            other => refuse(statement_kind(&other.to_string())),
        },
        DfStatement::Explain(e) if matches!(e.statement.as_ref(), DfStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_))) => {
            Ok(e.options.analyze)
        }
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE".into()),
        DfStatement::CopyTo(_) => refuse("COPY".into()),
        DfStatement::Reset(_) => refuse("RESET".into()),
        DfStatement::Explain(_) => refuse("EXPLAIN of a non-query".into()),
    }
}

/// Most operators (arithmetic, comparisons, AND/OR/NOT, `||`, CASE) one statement may hold. Each is
/// a level of an expression tree that the planner and the executor walk recursively: a generated
/// `a = 1 OR a = 2 OR …` of thousands of terms overflows a thread's stack, which aborts the whole
/// process (every user and job of a server). Measured on a 2 MiB tokio worker (debug build): 600
/// chained `+` plan and run, 1 000 overflow. The catalog's largest metric has 74.
pub const MAX_OPERATORS: usize = 500;
/// Deepest nesting of parentheses.
pub const MAX_NESTING: usize = 64;

/// Refuse statements too large or too deep to plan safely, before they are parsed, with the way out.
fn check_size(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| Error::NotAQuery(format!("the statement cannot be read: {e}")))?;
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    for t in &tokens {
        match t {
            Token::LParen => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::StringConcat => operators += 1,
            Token::Word(w)
                if matches!(
                    w.keyword,
                    Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::CASE
                ) =>
            {
                operators += 1
            }
            _ => {}
        }
    }
    if operators > MAX_OPERATORS {
        return Err(Error::LimitExceeded(format!(
            "the statement has {operators} operators, more than the {MAX_OPERATORS} one statement may \
             hold; write long lists of alternatives as `column IN (…)` and long sums with SUM()"
        )));
    }
    if deepest > MAX_NESTING {
        return Err(Error::LimitExceeded(format!(
            "the statement nests parentheses {deepest} deep, more than {MAX_NESTING}; flatten it \
             (CTEs with WITH help)"
        )));
    }
    Ok(())
}

/// Tell failed authentication of encrypted data apart from other execution errors: the parquet crate
/// reports a failed AES-GCM tag as `ring::error::Unspecified`, deep inside an Arrow/Parquet error.
fn classify(e: Error) -> Error {
    let text = e.to_string();
    if text.contains("ring::error::unspecified") || text.contains("ring::error::Unspecified") {
        Error::Integrity(text)
    } else if let Error::DataFusion(df) = &e
        && crate::sized::is_refusal(df)
    {
        // Refused while planning (constant folding evaluates literal calls).
        Error::LimitExceeded(redact_values(&text))
    } else {
        e
    }
}

/// An execution error as a non-owner may see it: quoted values (DataFusion quotes the offending
/// value in cast and parse errors) replaced by `'…'`.
fn redact_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for ch in text.chars() {
        if ch == '\'' {
            if inside {
                out.push_str("…'");
            } else {
                out.push('\'');
            }
            inside = !inside;
        } else if !inside {
            out.push(ch);
        }
    }
    if inside {
        out.push('…');
    }
    out
}

fn statement_kind(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

impl QuerySession {
    /// `EXPLAIN ANALYZE` of `sql` in this session, whatever the role — only in builds with the
    /// `bypass-for-tests` feature: a manager's plan shows row counts before the policy filter, which is
    /// why the product refuses it to anyone but the owner (`kartoteka-bench` prints it to stderr).
    #[cfg(feature = "bypass-for-tests")]
    pub async fn explain_analyze_for_benchmarks(&self, sql: &str) -> Result<String> {
        let batches = self
            .ctx
            .sql(&format!("EXPLAIN ANALYZE {sql}"))
            .await?
            .collect()
            .await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    /// The reporting time zone (`local(ts)` in SQL; what date parameters mean).
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.time_zone
    }

    /// The snapshot this session reads.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The principal this session serves.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Ids of the data keys this session holds (never the keys themselves).
    pub fn key_ids(&self) -> &[String] {
        &self.key_ids
    }

    /// The limits this session's statements run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Define a named view over this session's (policy-wrapped) tables, once per session. Views are
    /// the catalog's shared derivations; the policy applies below them exactly as for any query.
    pub async fn register_view(&self, name: &str, sql: &str) -> Result<()> {
        if self.ctx.table_exist(name)? {
            return Ok(());
        }
        check_read_only(sql)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let view = self.ctx.sql_with_options(sql, options).await?.into_view();
        self.ctx.register_table(name, view)?;
        Ok(())
    }

    /// What `sql` would read that the snapshot's mapping does not provide: `table` for an unmapped
    /// table, `table.column` for a column the mapping query does not return. Found in the optimized
    /// logical plan (views inlined, projections pushed down), so only what the answer depends on
    /// counts. Empty when everything read is mapped.
    pub async fn unmapped_reads(
        &self,
        sql: &str,
        params: &HashMap<String, ScalarValue>,
    ) -> Result<Vec<String>> {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::logical_expr::LogicalPlan;
        let facts = &self.snapshot.mapping;
        if facts.unmapped_tables.is_empty() && facts.unmapped_columns.is_empty() {
            return Ok(Vec::new());
        }
        parse_query(sql)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let mut df = self.ctx.sql_with_options(sql, options).await?;
        if !params.is_empty() {
            df = df.with_param_values(ParamValues::Map(
                params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
            ))?;
        }
        let plan = df.into_optimized_plan()?;
        let mut found = std::collections::BTreeSet::new();
        fn visit(
            plan: &LogicalPlan,
            facts: &crate::lake::MappingFacts,
            found: &mut std::collections::BTreeSet<String>,
        ) -> datafusion::error::Result<()> {
            plan.apply(|node| {
                if let LogicalPlan::TableScan(scan) = node {
                    let table = scan.table_name.table();
                    if facts.is_unmapped(table, None) {
                        found.insert(table.to_string());
                    }
                    let schema = scan.source.schema();
                    let read: Vec<usize> = match &scan.projection {
                        Some(p) => p.clone(),
                        None => (0..schema.fields().len()).collect(),
                    };
                    for i in read {
                        let name = schema.field(i).name();
                        if facts.is_unmapped(table, Some(name)) && !facts.is_unmapped(table, None) {
                            found.insert(format!("{table}.{name}"));
                        }
                    }
                }
                // A subquery left in the plan is a plan of its own.
                node.apply_subqueries(|sub| {
                    visit(sub, facts, found)?;
                    Ok(TreeNodeRecursion::Continue)
                })?;
                Ok(TreeNodeRecursion::Continue)
            })
            .map(|_| ())
        }
        visit(&plan, facts, &mut found)?;
        Ok(found.into_iter().collect())
    }

    /// Run one read-only statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.sql_with_params(sql, HashMap::new()).await
    }

    /// Run one read-only statement with named parameters (`$name`), bound as typed values — never
    /// spliced into the text. The statement and its outcome are written to the audit log.
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<QueryResult> {
        let start = Instant::now();
        let param_text: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let outcome = self.run(sql, params).await;
        let mut details = serde_json::json!({
            "sql": sql,
            "role": self.principal.role.as_str(),
            "snapshot": self.snapshot.id,
            "duration_ms": start.elapsed().as_millis() as u64,
        });
        if !param_text.is_empty() {
            details["params"] = serde_json::to_value(&param_text).unwrap_or_default();
        }
        let verdict = match &outcome {
            Ok(r) => {
                details["rows"] = (r.rows() as u64).into();
                details["bytes"] = (r.bytes() as u64).into();
                Outcome::Ok
            }
            Err(e) => {
                // The log outlives the answer and is read by others: no row values in it, whoever
                // asked (cast and parse errors quote the offending value).
                details["error"] = redact_values(&e.to_string()).into();
                match e {
                    Error::Denied(_) | Error::NotAQuery(_) | Error::LimitExceeded(_) => {
                        Outcome::Denied
                    }
                    _ => Outcome::Error,
                }
            }
        };
        record(
            self.audit.as_deref(),
            &self.principal,
            crate::audit::action::QUERY,
            "lake",
            details,
            verdict,
        )?;
        outcome
    }

    async fn run(&self, sql: &str, params: HashMap<String, ScalarValue>) -> Result<QueryResult> {
        let start = Instant::now();
        let owner = self.principal.role == Role::Owner;
        if parse_query(sql)? && !owner {
            // EXPLAIN ANALYZE shows how many rows each operator saw, before the policy filter too.
            return Err(Error::Denied(
                "EXPLAIN ANALYZE is for the owner only".into(),
            ));
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let ctx = self.ctx.clone();
        let sql = sql.to_string();
        let max_rows = self.limits.max_rows;
        let role = self.principal.role;
        let limit = self.limits.timeout;
        let deadline = start + limit;
        let run = async move {
            let mut df = ctx.sql_with_options(&sql, options).await?;
            if !params.is_empty() {
                df = df.with_param_values(ParamValues::Map(
                    params.into_iter().map(|(k, v)| (k, v.into())).collect(),
                ))?;
            }
            let schema = plain_text_schema(df.schema().as_arrow());
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await?;
            // Every operator stops at its next batch once the time is up, whatever it is doing.
            let plan = crate::deadline::with_deadline(plan, deadline, limit)?;
            let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| {
                    if crate::deadline::is_timeout(&e) {
                        Error::Timeout {
                            seconds: limit.as_secs(),
                        }
                    } else if crate::sized::is_refusal(&e) {
                        Error::LimitExceeded(redact_values(&e.to_string()))
                    } else if owner {
                        Error::DataFusion(e)
                    } else {
                        classify_text(Error::DataFusion(e), redact_values)
                    }
                })?;
                let batch = plain_text(batch)?;
                rows += batch.num_rows();
                if rows > max_rows {
                    return Err(Error::LimitExceeded(format!(
                        "the result has more than {max_rows} rows, the most the {} role may receive in one answer; aggregate, filter or add LIMIT",
                        role.as_str()
                    )));
                }
                batches.push(batch);
            }
            Ok::<_, Error>((schema, batches))
        };
        // The query runs as its own task so the caller's timer fires on time even while an operator
        // is busy inside one poll; on timeout the task is aborted and stops at its next yield point.
        let mut task = tokio::spawn(run);
        let outcome = match tokio::time::timeout(self.limits.timeout, &mut task).await {
            Ok(joined) => joined.map_err(|e| {
                Error::DataFusion(datafusion::error::DataFusionError::Execution(format!(
                    "query task failed: {e}"
                )))
            })?,
            Err(_) => {
                task.abort();
                return Err(Error::Timeout {
                    seconds: self.limits.timeout.as_secs(),
                });
            }
        };
        let (schema, batches) = outcome.map_err(classify)?;
        Ok(QueryResult {
            schema,
            batches,
            snapshot_id: self.snapshot.id,
            snapshot_time: self.snapshot.committed_at,
            elapsed: start.elapsed(),
        })
    }
}

/// `schema` with text as `Utf8`: results leave a session in one text type, whatever the plan read
/// or computed it as (`Utf8View` from the scans and from `CAST(… AS VARCHAR)`).
fn plain_text_schema(schema: &arrow::datatypes::Schema) -> SchemaRef {
    use arrow::datatypes::{DataType, Field};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// `batch` with its text columns as `Utf8` ([`plain_text_schema`]).
fn plain_text(batch: RecordBatch) -> Result<RecordBatch> {
    use arrow::datatypes::DataType;
    let is_text = |t: &DataType| matches!(t, DataType::Utf8View);
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| is_text(f.data_type()))
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            if is_text(c.data_type()) {
                arrow::compute::cast(c, &DataType::Utf8)
            } else {
                Ok(Arc::clone(c))
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::DataFusion(e.into()))?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(plain_text_schema(&batch.schema()), columns, &options)
        .map_err(|e| Error::DataFusion(e.into()))
}

/// An execution error with its text passed through `redact` (integrity failures keep their class).
fn classify_text(e: Error, redact: fn(&str) -> String) -> Error {
    match classify(e) {
        Error::Integrity(t) => Error::Integrity(redact(&t)),
        other => Error::Execution(redact(&other.to_string())),
    }
}
