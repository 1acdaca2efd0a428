//! One ingest run: every mapped table read from the source, streamed into encrypted files, and
//! committed as one snapshot — or nothing at all.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use kartoteka_engine::Engine;
use kartoteka_engine::lake::Erased;
use kartoteka_engine::model::{self, Table};
use kartoteka_engine::reconcile::{
    KeyFingerprint, KeyHasher, KeySet, KeyVersions, has_integer_key, key_columns,
    modular_sums_combined, modular_sums_parts, modular_sums_sql, row_versions,
};
use serde::Serialize;

use crate::batch::BatchBuilder;
use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::source::{Decoder, Rows, SnapshotReader, Source, SourceRow};
use crate::sync::{Cursor, CursorParam, CursorRepr, SyncRead};

/// Rows per record batch handed to the lake writer.
pub const BATCH_ROWS: usize = 32 * 1024;

/// Observer of an ingest run (progress bars in the CLI; nothing in tests).
pub trait Progress: Send + Sync {
    /// A table starts.
    fn table_started(&self, _table: &str) {}
    /// `rows` more rows of the current table were read.
    fn rows(&self, _rows: u64) {}
    /// The current table is done.
    fn table_done(&self, _table: &str, _rows: u64) {}
}

/// A progress observer that shows nothing.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// How a table was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Every row read again; the table's files replaced.
    Full,
    /// Rows changed since the committed cursor read; older versions replaced by key.
    Incremental,
}

/// What one table's load did.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Canonical table.
    pub table: String,
    /// Rows read from the source and written (all of them in a full load; the changed ones, with
    /// the overlap window, in an incremental one).
    pub rows: u64,
    /// Reloaded in full, or read from its cursor.
    pub mode: LoadMode,
    /// Live rows of the table after the run.
    pub live_rows: u64,
    /// Rows of earlier versions dropped: replaced by a newer version, or gone from the source.
    pub rows_dropped: u64,
    /// The cursor the run started from (`None`: a full load).
    pub cursor_before: Option<serde_json::Value>,
    /// The cursor committed with the data.
    pub cursor_after: Option<serde_json::Value>,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Rows whose personal data was refused (no consent recorded) and stored as NULL.
    pub pii_refused: u64,
    /// The fingerprint of the source's key set in the run's source snapshot (`None` when
    /// reconciliation was skipped; `source_keys_from` says how it was taken).
    pub source_keys: Option<KeyFingerprint>,
    /// How the source's key set was fingerprinted (`None` when reconciliation was skipped).
    pub source_keys_from: Option<KeysFrom>,
    /// Seconds spent reading the source's key set.
    pub reconcile_seconds: f64,
}

/// Where the fingerprint of a source's key set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeysFrom {
    /// A full load: the keys of the rows it read (the whole table, in the run's snapshot).
    RowsRead,
    /// The source database's own aggregate over the mapping query (count and power sums).
    SourceAggregate,
    /// Every key read by a key-only query.
    KeysRead,
}

/// Choices of an ingest run.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// Store no personal data of clients without a recorded consent (`clients.consent_at` NULL):
    /// their pii columns — and the pii of rows about them in other tables — are written as NULL.
    pub refuse_pii_without_consent: bool,
    /// Do not read the source's key sets for reconciliation (faster; nothing proves the lake then,
    /// and rows deleted in the source are not found by incremental runs).
    pub skip_reconciliation: bool,
    /// Reload every table in full, whatever cursors the lake holds.
    pub full: bool,
}

/// Clients without consent, learnt from the clients table and applied to the tables after it.
#[derive(Debug, Default)]
struct Consent {
    enabled: bool,
    without: std::collections::HashSet<i64>,
}

