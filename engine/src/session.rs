//! Query sessions: a DataFusion `SessionContext` over one pinned snapshot, built for one principal.
//!
//! Every path to the data (CLI, metrics, reports, the future web API) builds its session here, so the
//! principal's clearance decides which data keys the session receives: a session not cleared for
//! personal data never holds the pii key, and its reads of pii columns fail to decrypt. Row filters and
//! column masks per role arrive with the access-control step and hang off [`Principal`] here.
//!
//! One [`RuntimeEnv`] is shared by all sessions (one memory pool, spilling disabled because DataFusion's
//! spill files are plaintext); each session gets its own encryption-factory registry holding its keys.

use std::collections::HashMap;
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
use object_store::path::Path;
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::keyring::SessionKeys;
use crate::lake::{Lake, Snapshot};
use crate::model::{self, Class};
use crate::store::LAKE_URL;

/// System roles (not job titles): see shared/design/security.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything, including personal data.
    Owner,
    /// Sees their own clients' rows.
    Manager,
    /// Sees their team's rows.
    TeamLead,
    /// Sees all rows, never personal data.
    Analyst,
    /// Runs the system; reads no CRM data.
    Admin,
}

impl Role {
    /// Parse a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "manager" => Some(Role::Manager),
            "team_lead" => Some(Role::TeamLead),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::TeamLead => "team_lead",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking: the subject of every policy decision and audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Login name.
    pub user: String,
    /// System role.
    pub role: Role,
    /// The CRM staff record this user is, if any.
    pub staff_id: Option<i64>,
    /// Staff ids of the team (team leads).
    pub team: Vec<i64>,
}

impl Principal {
    /// The local owner: whoever holds the lake's passphrase and runs the CLI.
    pub fn local_owner() -> Principal {
        Principal {
            user: "owner".into(),
            role: Role::Owner,
            staff_id: None,
            team: Vec::new(),
        }
    }

    /// Sensitivity classes whose keys this principal's sessions receive.
    pub fn cleared_classes(&self) -> Vec<Class> {
        match self.role {
            Role::Owner | Role::Manager | Role::TeamLead => vec![Class::Internal, Class::Pii],
            Role::Analyst => vec![Class::Internal],
            Role::Admin => vec![],
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_limit_bytes: 2 << 30,
            query_timeout: Duration::from_secs(300),
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// The query engine over one lake.
pub struct Engine {
    lake: Arc<Lake>,
    runtime: Arc<RuntimeEnv>,
    config: EngineConfig,
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
        })
    }

    /// The lake this engine reads.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// A session for `principal` over the current snapshot.
    pub async fn session(&self, principal: &Principal) -> Result<QuerySession> {
        let snapshot = self.lake.current().await?;
        self.session_at(principal, snapshot).await
    }

    /// A session for `principal` pinned to `snapshot`.
    pub async fn session_at(
        &self,
        principal: &Principal,
        snapshot: Snapshot,
    ) -> Result<QuerySession> {
        match principal.role {
            Role::Owner => {}
            Role::Admin => {
                return Err(Error::Denied(format!(
                    "user {} has the admin role, which reads no CRM data",
                    principal.user
                )));
            }
            // Row filters and column masks for these roles come with the access-control step; until then
            // no session is built for them rather than one that shows too much.
            other => {
                return Err(Error::Denied(format!(
                    "role {} has no row and column policy in this version; only the owner may query",
                    other.as_str()
                )));
            }
        }
        let keys = self
            .lake
            .keyring()
            .read()
            .await
            .session_keys(&principal.cleared_classes());
        let registry = EncryptionFactoryRegistry::default();
        registry.register_factory(FACTORY_ID, Arc::new(SessionDecryption { keys }));
        let runtime = Arc::new(RuntimeEnv {
            memory_pool: Arc::clone(&self.runtime.memory_pool),
            disk_manager: Arc::clone(&self.runtime.disk_manager),
            cache_manager: Arc::clone(&self.runtime.cache_manager),
            object_store_registry: Arc::clone(&self.runtime.object_store_registry),
            parquet_encryption_factory_registry: Arc::new(registry),
        });
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions)
            .with_default_catalog_and_schema("kartoteka", "crm");
        // Statistics gathered from file footers could answer COUNT(*) past future row filters.
        config.options_mut().execution.collect_statistics = false;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for table in model::tables() {
            let provider = table_provider(
                table,
                snapshot
                    .table(table.name)
                    .map(|t| t.files.as_slice())
                    .unwrap_or(&[]),
            )?;
            ctx.register_table(table.name, provider)?;
        }
        Ok(QuerySession {
            ctx,
            snapshot: Arc::new(snapshot),
            principal: principal.clone(),
            timeout: self.config.query_timeout,
        })
    }
}

