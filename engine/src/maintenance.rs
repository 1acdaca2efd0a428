//! The engine's maintenance paths: the work that reads the lake with every key and rewrites it —
//! reconciliation fingerprints, incremental rewrites by key, erasure on request, data-key rotation,
//! compaction. None of it builds a policy-checked session: these run as the lake's owner process, never
//! for a user's statement (that is `session.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lake::Snapshot;
use crate::model::{self, Class};
use crate::session::Engine;

/// What an erasure did.
#[derive(Debug, Clone, Serialize)]
pub struct Erasure {
    /// The client erased.
    pub client_id: i64,
    /// Their deals, erased with them.
    pub deals: usize,
    /// Rows removed per table.
    pub removed: BTreeMap<String, u64>,
    /// The snapshot without them.
    pub snapshot: u64,
    /// Older snapshots expired (they still held the rows).
    pub expired_snapshots: Vec<u64>,
    /// Data files deleted (nothing references them any more).
    pub files_deleted: usize,
}

/// What erasing a client would remove, shown before anything changes.
#[derive(Debug, Clone, Serialize)]
pub struct ErasurePlan {
    /// The client.
    pub client_id: i64,
    /// The snapshot the plan was made in.
    pub snapshot: u64,
    /// Their deals.
    pub deals: Vec<i64>,
    /// Rows that would leave each table.
    pub rows: BTreeMap<String, u64>,
    /// Older snapshots that would be expired (history that goes for good).
    pub snapshots_expired: Vec<u64>,
}

/// The name under which [`Engine::files_without_rows`] reads each row's position in its file.
const POSITION: &str = "__kartoteka_position";

/// The rows [`Engine::files_without_rows`] takes out of a table.
pub(crate) struct RowsToRemove<'a> {
    /// The columns `gone` reads.
    pub(crate) columns: &'a [&'a str],
    /// When given, it holds for every row `gone` may mark: only those rows are read, so row-group
    /// statistics skip the rest (whole files, often).
    pub(crate) within: Option<datafusion::prelude::Expr>,
    /// For each row of a batch (holding at least `columns`): does it go?
    pub(crate) gone: &'a (dyn Fn(&RecordBatch) -> Result<arrow::array::BooleanArray> + Send + Sync),
}

/// How [`Engine::files_without_rows`] takes rows out of a file that holds some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// In the file's delete vector, while it stays under
    /// [`MAX_DELETED_SHARE`](crate::deletions::MAX_DELETED_SHARE) of the file (else as `Rewrite`):
    /// an incremental ingest's updates and deletes.
    Mark,
    /// A new file without them; a file with a delete vector is rewritten even without such a row,
    /// so rows deleted earlier leave the disk too: erasure.
    Rewrite,
}

impl Engine {
    /// The key-set fingerprint of `table` in `snapshot`, read back from its encrypted files (key
    /// columns only) — what reconciliation compares with the source's — and how many keys the table
    /// holds more than once, from the same single read.
    pub async fn key_check(
        &self,
        snapshot: &Snapshot,
        table: &str,
    ) -> Result<(crate::reconcile::KeyFingerprint, u64)> {
        use futures::TryStreamExt;
        let table = model::table(table).ok_or_else(|| Error::UnknownTable(table.into()))?;
        let mut classes: Vec<Class> = table.key.iter().filter_map(|k| table.class_of(k)).collect();
        classes.dedup();
        let ctx = self.raw_context(snapshot, &classes).await?;
        let mut stream = ctx
            .table(table.name)
            .await?
            .select_columns(&table.key)?
            .execute_stream()
            .await?;
        let mut hasher = crate::reconcile::KeyHasher::new(table)?;
        let mut keys = crate::reconcile::KeyList::new(table)?;
        while let Some(batch) = stream.try_next().await? {
            hasher.add(&batch)?;
            keys.add(&batch)?;
        }
        Ok((hasher.finish(), keys.held_more_than_once()))
    }