impl Consent {
    /// Null the pii of non-consenting clients in `batch`; returns the batch and the rows touched.
    fn apply(&mut self, table: &Table, batch: RecordBatch) -> Result<(RecordBatch, u64)> {
        use arrow::array::{Array, BooleanArray, Int64Array, TimestampMicrosecondArray};
        if !self.enabled || table.pii_columns().next().is_none() {
            return Ok((batch, 0));
        }
        let schema = batch.schema();
        let mask: BooleanArray = if table.name == "clients" {
            let consent = batch
                .column(schema.index_of("consent_at")?)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .expect("clients.consent_at is a timestamp")
                .clone();
            let ids = batch
                .column(schema.index_of("client_id")?)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("clients.client_id is BIGINT")
                .clone();
            (0..batch.num_rows())
                .map(|i| {
                    let refuse = consent.is_null(i);
                    if refuse {
                        self.without.insert(ids.value(i));
                    }
                    Some(refuse)
                })
                .collect()
        } else if let Ok(i) = schema.index_of("client_id") {
            let ids = batch
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("client_id columns are BIGINT");
            ids.iter()
                .map(|id| Some(id.is_some_and(|id| self.without.contains(&id))))
                .collect()
        } else {
            // Personal data not about clients (staff): consent to employment records is not ours.
            return Ok((batch, 0));
        };
        let touched = mask.true_count() as u64;
        if touched == 0 {
            return Ok((batch, 0));
        }
        let mut columns = batch.columns().to_vec();
        for c in table.pii_columns() {
            let i = schema.index_of(c.name)?;
            columns[i] = arrow::compute::nullif(&columns[i], &mask)?;
        }
        Ok((RecordBatch::try_new(schema, columns)?, touched))
    }
}

/// What an ingest run did.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// The snapshot the run committed.
    pub snapshot_id: u64,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Per table read with reconciliation: the source's key set against what was committed
    /// (checked before the commit: a run whose checks fail commits nothing).
    pub checks: Vec<TableCheck>,
    /// What the mapping declared: currency, tables and columns it does not provide.
    pub mapping: kartoteka_engine::MappingFacts,
    /// Seconds spent in all.
    pub seconds: f64,
    /// Of which, reading the lake's key sets back for the checks.
    pub check_seconds: f64,
}

/// How one canonical table is read: for each result column of its mapping query, the canonical
/// column it fills and how its values are decoded.
#[derive(Debug)]
pub(crate) struct TablePlan {
    pub(crate) table: &'static Table,
    pub(crate) index: Vec<usize>,
    pub(crate) decoders: Vec<Decoder>,
    /// Canonical columns the query does not return: stored as NULL, recorded as unmapped.
    pub(crate) absent: Vec<usize>,
}

impl TablePlan {
    /// Push one source row into `builder`: each result column into its canonical column (`seen` is
    /// shown every value on its way), NULL into the columns the query does not return.
    pub(crate) fn push_row<R: SourceRow>(
        &self,
        row: &R,
        builder: &mut BatchBuilder,
        mut seen: impl FnMut(usize, &crate::batch::Value<'_>),
    ) -> Result<()> {
        let query_err = |cause| Error::SourceQuery {
            table: self.table.name.into(),
            cause,
        };
        builder.start_row();
        for (i, (&col, &decoder)) in self.index.iter().zip(&self.decoders).enumerate() {
            let v = row.value(i, decoder).map_err(query_err)?;
            seen(col, &v);
            builder.push(col, v)?;
        }
        for &col in &self.absent {
            builder.push(col, crate::batch::Value::Null)?;
        }
        builder.end_row();
        Ok(())
    }

    /// Names of the columns the query does not return.
    pub(crate) fn absent_names(&self) -> Vec<&'static str> {
        self.absent
            .iter()
            .map(|&i| self.table.columns[i].name)
            .collect()
    }
}