fn table_provider(
    table: &model::Table,
    files: &[crate::lake::DataFile],
) -> Result<Arc<dyn TableProvider>> {
    if files.is_empty() {
        return Ok(Arc::new(EmptyTable::new(table.schema())));
    }
    let mut options = TableParquetOptions::default();
    options.crypto.factory_id = Some(FACTORY_ID.to_string());
    let format = ParquetFormat::default().with_options(options);
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(format!("{LAKE_URL}{}", f.path)))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(ListingOptions::new(Arc::new(format)).with_file_extension(".parquet"))
        .with_schema(table.schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
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
    timeout: Duration,
}

impl fmt::Debug for QuerySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuerySession")
            .field("snapshot", &self.snapshot.id)
            .field("principal", &self.principal)
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
}

/// Refuse anything but a single read-only query, naming what was refused.
pub fn check_read_only(sql: &str) -> Result<()> {
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
            SqlStatement::Query(_) => Ok(()),
            SqlStatement::Explain { statement, .. }
                if matches!(statement.as_ref(), SqlStatement::Query(_)) =>
            {
                Ok(())
            }
            other => refuse(statement_kind(&other.to_string())),
        },
        DfStatement::Explain(e) if matches!(e.statement.as_ref(), DfStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_))) => {
            Ok(())
        }
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE".into()),
        DfStatement::CopyTo(_) => refuse("COPY".into()),
        DfStatement::Reset(_) => refuse("RESET".into()),
        DfStatement::Explain(_) => refuse("EXPLAIN of a non-query".into()),
    }
}

/// Tell failed authentication of encrypted data apart from other execution errors: the parquet crate
/// reports a failed AES-GCM tag as `ring::error::Unspecified`, deep inside an Arrow/Parquet error.
fn classify(e: Error) -> Error {
    let text = e.to_string();
    if text.contains("ring::error::unspecified") || text.contains("ring::error::Unspecified") {
        Error::Integrity(text)
    } else {
        e
    }
}

fn statement_kind(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

impl QuerySession {
    /// The snapshot this session reads.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The principal this session serves.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Run one read-only statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.sql_with_params(sql, HashMap::new()).await
    }

    /// Run one read-only statement with named parameters (`$name`), bound as typed values — never
    /// spliced into the text.
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<QueryResult> {
        check_read_only(sql)?;
        let start = Instant::now();
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let ctx = self.ctx.clone();
        let sql = sql.to_string();
        let run = async move {
            let mut df = ctx.sql_with_options(&sql, options).await?;
            if !params.is_empty() {
                df = df.with_param_values(ParamValues::Map(
                    params.into_iter().map(|(k, v)| (k, v.into())).collect(),
                ))?;
            }
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok::<_, Error>((schema, batches))
        };
        // The query runs as its own task so the caller's timer fires on time even while an operator
        // is busy inside one poll; on timeout the task is aborted and stops at its next yield point.
        let mut task = tokio::spawn(run);
        let outcome = match tokio::time::timeout(self.timeout, &mut task).await {
            Ok(joined) => joined.map_err(|e| {
                Error::DataFusion(datafusion::error::DataFusionError::Execution(format!(
                    "query task failed: {e}"
                )))
            })?,
            Err(_) => {
                task.abort();
                return Err(Error::Timeout {
                    seconds: self.timeout.as_secs(),
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