    /// `files` of `table` (all encrypted with this lake's keys), with the rows whose key `drop`
    /// holds (or, with `keep_only`, whose key `keep_only` lacks) left out: a file holding none of
    /// them is kept as it is; any other is rewritten through `txn` into new files. Returns the
    /// resulting file list and the rows left out. Used by incremental ingest (older versions of
    /// updated rows, rows deleted in the source).
    pub async fn files_without_keys(
        &self,
        txn: &crate::lake::WriteTxn<'_>,
        table: &str,
        files: &[crate::lake::DataFile],
        drop: Option<&crate::reconcile::KeySet>,
        keep_only: Option<&crate::reconcile::KeySet>,
    ) -> Result<(Vec<crate::lake::DataFile>, u64)> {
        let t = model::table(table).ok_or_else(|| Error::UnknownTable(table.into()))?;
        let gone = |batch: &RecordBatch| -> Result<arrow::array::BooleanArray> {
            let keys = crate::reconcile::key_columns(t, batch)?;
            let mut mask = match drop {
                Some(set) => set.contains(&keys)?,
                None => arrow::array::BooleanArray::from(vec![false; batch.num_rows()]),
            };
            if let Some(keep) = keep_only {
                let absent = arrow::compute::not(&keep.contains(&keys)?)?;
                mask = arrow::compute::or(&mask, &absent)?;
            }
            Ok(mask)
        };
        // Rows to drop lie within the range of `drop`'s keys (without `keep_only`, any key may go).
        let within = match (drop, keep_only) {
            (Some(set), None) if set.is_empty() => return Ok((files.to_vec(), 0)),
            (Some(set), None) => key_range(t, set.integer_range()),
            _ => None,
        };
        let remove = RowsToRemove {
            columns: &t.key,
            within,
            gone: &gone,
        };
        self.files_without_rows(txn, table, files, remove, Removal::Mark)
            .await
    }

    /// `files` of `table` without the older versions of the rows an incremental run read (`read`:
    /// their keys, each with the `updated_at` it was read with). A stored row whose key was read is
    /// dropped — unless it carries the very `updated_at` it was read with: then it is the same row,
    /// read again inside the overlap window, and stays where it is, so a handful of re-read rows
    /// never makes a large file be rewritten. Returns the new file list, the rows dropped, and the
    /// keys found unchanged (the caller drops their copies just read instead).
    pub async fn files_without_older_versions(
        &self,
        txn: &crate::lake::WriteTxn<'_>,
        table: &str,
        files: &[crate::lake::DataFile],
        read: &crate::reconcile::KeyVersions,
    ) -> Result<(Vec<crate::lake::DataFile>, u64, crate::reconcile::KeySet)> {
        use arrow::array::BooleanArray;
        let t = model::table(table).ok_or_else(|| Error::UnknownTable(table.into()))?;
        let mut columns: Vec<&str> = t.key.clone();
        columns.extend(t.cursor);
        let unchanged = std::sync::Mutex::new(crate::reconcile::KeySet::new(t)?);
        if read.is_empty() {
            let none = unchanged
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return Ok((files.to_vec(), 0, none));
        }
        let gone = |batch: &RecordBatch| -> Result<BooleanArray> {
            let keys = crate::reconcile::key_columns(t, batch)?;
            let versions = crate::reconcile::row_versions(t, batch)?;
            let found = read.compare(&keys, versions)?;
            let same: BooleanArray = found.iter().map(|f| Some(*f == Some(true))).collect();
            if same.true_count() > 0 {
                let rows = arrow::compute::filter_record_batch(&keys, &same)?;
                unchanged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(&rows)?;
            }
            Ok(found.iter().map(|f| Some(*f == Some(false))).collect())
        };
        let remove = RowsToRemove {
            columns: &columns,
            within: key_range(t, read.integer_range()),
            gone: &gone,
        };
        let (files, dropped) = self
            .files_without_rows(txn, table, files, remove, Removal::Mark)
            .await?;
        let unchanged = unchanged
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok((files, dropped, unchanged))
    }

