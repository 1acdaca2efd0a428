//! One ingest run: every mapped table read from the source, streamed into encrypted files, and
//! committed as one snapshot — or nothing at all.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kartoteka_engine::lake::{DataFile, Lake};
use kartoteka_engine::model::{self, Table};
use serde::Serialize;

use crate::batch::BatchBuilder;
use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::source::sqlite::{self, SqliteSource};

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

/// What one table's load did.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Canonical table.
    pub table: String,
    /// Rows read and written.
    pub rows: u64,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// What an ingest run did.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// The snapshot the run committed.
    pub snapshot_id: u64,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Seconds spent in all.
    pub seconds: f64,
}

/// Check every mapping query against the source before anything is written: each must return exactly
/// the canonical columns. Returns, per table, the canonical column index of each result column.
async fn plan(
    source: &SqliteSource,
    mapping: &Mapping,
) -> Result<Vec<(&'static Table, Vec<usize>)>> {
    let mut plans = Vec::new();
    for table in model::tables() {
        let query = &mapping.tables[table.name].query;
        let columns = source
            .columns(query)
            .await
            .map_err(|cause| Error::SourceQuery {
                table: table.name.into(),
                cause,
            })?;
        let mut index = Vec::with_capacity(columns.len());
        let mut unexpected = Vec::new();
        for c in &columns {
            match table.columns.iter().position(|tc| tc.name == c) {
                Some(i) if !index.contains(&i) => index.push(i),
                Some(_) => unexpected.push(format!("{c} (twice)")),
                None => unexpected.push(c.clone()),
            }
        }
        let missing: Vec<&str> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !index.contains(i))
            .map(|(_, c)| c.name)
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            let mut detail = Vec::new();
            if !missing.is_empty() {
                detail.push(format!(
                    "the query returns no column {}",
                    missing.join(", ")
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
        plans.push((table, index));
    }
    Ok(plans)
}

/// Full load of a SQLite source into `lake`, committed as one snapshot.
pub async fn ingest_sqlite(
    lake: &Lake,
    source: &SqliteSource,
    mapping: &Mapping,
    operation: &str,
    progress: &dyn Progress,
) -> Result<IngestReport> {
    let start = Instant::now();
    let plans = plan(source, mapping).await?;
    let outcome = async {
        let mut txn = lake.begin_write().await?;
        let mut reports = Vec::new();
        for (table, index) in &plans {
            let t0 = Instant::now();
            progress.table_started(table.name);
            let files = load_table(&txn, source, mapping, table, index, progress).await?;
            let rows = files.iter().map(|f| f.rows).sum();
            progress.table_done(table.name, rows);
            reports.push(TableReport {
                table: table.name.into(),
                rows,
                files: files.len(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                seconds: t0.elapsed().as_secs_f64(),
            });
            txn.replace_table(table.name, files, None)?;
        }
        let snapshot = txn.commit(operation).await?;
        Ok::<_, Error>(IngestReport {
            snapshot_id: snapshot.id,
            tables: reports,
            seconds: start.elapsed().as_secs_f64(),
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

async fn load_table(
    txn: &kartoteka_engine::WriteTxn<'_>,
    source: &SqliteSource,
    mapping: &Mapping,
    table: &'static Table,
    index: &[usize],
    progress: &dyn Progress,
) -> Result<Vec<DataFile>> {
    let query = &mapping.tables[table.name].query;
    let mut writer = txn.table_writer(table.name).await?;
    let mut builder = BatchBuilder::new(table, mapping.money_integers());
    let mut rows = source.rows(query);
    let query_err = |cause| Error::SourceQuery {
        table: table.name.into(),
        cause,
    };
    while let Some(row) = rows.try_next().await.map_err(query_err)? {
        builder.start_row();
        for (i, &col) in index.iter().enumerate() {
            let v = sqlite::value(&row, i).map_err(query_err)?;
            builder.push(col, v)?;
        }
        builder.end_row();
        if builder.len() >= BATCH_ROWS {
            progress.rows(builder.len() as u64);
            writer.write(&builder.finish()?).await?;
        }
    }
    if !builder.is_empty() {
        progress.rows(builder.len() as u64);
        writer.write(&builder.finish()?).await?;
    }
    Ok(writer.finish().await?)
}