/// Check every mapping query against the source before anything is written: each must return the
/// canonical columns (a nullable one it leaves out is stored as NULL; keys, and `updated_at` of an
/// incremental table, must be there), each of a type Kartoteka can map. Tables the mapping leaves out
/// have no plan.
pub(crate) async fn plan(source: &Source, mapping: &Mapping) -> Result<Vec<TablePlan>> {
    let mut plans = Vec::new();
    for table in model::tables() {
        let Some(spec) = mapping.tables.get(table.name) else {
            continue;
        };
        let query = &spec.query;
        let columns = source
            .describe(query)
            .await
            .map_err(|cause| Error::SourceQuery {
                table: table.name.into(),
                cause,
            })?;
        let mut index = Vec::with_capacity(columns.len());
        let mut decoders = Vec::with_capacity(columns.len());
        let mut unexpected = Vec::new();
        for c in &columns {
            let Some(decoder) = c.decoder else {
                return Err(Error::UnmappableType {
                    table: table.name.into(),
                    column: c.name.clone(),
                    type_name: c.type_name.clone(),
                });
            };
            decoders.push(decoder);
            match table.columns.iter().position(|tc| tc.name == c.name) {
                Some(i) if !index.contains(&i) => index.push(i),
                Some(_) => unexpected.push(format!("{} (twice)", c.name)),
                None => unexpected.push(c.name.clone()),
            }
        }
        let absent: Vec<usize> = (0..table.columns.len())
            .filter(|i| !index.contains(i))
            .collect();
        // Left out, a key or an incremental table's cursor would make the table meaningless.
        let missing: Vec<&str> = absent
            .iter()
            .map(|&i| &table.columns[i])
            .filter(|c| !c.nullable || (spec.incremental && Some(c.name) == table.cursor))
            .map(|c| c.name)
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            let mut detail = Vec::new();
            if !missing.is_empty() {
                detail.push(format!(
                    "the query returns no column {} ({})",
                    missing.join(", "),
                    if spec.incremental && missing.contains(&"updated_at") {
                        "an incremental table follows updated_at; a key may not be left out"
                    } else {
                        "a key may not be left out"
                    }
                ));
            }
            if !unexpected.is_empty() {
                detail.push(format!("unexpected column {}", unexpected.join(", ")));
            }
            return Err(Error::Columns {
                table: table.name.into(),
                detail: format!(
                    "{}; the canonical columns are {}",
                    detail.join("; "),
                    table
                        .columns
                        .iter()
                        .map(|c| c.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        plans.push(TablePlan {
            table,
            index,
            decoders,
            absent,
        });
    }
    Ok(plans)
}

/// The rows of `query` (owner-written mapping SQL, trusted as SQL by design) in the transaction `tx`.
macro_rules! fetch {
    ($tx:expr, $query:expr) => {
        sqlx::query(sqlx::AssertSqlSafe($query.to_string())).fetch(&mut **$tx)
    };
}

/// The rows of a [`SyncRead`] in the transaction `tx`, the cursor bound by the source's own type.
macro_rules! sync_fetch {
    ($tx:expr, $read:expr) => {{
        let q = sqlx::query(sqlx::AssertSqlSafe($read.query.clone()));
        let q = match &$read.param {
            None => q,
            Some(CursorParam::Instant(t)) => q.bind(*t),
            Some(CursorParam::Local(t)) => q.bind(*t),
            Some(CursorParam::Text(t)) => q.bind(t.clone()),
            Some(CursorParam::Epoch(t)) => q.bind(*t),
        };
        q.fetch(&mut **$tx)
    }};
}

/// Load a source into the lake behind `engine`, committed as one snapshot: tables mapped
/// `incremental` whose cursor the lake holds read only what changed since (plus the overlap window)
/// and replace older versions by key; the others — and every table on a first run, or with
/// [`IngestOptions::full`] — are reloaded in full.
pub async fn ingest(
    engine: &Engine,
    source: &Source,
    mapping: &Mapping,
    operation: &str,
    progress: &dyn Progress,
    options: IngestOptions,
) -> Result<IngestReport> {
    let lake = engine.lake();
    let start = Instant::now();
    let plans = plan(source, mapping).await?;
    let mut consent = Consent {
        enabled: options.refuse_pii_without_consent,
        ..Consent::default()
    };
    let outcome = async {
        let mut txn = lake.begin_write().await?;
        let mut reader = source.begin_read().await?;
        let erased = txn.base().erased.clone();
        let mut reports = Vec::new();
        for plan in &plans {
            let table = plan.table;
            let spec = &mapping.tables[table.name];
            let t0 = Instant::now();
            progress.table_started(table.name);
            let base = txn.base().table(table.name).cloned();
            // Consent refusal learns the non-consenting clients from the whole clients table and
            // must re-apply to every stored row about a client whose consent is gone, changed or
            // not: tables with personal data are then reloaded in full.
            let full_only = options.full
                || (options.refuse_pii_without_consent && table.pii_columns().next().is_some());
            let prior = match (&base, spec.incremental && !full_only) {
                (Some(state), true) => Cursor::from_state(state, mapping),
                _ => None,
            };
            if prior.is_some() {
                // An incremental run keeps the table's files: they must all be there.
                lake.check_table_files(txn.base(), table.name).await?;
            }
            let read = SyncRead::new(source, plan, mapping, prior.as_ref());
            let mut writer = txn.table_writer(table.name).await?;
            let mut load = Load {
                plan,
                builder: BatchBuilder::new(table, mapping.conversions()),
                progress,
                consent: &mut consent,
                refused: 0,
                changed: match prior {
                    Some(_) => Some(KeyVersions::new(table)?),
                    None => None,
                },
                // A full load's rows are the source's whole key set in the run's snapshot: their
                // keys are fingerprinted as they pass, not read a second time.
                keys_read: match (&prior, options.skip_reconciliation) {
                    (None, false) => Some(KeyHasher::new(table)?),
                    _ => None,
                },
                max_cursor: None,
                cursor_repr: None,
                erased: &erased,
            };
            match &mut reader {
                SnapshotReader::Sqlite(tx) => {
                    load.drain(sync_fetch!(tx, read), &mut writer).await?
                }
                SnapshotReader::Postgres(tx) => {
                    load.drain(sync_fetch!(tx, read), &mut writer).await?
                }
                SnapshotReader::MySql(tx) => load.drain(sync_fetch!(tx, read), &mut writer).await?,
            }
            let pii_refused = load.refused;
            let new_files = writer.finish().await?;
            let rows: u64 = new_files.iter().map(|f| f.rows).sum();
            let t1 = Instant::now();
            // The source's key set, in the same source snapshot: its fingerprint for reconciliation
            // (a full load's from the rows as read; an incremental one's from the source itself).
            let keys = KeyRead::new(source, plan, mapping, &erased)?;
            let (source_keys, source_keys_from) =
                match (options.skip_reconciliation, load.keys_read.take()) {
                    (true, _) => (None, None),
                    (false, Some(hasher)) => (Some(hasher.finish()), Some(KeysFrom::RowsRead)),
                    (false, None) => {
                        let (fingerprint, from) = keys.fingerprint(&mut reader).await?;
                        (Some(fingerprint), Some(from))
                    }
                };
            let t2 = Instant::now();
            let (files, rows_dropped) = match (&prior, &base) {
                (Some(_), Some(state)) => {
                    // Older versions of the rows just read go. A row read again unchanged (its
                    // stored updated_at is the one just read: the overlap window) stays where it is
                    // and its new copy goes instead, so a few re-read rows never rewrite a big file.
                    let read = load
                        .changed
                        .as_ref()
                        .expect("an incremental load keeps the keys it reads");
                    let (mut kept, mut dropped, unchanged) = engine
                        .files_without_older_versions(&txn, table.name, &state.files, read)
                        .await?;
                    if unchanged.is_empty() {
                        kept.extend(new_files.iter().cloned());
                    } else {
                        let (fresh, _) = engine
                            .files_without_keys(
                                &txn,
                                table.name,
                                &new_files,
                                Some(&unchanged),
                                None,
                            )
                            .await?;
                        kept.extend(fresh);
                    }
                    // Rows deleted in the source: only when the counts say some are (every insert is
                    // read, so equal counts mean none; the checksum after the commit proves it), the
                    // source's keys are read again into a set and the lake's rows without one go.
                    let live: u64 = kept.iter().map(|f| f.rows).sum();
                    if let Some(fp) = source_keys
                        && fp.rows != live
                    {
                        let (_, set) = match &mut reader {
                            SnapshotReader::Sqlite(tx) => {
                                keys.read(fetch!(tx, keys.query), true).await?
                            }
                            SnapshotReader::Postgres(tx) => {
                                keys.read(fetch!(tx, keys.query), true).await?
                            }
                            SnapshotReader::MySql(tx) => {
                                keys.read(fetch!(tx, keys.query), true).await?
                            }
                        };
                        let (files, gone) = engine
                            .files_without_keys(&txn, table.name, &kept, None, set.as_ref())
                            .await?;
                        kept = files;
                        dropped += gone;
                    }
                    (kept, dropped)
                }
                _ => (new_files.clone(), 0),
            };
            let cursor_after = spec.incremental.then(|| {
                let before = prior.as_ref().and_then(|p| p.micros);
                let micros = match (before, load.max_cursor) {
                    (Some(p), Some(m)) => Some(p.max(m)),
                    (p, m) => p.or(m),
                };
                Cursor {
                    mapping: mapping.name.clone(),
                    micros,
                    repr: load
                        .cursor_repr
                        .or(prior.as_ref().map(|p| p.repr))
                        .unwrap_or(CursorRepr::Text),
                }
                .to_json()
            });
            let live_rows = files.iter().map(|f| f.rows).sum();
            progress.table_done(table.name, rows);
            reports.push(TableReport {
                table: table.name.into(),
                rows,
                mode: if prior.is_some() {
                    LoadMode::Incremental
                } else {
                    LoadMode::Full
                },
                live_rows,
                rows_dropped,
                cursor_before: prior.as_ref().map(Cursor::to_json),
                cursor_after: cursor_after.clone(),
                files: new_files.len(),
                bytes: new_files.iter().map(|f| f.bytes).sum(),
                seconds: t1.duration_since(t0).as_secs_f64() + t2.elapsed().as_secs_f64(),
                pii_refused,
                source_keys,
                source_keys_from,
                reconcile_seconds: t2.duration_since(t1).as_secs_f64(),
            });
            txn.replace_table(table.name, files, cursor_after)?;
        }
        // Tables the mapping leaves out are empty because nothing was read: recorded as such.
        let mut facts = kartoteka_engine::MappingFacts {
            currency: mapping.currency().map(str::to_string),
            ..Default::default()
        };
        for name in mapping.unmapped_tables() {
            txn.replace_table(name, Vec::new(), None)?;
            facts.unmapped_tables.insert(name.to_string());
        }
        for plan in &plans {
            if !plan.absent.is_empty() {
                facts.unmapped_columns.insert(
                    plan.table.name.to_string(),
                    plan.absent_names()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
        txn.set_mapping_facts(facts.clone());
        // Reconcile before the snapshot becomes current: the files about to be committed against
        // the source's key sets read in the same source snapshot.
        let pending = txn.pending();
        let checked = Instant::now();
        let mut checks = Vec::new();
        for t in &reports {
            if let Some(source) = t.source_keys {
                let (lake, lake_duplicates) = engine.key_check(&pending, &t.table).await?;
                checks.push(TableCheck {
                    table: t.table.clone(),
                    source,
                    lake,
                    lake_duplicates,
                });
            }
        }
        let check_seconds = checked.elapsed().as_secs_f64();
        if checks.iter().any(|c| !c.matches()) {
            return Err(Error::Reconciliation {
                base: txn.base().id,
                checks,
            });
        }
        let snapshot = txn.commit(operation).await?;
        Ok::<_, Error>(IngestReport {
            snapshot_id: snapshot.id,
            tables: reports,
            checks,
            mapping: facts,
            seconds: start.elapsed().as_secs_f64(),
            check_seconds,
        })
    }
    .await;
    if outcome.is_err() {
        // Nothing was committed; remove the files this run wrote (best effort: a lock held by a new
        // writer, or any other failure here, leaves them for the next `kartoteka gc`).
        let _ = lake.gc(Duration::ZERO).await;
    }
    outcome
}

/// The key set of one table, read from the source by a key-only query over its mapping query — or,
/// for its fingerprint alone, aggregated by the source itself.
struct KeyRead {
    table: &'static Table,
    query: String,
    /// The source's own aggregate of the key set's fingerprint, where the key allows it.
    sums: Option<SumsQuery>,
    /// Per column read (the key columns in key order, then `client_id`/`deal_id` when people have
    /// been erased): canonical index and decoder.
    columns: Vec<(usize, Decoder)>,
    conversions: crate::mapping::Conversions,
    erased: Erased,
}

impl KeyRead {
    fn new(
        source: &Source,
        plan: &TablePlan,
        mapping: &Mapping,
        erased: &Erased,
    ) -> Result<KeyRead> {
        let table = plan.table;
        let mut names: Vec<&str> = table.key.clone();
        if !erased.is_empty() {
            for c in ["client_id", "deal_id"] {
                let returned = table
                    .columns
                    .iter()
                    .position(|tc| tc.name == c)
                    .is_some_and(|i| plan.index.contains(&i));
                if returned && !names.contains(&c) {
                    names.push(c);
                }
            }
        }
        let columns = names
            .iter()
            .map(|k| {
                let canonical = table
                    .columns
                    .iter()
                    .position(|c| c.name == *k)
                    .expect("key columns are columns");
                let result = plan
                    .index
                    .iter()
                    .position(|&i| i == canonical)
                    .expect("the plan maps every canonical column");
                (canonical, plan.decoders[result])
            })
            .collect();
        let query = &mapping.tables[table.name].query;
        Ok(KeyRead {
            table,
            query: format!(
                "SELECT {} FROM ({query}) AS kartoteka_keys",
                names.join(", "),
            ),
            sums: SumsQuery::new(source, plan, query, erased),
            columns,
            conversions: mapping.conversions(),
            erased: erased.clone(),
        })
    }

    /// The key set's fingerprint: from the source's own aggregate where there is one (three numbers
    /// cross the wire), else from every key read.
    async fn fingerprint(&self, reader: &mut SnapshotReader) -> Result<(KeyFingerprint, KeysFrom)> {
        if let Some(sums) = &self.sums {
            let found = match reader {
                SnapshotReader::Sqlite(tx) => sums.read(self.table, fetch!(tx, sums.query)).await?,
                SnapshotReader::Postgres(tx) => {
                    sums.read(self.table, fetch!(tx, sums.query)).await?
                }
                SnapshotReader::MySql(tx) => sums.read(self.table, fetch!(tx, sums.query)).await?,
            };
            if let Some(fingerprint) = found {
                return Ok((fingerprint, KeysFrom::SourceAggregate));
            }
        }
        let (fingerprint, _) = match reader {
            SnapshotReader::Sqlite(tx) => self.read(fetch!(tx, self.query), false).await?,
            SnapshotReader::Postgres(tx) => self.read(fetch!(tx, self.query), false).await?,
            SnapshotReader::MySql(tx) => self.read(fetch!(tx, self.query), false).await?,
        };
        Ok((fingerprint, KeysFrom::KeysRead))
    }

    /// The key set's fingerprint, and (with `collect`) the keys themselves.
    async fn read<R: SourceRow>(
        &self,
        mut rows: Rows<'_, R>,
        collect: bool,
    ) -> Result<(KeyFingerprint, Option<KeySet>)> {
        let table = self.table;
        let mut indices: Vec<usize> = self.columns.iter().map(|(c, _)| *c).collect();
        indices.sort_unstable();
        let mut builder = BatchBuilder::for_columns(table, self.conversions, &indices);
        let mut hasher = KeyHasher::new(table)?;
        let mut set = if collect {
            Some(KeySet::new(table)?)
        } else {
            None
        };
        let query_err = |cause| Error::SourceQuery {
            table: table.name.into(),
            cause,
        };
        let erased = &self.erased;
        let mut hash = |batch: RecordBatch| -> Result<()> {
            // Erased people are not in the lake and never will be: not in the source's set either.
            let batch = without_erased(erased, batch)?;
            // Key order, as the lake's side reads them.
            let keys = key_columns(table, &batch)?;
            hasher.add(&keys)?;
            if let Some(set) = &mut set {
                set.insert(&keys)?;
            }
            Ok(())
        };
        while let Some(row) = rows.try_next().await.map_err(query_err)? {
            builder.start_row();
            for (i, &(canonical, decoder)) in self.columns.iter().enumerate() {
                builder.push(canonical, row.value(i, decoder).map_err(query_err)?)?;
            }
            builder.end_row();
            if builder.len() >= BATCH_ROWS {
                hash(builder.finish()?)?;
            }
        }
        if !builder.is_empty() {
            hash(builder.finish()?)?;
        }
        Ok((hasher.finish(), set))
    }
}

/// The fingerprint of an integer key set, computed by the source database over the mapping query
/// ([`modular_sums_sql`]), with the rows about erased people left out in SQL as the lake leaves them
/// out. SQLite types values, not columns: its query also counts keys that are not integers (a text key
/// becomes a surrogate in the lake), and any such key sends the run back to reading every key.
#[derive(Debug)]
struct SumsQuery {
    query: String,
    /// How the three (SQLite: four) integers come back.
    decoder: Decoder,
    /// SQLite: the fourth column counts keys that are not integers.
    counts_non_integers: bool,
}

impl SumsQuery {
    fn new(source: &Source, plan: &TablePlan, query: &str, erased: &Erased) -> Option<SumsQuery> {
        let table = plan.table;
        if !has_integer_key(table) {
            return None;
        }
        // The decoder of a returned canonical column: only integers (SQLite: any value, checked).
        let integer = |name: &str| -> Option<bool> {
            let canonical = table.columns.iter().position(|c| c.name == name)?;
            let result = plan.index.iter().position(|&i| i == canonical)?;
            Some(matches!(
                plan.decoders[result],
                Decoder::Int16
                    | Decoder::Int32
                    | Decoder::Int64
                    | Decoder::UInt64
                    | Decoder::Dynamic
            ))
        };
        let result_position = |name: &str| -> Option<usize> {
            let canonical = table.columns.iter().position(|c| c.name == name)?;
            plan.index.iter().position(|&i| i == canonical)
        };
        let key = table.key[0];
        if integer(key) != Some(true) {
            return None;
        }
        let (bigint, decoder) = match source {
            Source::Postgres(_) => ("BIGINT", Decoder::Int64),
            Source::MySql(_) => ("SIGNED", Decoder::Int64),
            Source::Sqlite(_) => ("INTEGER", Decoder::Dynamic),
        };
        let counts_non_integers = matches!(source, Source::Sqlite(_));
        // Erased people: the rows the lake drops as they arrive (`Erased::mask`) are left out here.
        // Per column: its position in the query's result, and the ids.
        let mut erased_rows: Vec<(&str, usize, String)> = Vec::new();
        for (column, ids) in [("client_id", &erased.clients), ("deal_id", &erased.deals)] {
            if ids.is_empty() {
                continue;
            }
            match integer(column) {
                // The table has no such column, or the query does not return it: nobody's rows.
                None => {}
                Some(true) => erased_rows.push((
                    column,
                    result_position(column)?,
                    ids.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
                // Ids that are not integers in the source: the keys are read and filtered here.
                Some(false) => return None,
            }
        }
        let excluded = |columns: &[String]| {
            columns
                .iter()
                .zip(&erased_rows)
                .map(|(c, (_, _, ids))| format!("COALESCE({c} IN ({ids}), FALSE)"))
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        // MariaDB materialises a derived UNION ALL whole before aggregating it: each branch then
        // aggregates its own rows instead (`branches.rs`).
        if matches!(source, Source::MySql(_)) {
            let positions: Vec<usize> = erased_rows.iter().map(|(_, p, _)| *p).collect();
            let exclude: Option<crate::branches::Exclude<'_>> =
                (!positions.is_empty()).then_some((positions.as_slice(), &excluded));
            if let Some(branches) = crate::branches::per_branch(
                query,
                result_position(key)?,
                &|k| modular_sums_parts(k, bigint),
                exclude,
            ) {
                let select =
                    modular_sums_combined(["kartoteka_a0", "kartoteka_a1", "kartoteka_a2"], bigint);
                return Some(SumsQuery {
                    query: format!("SELECT {select} FROM ({branches}) AS kartoteka_keys"),
                    decoder,
                    counts_non_integers,
                });
            }
        }
        let mut select = modular_sums_sql(&format!("kartoteka_keys.{key}"), bigint);
        if counts_non_integers {
            select.push_str(&format!(
                ", COALESCE(SUM(CASE WHEN typeof(kartoteka_keys.{key}) = 'integer' THEN 0 ELSE 1 END), 0)"
            ));
        }
        let filter = if erased_rows.is_empty() {
            String::new()
        } else {
            let columns: Vec<String> = erased_rows
                .iter()
                .map(|(c, _, _)| format!("kartoteka_keys.{c}"))
                .collect();
            format!(" WHERE NOT ({})", excluded(&columns))
        };
        Some(SumsQuery {
            query: format!("SELECT {select} FROM ({query}) AS kartoteka_keys{filter}"),
            decoder,
            counts_non_integers,
        })
    }

    /// The fingerprint the source returns (`None`: SQLite found keys that are not integers).
    async fn read<R: SourceRow>(
        &self,
        table: &Table,
        mut rows: Rows<'_, R>,
    ) -> Result<Option<KeyFingerprint>> {
        let query_err = |cause| Error::SourceQuery {
            table: table.name.into(),
            cause,
        };
        let row = rows
            .try_next()
            .await
            .map_err(query_err)?
            .ok_or_else(|| Error::SourceQuery {
                table: table.name.into(),
                cause: sqlx::Error::RowNotFound,
            })?;
        let mut numbers = [0i64; 4];
        let n = if self.counts_non_integers { 4 } else { 3 };
        for (i, slot) in numbers.iter_mut().enumerate().take(n) {
            *slot = match row.value(i, self.decoder).map_err(query_err)? {
                crate::batch::Value::Int(v) => v,
                crate::batch::Value::Null => 0,
                other => {
                    return Err(Error::SourceQuery {
                        table: table.name.into(),
                        cause: sqlx::Error::Decode(
                            format!("the key checksum came back as {other:?}").into(),
                        ),
                    });
                }
            };
        }
        drop(rows);
        if self.counts_non_integers && numbers[3] > 0 {
            return Ok(None);
        }
        let count = u64::try_from(numbers[0]).unwrap_or(0);
        Ok(Some(KeyFingerprint::from_modular_sums(
            count,
            i128::from(numbers[1]),
            i128::from(numbers[2]),
        )))
    }
}

/// `batch` without the rows about people erased on request.
fn without_erased(erased: &Erased, batch: RecordBatch) -> Result<RecordBatch> {
    if erased.is_empty() {
        return Ok(batch);
    }
    let keep = arrow::compute::not(&erased.mask(&batch)?)?;
    Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
}

/// One table's key set in the source and in the lake after a run.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    /// Canonical table.
    pub table: String,
    /// The source's key set (read in the run's source snapshot).
    pub source: KeyFingerprint,
    /// The committed lake's key set (read back from the encrypted files).
    pub lake: KeyFingerprint,
    /// Keys the lake holds more than once.
    pub lake_duplicates: u64,
}

impl TableCheck {
    /// Same rows, same keys, each key once.
    pub fn matches(&self) -> bool {
        self.source == self.lake && self.lake_duplicates == 0
    }

    /// What differs, for a person.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "table {}: the source holds {} rows (key checksum {:016x}), the lake would hold {} ({:016x})",
            self.table, self.source.rows, self.source.checksum, self.lake.rows, self.lake.checksum
        );
        if self.lake_duplicates > 0 {
            text.push_str(&format!(
                ", {} keys held twice or more",
                self.lake_duplicates
            ));
        }
        text
    }
}

/// One table's rows on their way from the source into the lake writer.
struct Load<'a> {
    plan: &'a TablePlan,
    builder: BatchBuilder,
    progress: &'a dyn Progress,
    consent: &'a mut Consent,
    refused: u64,
    /// Keys read by an incremental run, with the `updated_at` read (their older versions are
    /// dropped).
    changed: Option<KeyVersions>,
    /// A full load's fingerprint of the keys it reads (with reconciliation).
    keys_read: Option<KeyHasher>,
    /// Newest `updated_at` read.
    max_cursor: Option<i64>,
    /// How the source holds `updated_at`, as first seen.
    cursor_repr: Option<CursorRepr>,
    /// People erased on request: their rows are dropped as they arrive.
    erased: &'a Erased,
}

impl Load<'_> {
    /// Decode every row of `rows` into batches and hand them to `writer`.
    async fn drain<R: SourceRow>(
        &mut self,
        mut rows: Rows<'_, R>,
        writer: &mut kartoteka_engine::lake::TableWriter<'_>,
    ) -> Result<()> {
        let table = self.plan.table;
        let query_err = |cause| Error::SourceQuery {
            table: table.name.into(),
            cause,
        };
        let cursor = table
            .cursor
            .and_then(|c| table.columns.iter().position(|tc| tc.name == c));
        while let Some(row) = rows.try_next().await.map_err(query_err)? {
            let repr = &mut self.cursor_repr;
            self.plan.push_row(&row, &mut self.builder, |col, v| {
                if Some(col) == cursor && repr.is_none() {
                    *repr = CursorRepr::of(v);
                }
            })?;
            if self.builder.len() >= BATCH_ROWS {
                self.flush(writer).await?;
            }
        }
        if !self.builder.is_empty() {
            self.flush(writer).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, writer: &mut kartoteka_engine::lake::TableWriter<'_>) -> Result<()> {
        self.progress.rows(self.builder.len() as u64);
        let table = self.plan.table;
        let batch = without_erased(self.erased, self.builder.finish()?)?;
        let (batch, n) = self.consent.apply(table, batch)?;
        self.refused += n;
        let versions = row_versions(table, &batch)?;
        if let Some(m) = versions.and_then(arrow::compute::max) {
            self.max_cursor = Some(self.max_cursor.map_or(m, |c| c.max(m)));
        }
        if self.changed.is_some() || self.keys_read.is_some() {
            let keys = key_columns(table, &batch)?;
            if let Some(changed) = &mut self.changed {
                changed.insert(&keys, versions)?;
            }
            if let Some(hasher) = &mut self.keys_read {
                hasher.add(&keys)?;
            }
        }
        writer.write(&batch).await?;
        Ok(())
    }
}