    /// `files` of `table` without the rows `remove` marks: files with no such row are kept as they
    /// are; in the others the rows go as `removal` says — marked in the file's delete vector, or the
    /// file rewritten through `txn` without them. Returns the new file list and the rows left out.
    pub(crate) async fn files_without_rows(
        &self,
        txn: &crate::lake::WriteTxn<'_>,
        table: &str,
        files: &[crate::lake::DataFile],
        remove: RowsToRemove<'_>,
        removal: Removal,
    ) -> Result<(Vec<crate::lake::DataFile>, u64)> {
        use futures::TryStreamExt;
        let RowsToRemove {
            columns: check_columns,
            within,
            gone,
        } = remove;
        let table = model::table(table).ok_or_else(|| Error::UnknownTable(table.into()))?;
        let mut out = Vec::new();
        let mut removed = 0u64;
        let classes = [Class::Internal, Class::Pii];
        for file in files {
            // A snapshot of just this file, read with every key (the raw context checks only it).
            let mut one = txn.base().clone();
            one.tables.clear();
            one.tables.insert(
                table.name.to_string(),
                crate::lake::TableState {
                    schema_version: crate::lake::SCHEMA_VERSION,
                    files: vec![file.clone()],
                    cursor: None,
                },
            );
            let ctx = self.raw_context(&one, &classes).await?;
            // Erasure takes a person's rows off the disk: a file whose delete vector may still hold
            // some of theirs (older versions) is rewritten whether or not a live row is theirs.
            let purge = removal == Removal::Rewrite && file.deleted.is_some();
            // First the columns that decide, each row with its position in the file (DataFusion's
            // `file_row_index()`, which the Parquet reader counts from the row groups' offsets, past
            // any row a delete vector skips): most files hold no such row and stay as they are.
            let mut select: Vec<datafusion::prelude::Expr> = check_columns
                .iter()
                .map(|c| datafusion::prelude::ident(*c))
                .collect();
            select.push(datafusion::functions::core::expr_fn::file_row_index().alias(POSITION));
            let mut rows = ctx.table(table.name).await?;
            if let Some(within) = &within {
                rows = rows.filter(within.clone())?;
            }
            let mut stream = rows.select(select)?.execute_stream().await?;
            let mut positions = Vec::new();
            let mut live = 0u64;
            while let Some(batch) = stream.try_next().await? {
                let at = batch.num_columns() - 1;
                let read = batch
                    .column(at)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .ok_or_else(|| {
                        Error::Execution(format!("{}: row positions are not BIGINT", file.path))
                    })?;
                let mask = gone(&batch.project(&(0..at).collect::<Vec<_>>())?)?;
                for (hit, position) in mask.iter().zip(read.iter()) {
                    if hit == Some(true) {
                        let position = position
                            .and_then(|p| u64::try_from(p).ok())
                            .filter(|p| *p < file.rows_written())
                            .ok_or_else(|| {
                                Error::Integrity(format!(
                                    "{} holds a row past the {} the snapshot records",
                                    file.path,
                                    file.rows_written()
                                ))
                            })?;
                        positions.push(position);
                    }
                }
                live += batch.num_rows() as u64;
            }
            if within.is_none() && live != file.rows {
                return Err(Error::Integrity(format!(
                    "{} holds {live} live rows; the snapshot records {}",
                    file.path, file.rows
                )));
            }
            let hits = positions.len() as u64;
            if hits == 0 && !purge {
                out.push(file.clone());
                continue;
            }
            removed += hits;
            let deleted = match &file.deleted {
                Some(d) => d.with(&positions),
                None => crate::deletions::Deletions::new(positions),
            };
            if removal == Removal::Mark
                && (deleted.len() as f64)
                    <= crate::deletions::MAX_DELETED_SHARE * file.rows_written() as f64
            {
                out.push(crate::lake::DataFile {
                    rows: file.rows - hits,
                    deleted: Some(deleted),
                    ..file.clone()
                });
                continue;
            }
            let mut writer = txn.table_writer(table.name).await?;
            let mut stream = ctx.table(table.name).await?.execute_stream().await?;
            while let Some(batch) = stream.try_next().await? {
                let keep = arrow::compute::not(&gone(&batch)?)?;
                let kept = arrow::compute::filter_record_batch(&batch, &keep)?;
                if kept.num_rows() > 0 {
                    writer.write(&kept).await?;
                }
            }
            out.extend(writer.finish().await?);
        }
        Ok((out, removed))
    }

