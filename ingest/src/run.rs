//! One ingest run: every mapped table read from the source, streamed into encrypted files, and
//! committed as one snapshot — or nothing at all.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
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
    /// Rows whose personal data was refused (no consent recorded) and stored as NULL.
    pub pii_refused: u64,
}

/// Choices of an ingest run.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// Store no personal data of clients without a recorded consent (`clients.consent_at` NULL):
    /// their pii columns — and the pii of rows about them in other tables — are written as NULL.
    pub refuse_pii_without_consent: bool,
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
    ingest_sqlite_with(
        lake,
        source,
        mapping,
        operation,
        progress,
        IngestOptions::default(),
    )
    .await
}

/// [`ingest_sqlite`] with options.
pub async fn ingest_sqlite_with(
    lake: &Lake,
    source: &SqliteSource,
    mapping: &Mapping,
    operation: &str,
    progress: &dyn Progress,
    options: IngestOptions,
) -> Result<IngestReport> {
    let start = Instant::now();
    let plans = plan(source, mapping).await?;
    let mut consent = Consent {
        enabled: options.refuse_pii_without_consent,
        ..Consent::default()
    };
    let outcome = async {
        let mut txn = lake.begin_write().await?;
        let mut reports = Vec::new();
        for (table, index) in &plans {
            let t0 = Instant::now();
            progress.table_started(table.name);
            let (files, pii_refused) =
                load_table(&txn, source, mapping, table, index, progress, &mut consent).await?;
            let rows = files.iter().map(|f| f.rows).sum();
            progress.table_done(table.name, rows);
            reports.push(TableReport {
                table: table.name.into(),
                rows,
                files: files.len(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                seconds: t0.elapsed().as_secs_f64(),
                pii_refused,
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
    consent: &mut Consent,
) -> Result<(Vec<DataFile>, u64)> {
    let query = &mapping.tables[table.name].query;
    let mut writer = txn.table_writer(table.name).await?;
    let mut builder = BatchBuilder::new(table, mapping.money_integers());
    let mut rows = source.rows(query);
    let mut refused = 0u64;
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
            let (batch, n) = consent.apply(table, builder.finish()?)?;
            refused += n;
            writer.write(&batch).await?;
        }
    }
    if !builder.is_empty() {
        progress.rows(builder.len() as u64);
        let (batch, n) = consent.apply(table, builder.finish()?)?;
        refused += n;
        writer.write(&batch).await?;
    }
    Ok((writer.finish().await?, refused))
}
