//! Key-set fingerprints: a table's row count and an order-independent checksum of its keys, computed the
//! same way over a source's rows and over the lake, so an ingest can prove the lake holds exactly the
//! source's keys — none lost, none duplicated.

use std::hash::Hasher;

use arrow::array::RecordBatch;
use arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Table;

/// Row count and checksum of a key set. The checksum is the wrapping sum of a 64-bit hash of each
/// key's row-format bytes: independent of order, and a duplicated key changes it (unlike XOR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFingerprint {
    /// Rows.
    pub rows: u64,
    /// Sum of key hashes (hex in JSON would be nicer to read; a number is exact in serde_json).
    pub checksum: u64,
}

/// Arrow's row format for `table`'s key columns: equal keys, equal bytes.
fn key_converter(table: &Table) -> Result<RowConverter> {
    let schema = table.schema();
    let fields = table
        .key
        .iter()
        .map(|k| {
            Ok(SortField::new(
                schema.field_with_name(k)?.data_type().clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RowConverter::new(fields)?)
}

/// Accumulates a [`KeyFingerprint`] from batches holding a table's key columns, in key order.
#[derive(Debug)]
pub struct KeyHasher {
    converter: RowConverter,
    fingerprint: KeyFingerprint,
}

impl KeyHasher {
    /// A hasher for `table`'s key columns.
    pub fn new(table: &Table) -> Result<KeyHasher> {
        Ok(KeyHasher {
            converter: key_converter(table)?,
            fingerprint: KeyFingerprint::default(),
        })
    }

    /// Add the rows of `batch` (its columns: the key columns, in the table's key order).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.converter.convert_columns(batch.columns())?;
        for row in rows.iter() {
            // SipHash with fixed keys: the same in every process of one build, which is all a
            // comparison within one run needs.
            let mut h = std::hash::DefaultHasher::new();
            h.write(row.as_ref());
            self.fingerprint.checksum = self.fingerprint.checksum.wrapping_add(h.finish());
        }
        self.fingerprint.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The fingerprint so far.
    pub fn finish(&self) -> KeyFingerprint {
        self.fingerprint
    }
}

/// A set of a table's keys (row-format bytes of the key columns), for upserts and deletes by key.
#[derive(Debug)]
pub struct KeySet {
    converter: RowConverter,
    keys: std::collections::HashSet<Box<[u8]>>,
}

impl KeySet {
    /// An empty set for `table`'s keys.
    pub fn new(table: &Table) -> Result<KeySet> {
        Ok(KeySet {
            converter: key_converter(table)?,
            keys: std::collections::HashSet::new(),
        })
    }

    /// Add the keys of `batch` (its columns: the key columns, in key order).
    pub fn insert(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.converter.convert_columns(batch.columns())?;
        self.keys.extend(rows.iter().map(|r| Box::from(r.as_ref())));
        Ok(())
    }

    /// For each row of `batch` (key columns, in key order): is its key in the set?
    pub fn contains(&self, batch: &RecordBatch) -> Result<arrow::array::BooleanArray> {
        let rows = self.converter.convert_columns(batch.columns())?;
        Ok(rows
            .iter()
            .map(|r| Some(self.keys.contains(r.as_ref())))
            .collect())
    }

    /// Keys in the set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key columns of `batch` (which holds at least them), in `table`'s key order.
pub fn key_columns(table: &Table, batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let order = table
        .key
        .iter()
        .map(|k| schema.index_of(k))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(batch.project(&order)?)
}