    /// Erase a client on request: every row about them — theirs (`client_id`) or about their deals
    /// (`deal_id`) — leaves every table, by rewriting the files that hold any; the client and their
    /// deals are recorded in the snapshot so no later ingest writes them again; every older snapshot
    /// is expired and every file no snapshot needs is deleted. Returns the rows removed per table,
    /// the new snapshot and the snapshots expired.
    pub async fn erase_client(&self, client_id: i64) -> Result<Erasure> {
        let mut txn = self.lake().begin_write().await?;
        let base = txn.base().clone();
        let plan = self.erasure_plan_in(&base, client_id).await?;
        let deals = plan.deals;
        txn.erase(&[client_id], &deals);
        let erased = crate::lake::Erased {
            clients: [client_id].into(),
            deals: deals.iter().copied().collect(),
        };
        let mut removed = BTreeMap::new();
        for (name, state) in &base.tables {
            let table = model::table(name).ok_or_else(|| Error::UnknownTable(name.clone()))?;
            let columns: Vec<&str> = ["client_id", "deal_id"]
                .into_iter()
                .filter(|c| table.column(c).is_some())
                .collect();
            if columns.is_empty() {
                continue;
            }
            let gone = |batch: &RecordBatch| erased.mask(batch);
            let (files, n) = self
                .files_without_rows(
                    &txn,
                    name,
                    &state.files,
                    RowsToRemove {
                        columns: &columns,
                        within: None,
                        gone: &gone,
                    },
                    Removal::Rewrite,
                )
                .await?;
            if files != state.files {
                txn.replace_table(name, files, state.cursor.clone())?;
            }
            if n > 0 {
                removed.insert(name.clone(), n);
            }
        }
        let snapshot = txn.commit(&format!("erase client {client_id}")).await?;
        let expired = self.lake().expire_before(snapshot.id).await?;
        let gc = self.lake().gc(Duration::ZERO).await?;
        Ok(Erasure {
            client_id,
            deals: deals.len(),
            removed,
            snapshot: snapshot.id,
            expired_snapshots: expired,
            files_deleted: gc.deleted.len(),
        })
    }

    /// What [`Engine::erase_client`] would remove, in the current snapshot. A client the lake does
    /// not hold (a mistyped id) or erased already is an error: nothing is changed for them.
    pub async fn erasure_plan(&self, client_id: i64) -> Result<ErasurePlan> {
        let snapshot = self.lake().current().await?;
        self.erasure_plan_in(&snapshot, client_id).await
    }

    async fn erasure_plan_in(&self, base: &Snapshot, client_id: i64) -> Result<ErasurePlan> {
        use datafusion::prelude::{col, lit};
        use futures::TryStreamExt;
        if base.erased.clients.contains(&client_id) {
            return Err(Error::NotFound(format!(
                "client {client_id} was erased already; nothing was changed"
            )));
        }
        let ctx = self.raw_context(base, &[Class::Internal]).await?;
        let mut deals: Vec<i64> = Vec::new();
        if base.table("deals").is_some() {
            let mut stream = ctx
                .table("deals")
                .await?
                .filter(col("client_id").eq(lit(client_id)))?
                .select_columns(&["deal_id"])?
                .execute_stream()
                .await?;
            while let Some(b) = stream.try_next().await? {
                let ids = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .ok_or_else(|| Error::SchemaMismatch {
                        table: "deals".into(),
                        detail: "deal_id is not BIGINT".into(),
                    })?;
                deals.extend(ids.iter().flatten());
            }
        }
        let mut rows = BTreeMap::new();
        for name in base.tables.keys() {
            let table = model::table(name).ok_or_else(|| Error::UnknownTable(name.clone()))?;
            let mut about = None;
            if table.column("client_id").is_some() {
                about = Some(col("client_id").eq(lit(client_id)));
            }
            if table.column("deal_id").is_some() && !deals.is_empty() {
                let in_deals =
                    col("deal_id").in_list(deals.iter().map(|d| lit(*d)).collect(), false);
                about = Some(match about {
                    Some(e) => e.or(in_deals),
                    None => in_deals,
                });
            }
            let Some(about) = about else { continue };
            let n = ctx
                .table(name.as_str())
                .await?
                .filter(about)?
                .count()
                .await? as u64;
            if n > 0 {
                rows.insert(name.clone(), n);
            }
        }
        if rows.get("clients").copied().unwrap_or(0) == 0 && rows.is_empty() {
            return Err(Error::NotFound(format!(
                "the lake holds no client {client_id} (snapshot {}): check the id \
                 (`clients.client_id`); nothing was changed",
                base.id
            )));
        }
        let snapshots_expired = self
            .lake()
            .snapshot_ids()
            .await?
            .into_iter()
            .filter(|id| *id <= base.id)
            .collect();
        Ok(ErasurePlan {
            client_id,
            snapshot: base.id,
            deals,
            rows,
            snapshots_expired,
        })
    }

    /// Issue new data keys and rewrite every file of the current snapshot with them, in one commit.
    /// Old key versions stay in the keyring until garbage collection finds no snapshot using them.
    pub async fn rotate_data_keys(&self) -> Result<(Vec<String>, Snapshot)> {
        let mut txn = self.lake().begin_write().await?;
        let base = txn.base().clone();
        // Read with every key the lake has (old versions included), write with the new ones.
        let ctx = self
            .raw_context(&base, &[Class::Internal, Class::Pii])
            .await?;
        let new_ids = self
            .lake()
            .keyring()
            .write()
            .await
            .rotate_data_keys(self.lake().store())
            .await?;
        for (name, state) in &base.tables {
            rewrite_table(&ctx, &mut txn, name, state).await?;
        }
        let snapshot = txn.commit("keys rotate --data").await?;
        Ok((new_ids, snapshot))
    }

    /// Compaction: every table holding more than `max_files` files (incremental runs add a few per
    /// run), or a file with a delete vector (rows an incremental run replaced or found deleted), is
    /// rewritten into as few files as [`crate::lake::FILE_ROWS`] allows, without the deleted rows,
    /// its cursor kept. Returns the tables compacted and the new snapshot (`None` when nothing
    /// needed it).
    pub async fn compact(&self, max_files: usize) -> Result<(Vec<String>, Option<Snapshot>)> {
        let mut txn = self.lake().begin_write().await?;
        let base = txn.base().clone();
        let ctx = self
            .raw_context(&base, &[Class::Internal, Class::Pii])
            .await?;
        let mut compacted = Vec::new();
        for (name, state) in &base.tables {
            if state.files.len() <= max_files && state.files.iter().all(|f| f.deleted.is_none()) {
                continue;
            }
            rewrite_table(&ctx, &mut txn, name, state).await?;
            compacted.push(name.clone());
        }
        if compacted.is_empty() {
            return Ok((compacted, None));
        }
        let snapshot = txn
            .commit(&format!("compact {}", compacted.join(", ")))
            .await?;
        Ok((compacted, Some(snapshot)))
    }
}

/// `key BETWEEN lo AND hi` for `table`'s one integer key, when `range` gives them.
fn key_range(table: &model::Table, range: Option<(i64, i64)>) -> Option<datafusion::prelude::Expr> {
    use datafusion::prelude::{ident, lit};
    let (lo, hi) = range?;
    Some(ident(table.key[0]).between(lit(lo), lit(hi)))
}

/// Rewrite every row of `name` (read through `ctx`) into new files of `txn`, the cursor kept: the one
/// whole-table rewrite of compaction and data-key rotation.
async fn rewrite_table(
    ctx: &datafusion::prelude::SessionContext,
    txn: &mut crate::lake::WriteTxn<'_>,
    name: &str,
    state: &crate::lake::TableState,
) -> Result<()> {
    let files = {
        let mut writer = txn.table_writer(name).await?;
        let mut stream = ctx.table(name).await?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            writer.write(&batch?).await?;
        }
        writer.finish().await?
    };
    txn.replace_table(name, files, state.cursor.clone())?;
    Ok(())
}
