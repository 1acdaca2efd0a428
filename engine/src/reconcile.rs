//! Key-set fingerprints: a table's row count and an order-independent checksum of its keys, computed the
//! same way over a source's rows and over the lake, so an ingest can prove the lake holds exactly the
//! source's keys — none lost, none duplicated.
//!
//! A table keyed by one integer column (every incremental table of the canonical model) gets a
//! checksum simple enough for the source database to compute itself with `SUM` and `%`
//! ([`modular_sums_sql`]): an incremental run then asks the source for three numbers instead of
//! reading every key. Other keys (several columns, text) are hashed from their row-format bytes.

use std::hash::Hasher;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Table;

/// The modulus of the integer-key checksum: the largest prime below 2³¹, so a residue squared fits
/// in a signed 64-bit integer in every SQL dialect.
pub const KEY_MODULUS: i64 = 2_147_483_647;

/// Row count and checksum of a key set.
///
/// One integer key `k`: with `r = k % M` (truncated, as SQL's `%`) and `M` = [`KEY_MODULUS`], the
/// checksum packs `Σ r mod M` (high 32 bits) and `Σ (r² % M) mod M` (low 32 bits) — the first two
/// power sums of the residues: a lost, extra or duplicated key changes the count or the sums, and two
/// key sets of equal count differing in one or two keys always differ in them (distinct residues).
/// Other keys: the wrapping sum of a 64-bit hash of each key's row-format bytes (a duplicated key
/// changes it, unlike XOR). Both are independent of order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFingerprint {
    /// Rows.
    pub rows: u64,
    /// The checksum (hex in JSON would be nicer to read; a number is exact in serde_json).
    pub checksum: u64,
}

impl KeyFingerprint {
    /// The fingerprint of an integer key set from its count and its two power sums (each any
    /// integer congruent to the true sum modulo [`KEY_MODULUS`], as a source database returns them).
    pub fn from_modular_sums(rows: u64, s1: i128, s2: i128) -> KeyFingerprint {
        let m = i128::from(KEY_MODULUS);
        let (s1, s2) = (s1.rem_euclid(m) as u64, s2.rem_euclid(m) as u64);
        KeyFingerprint {
            rows,
            checksum: (s1 << 32) | s2,
        }
    }
}

/// Does `table` get the integer-key checksum (one key column, BIGINT)?
pub fn has_integer_key(table: &Table) -> bool {
    let schema = table.schema();
    table.key.len() == 1
        && schema
            .field_with_name(table.key[0])
            .is_ok_and(|f| f.data_type() == &DataType::Int64)
}

/// The select list a source database computes an integer key set's fingerprint with, over a column
/// expression `key`: the row count, then the two power sums reduced modulo [`KEY_MODULUS`], the key
/// and each sum cast to a 64-bit integer with `bigint` (the dialect's name for it: `BIGINT`, `SIGNED`,
/// `INTEGER`). Read back with [`KeyFingerprint::from_modular_sums`].
pub fn modular_sums_sql(key: &str, bigint: &str) -> String {
    modular_sums_parts(key, bigint).join(", ")
}

/// [`modular_sums_sql`]'s three expressions, one by one.
pub fn modular_sums_parts(key: &str, bigint: &str) -> Vec<String> {
    let m = KEY_MODULUS;
    // Widened first: a residue squared overflows a 4-byte integer (PostgreSQL's INTEGER keys).
    let key = format!("CAST({key} AS {bigint})");
    vec![
        "COUNT(*)".to_string(),
        format!("CAST(COALESCE(SUM({key} % {m}) % {m}, 0) AS {bigint})"),
        format!("CAST(COALESCE(SUM(({key} % {m}) * ({key} % {m}) % {m}) % {m}, 0) AS {bigint})"),
    ]
}

/// The select list that adds up [`modular_sums_parts`] computed separately over parts of a key set
/// (the branches of a `UNION ALL`), held in `columns`: the same three numbers as over the whole.
pub fn modular_sums_combined(columns: [&str; 3], bigint: &str) -> String {
    let m = KEY_MODULUS;
    let [count, s1, s2] = columns;
    format!(
        "CAST(COALESCE(SUM({count}), 0) AS {bigint}), \
         CAST(COALESCE(SUM({s1}), 0) % {m} AS {bigint}), \
         CAST(COALESCE(SUM({s2}), 0) % {m} AS {bigint})"
    )
}

/// Accumulates a [`KeyFingerprint`] from batches holding a table's key columns, in key order.
#[derive(Debug)]
pub struct KeyHasher {
    kind: HashKind,
    rows: u64,
}

#[derive(Debug)]
enum HashKind {
    /// One integer key: the power sums of its residues.
    Modular { s1: i128, s2: i128 },
    /// Any other key: hashes of its row-format bytes.
    Rows { converter: RowConverter, sum: u64 },
}

impl KeyHasher {
    /// A hasher for `table`'s key columns.
    pub fn new(table: &Table) -> Result<KeyHasher> {
        let kind = if has_integer_key(table) {
            HashKind::Modular { s1: 0, s2: 0 }
        } else {
            HashKind::Rows {
                converter: key_converter(table)?,
                sum: 0,
            }
        };
        Ok(KeyHasher { kind, rows: 0 })
    }

    /// Add the rows of `batch` (its columns: the key columns, in the table's key order).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.kind {
            HashKind::Modular { s1, s2 } => {
                let keys = integer_keys(batch)?;
                // A batch of at most 2³² keys keeps both partial sums within i64.
                let (mut a, mut b) = (0i64, 0i64);
                for k in keys.iter().flatten() {
                    let r = k % KEY_MODULUS;
                    a += r;
                    b += r * r % KEY_MODULUS;
                }
                *s1 += i128::from(a);
                *s2 += i128::from(b);
            }
            HashKind::Rows { converter, sum } => {
                let rows = converter.convert_columns(batch.columns())?;
                for row in rows.iter() {
                    // SipHash with fixed keys: the same in every process of one build, which is all
                    // a comparison within one run needs.
                    let mut h = std::hash::DefaultHasher::new();
                    h.write(row.as_ref());
                    *sum = sum.wrapping_add(h.finish());
                }
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The fingerprint so far.
    pub fn finish(&self) -> KeyFingerprint {
        match &self.kind {
            HashKind::Modular { s1, s2 } => KeyFingerprint::from_modular_sums(self.rows, *s1, *s2),
            HashKind::Rows { sum, .. } => KeyFingerprint {
                rows: self.rows,
                checksum: *sum,
            },
        }
    }
}

/// A table's keys gathered to count those held more than once: sorted, not hashed, so the memory is
/// the keys themselves (8 bytes each for an integer key).
#[derive(Debug)]
pub struct KeyList {
    kind: ListKind,
}

#[derive(Debug)]
enum ListKind {
    Integers(Vec<i64>),
    Rows {
        converter: RowConverter,
        keys: Vec<Box<[u8]>>,
    },
}

impl KeyList {
    /// An empty list for `table`'s keys.
    pub fn new(table: &Table) -> Result<KeyList> {
        let kind = if has_integer_key(table) {
            ListKind::Integers(Vec::new())
        } else {
            ListKind::Rows {
                converter: key_converter(table)?,
                keys: Vec::new(),
            }
        };
        Ok(KeyList { kind })
    }

    /// Add the keys of `batch` (its columns: the key columns, in key order).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.kind {
            ListKind::Integers(keys) => {
                let column = integer_keys(batch)?;
                keys.extend(column.iter().flatten());
            }
            ListKind::Rows { converter, keys } => {
                let rows = converter.convert_columns(batch.columns())?;
                keys.extend(rows.iter().map(|r| Box::from(r.as_ref())));
            }
        }
        Ok(())
    }

    /// How many distinct keys were added more than once.
    pub fn held_more_than_once(mut self) -> u64 {
        fn repeated<T: Ord>(keys: &mut [T]) -> u64 {
            keys.sort_unstable();
            keys.chunk_by(|a, b| a == b)
                .filter(|run| run.len() > 1)
                .count() as u64
        }
        match &mut self.kind {
            ListKind::Integers(keys) => repeated(keys),
            ListKind::Rows { keys, .. } => repeated(keys),
        }
    }
}

/// The one key column of a batch of an integer-keyed table.
fn integer_keys(batch: &RecordBatch) -> Result<&Int64Array> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::SchemaMismatch {
            table: "key".into(),
            detail: format!("an integer key, got {}", batch.column(0).data_type()),
        })
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

/// A table's keys, each with a value: one integer key held as the integer itself, any other key as
/// the row-format bytes of its columns. One type under [`KeySet`] and [`KeyVersions`].
#[derive(Debug)]
enum KeyMap<V> {
    /// One BIGINT key column (`None`: a null key, equal only to another null, as in row format).
    Integers(datafusion::common::HashMap<Option<i64>, V>),
    /// Any other key.
    Rows {
        converter: RowConverter,
        keys: datafusion::common::HashMap<Box<[u8]>, V>,
    },
}

impl<V> KeyMap<V> {
    fn new(table: &Table) -> Result<KeyMap<V>> {
        Ok(if has_integer_key(table) {
            KeyMap::Integers(Default::default())
        } else {
            KeyMap::Rows {
                converter: key_converter(table)?,
                keys: Default::default(),
            }
        })
    }

    /// Add each row of `batch` (key columns, in key order) with `value(row)`; a key added again takes
    /// the later value.
    fn insert(&mut self, batch: &RecordBatch, value: impl Fn(usize) -> V) -> Result<()> {
        match self {
            KeyMap::Integers(keys) => {
                keys.reserve(batch.num_rows());
                for (i, k) in integer_keys(batch)?.iter().enumerate() {
                    keys.insert(k, value(i));
                }
            }
            KeyMap::Rows { converter, keys } => {
                let rows = converter.convert_columns(batch.columns())?;
                for (i, row) in rows.iter().enumerate() {
                    keys.insert(Box::from(row.as_ref()), value(i));
                }
            }
        }
        Ok(())
    }

    /// For each row of `batch` (key columns, in key order): `found(row, value)` with the key's value
    /// (`None`: not in the map).
    fn lookup<T>(
        &self,
        batch: &RecordBatch,
        found: impl Fn(usize, Option<&V>) -> T,
    ) -> Result<Vec<T>> {
        Ok(match self {
            KeyMap::Integers(keys) => integer_keys(batch)?
                .iter()
                .enumerate()
                .map(|(i, k)| found(i, keys.get(&k)))
                .collect(),
            KeyMap::Rows { converter, keys } => {
                let rows = converter.convert_columns(batch.columns())?;
                rows.iter()
                    .enumerate()
                    .map(|(i, row)| found(i, keys.get(row.as_ref())))
                    .collect()
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            KeyMap::Integers(keys) => keys.len(),
            KeyMap::Rows { keys, .. } => keys.len(),
        }
    }

    /// The smallest and the largest key, for a map of integer keys with no null key and at least one.
    fn integer_range(&self) -> Option<(i64, i64)> {
        let KeyMap::Integers(keys) = self else {
            return None;
        };
        keys.keys().try_fold(None, |range, key| {
            let k = (*key)?;
            Some(Some(match range {
                None => (k, k),
                Some((lo, hi)) => (k.min(lo), k.max(hi)),
            }))
        })?
    }
}

/// A set of a table's keys, for upserts and deletes by key.
#[derive(Debug)]
pub struct KeySet {
    keys: KeyMap<()>,
}

impl KeySet {
    /// An empty set for `table`'s keys.
    pub fn new(table: &Table) -> Result<KeySet> {
        Ok(KeySet {
            keys: KeyMap::new(table)?,
        })
    }

    /// Add the keys of `batch` (its columns: the key columns, in key order).
    pub fn insert(&mut self, batch: &RecordBatch) -> Result<()> {
        self.keys.insert(batch, |_| ())
    }

    /// For each row of `batch` (key columns, in key order): is its key in the set?
    pub fn contains(&self, batch: &RecordBatch) -> Result<arrow::array::BooleanArray> {
        Ok(self
            .keys
            .lookup(batch, |_, found| Some(found.is_some()))?
            .into())
    }

    /// Keys in the set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The smallest and the largest key, when the key is one integer and the set holds some (and no
    /// null key): no key outside lies in the set.
    pub fn integer_range(&self) -> Option<(i64, i64)> {
        self.keys.integer_range()
    }
}

/// The keys an incremental run read, each with the `updated_at` it was read with: what decides whether
/// a stored row is an older version (dropped) or the very row read again inside the overlap window
/// (kept where it is).
#[derive(Debug)]
pub struct KeyVersions {
    keys: KeyMap<Option<i64>>,
}

impl KeyVersions {
    /// An empty set for `table`'s keys.
    pub fn new(table: &Table) -> Result<KeyVersions> {
        Ok(KeyVersions {
            keys: KeyMap::new(table)?,
        })
    }

    /// Add the keys of `keys` (key columns, in key order) with the matching `updated_at` values
    /// (microseconds; `None`: the table has none).
    pub fn insert(
        &mut self,
        keys: &RecordBatch,
        versions: Option<&arrow::array::TimestampMicrosecondArray>,
    ) -> Result<()> {
        self.keys.insert(keys, |i| version_at(versions, i))
    }

    /// For each row of `keys` (key columns, in key order) stored with `versions`: is it in the set,
    /// and if so, was it read with the same `updated_at` (`Some(true)`: the same row, unchanged)?
    /// A missing `updated_at` on either side never counts as the same.
    pub fn compare(
        &self,
        keys: &RecordBatch,
        versions: Option<&arrow::array::TimestampMicrosecondArray>,
    ) -> Result<Vec<Option<bool>>> {
        self.keys.lookup(keys, |i, read| {
            read.map(|read| read.is_some() && *read == version_at(versions, i))
        })
    }

    /// Keys read.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As [`KeySet::integer_range`].
    pub fn integer_range(&self) -> Option<(i64, i64)> {
        self.keys.integer_range()
    }
}

/// Row `i`'s `updated_at` in `versions` (`None`: null, or the table has none).
fn version_at(versions: Option<&arrow::array::TimestampMicrosecondArray>, i: usize) -> Option<i64> {
    versions.and_then(|v| v.is_valid(i).then(|| v.value(i)))
}

/// The `updated_at` of each row of `batch` (holding at least `table`'s cursor column), when the table
/// has a cursor.
pub fn row_versions<'a>(
    table: &Table,
    batch: &'a RecordBatch,
) -> Result<Option<&'a arrow::array::TimestampMicrosecondArray>> {
    let Some(c) = table.cursor else {
        return Ok(None);
    };
    Ok(batch
        .column(batch.schema().index_of(c)?)
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(keys: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys.to_vec()))])
            .expect("test data is well formed")
    }

    fn fingerprint(chunks: &[&[i64]]) -> KeyFingerprint {
        let table = crate::model::table("interactions").expect("a table");
        assert!(has_integer_key(table));
        let mut h = KeyHasher::new(table).expect("test data is well formed");
        for c in chunks {
            h.add(&batch(c)).expect("test data is well formed");
        }
        h.finish()
    }

    /// The definition, computed the slow way: exact sums in i128, residues as SQL's `%` gives them.
    fn by_definition(keys: &[i64]) -> KeyFingerprint {
        let m = i128::from(KEY_MODULUS);
        let s1: i128 = keys.iter().map(|&k| i128::from(k) % m).sum();
        let s2: i128 = keys
            .iter()
            .map(|&k| (i128::from(k) % m) * (i128::from(k) % m) % m)
            .sum();
        KeyFingerprint {
            rows: keys.len() as u64,
            checksum: ((s1.rem_euclid(m) as u64) << 32) | s2.rem_euclid(m) as u64,
        }
    }

    #[test]
    fn integer_key_checksum_is_the_power_sums_in_any_order_and_batching() {
        let keys: Vec<i64> = (0..5000)
            .map(|i: i64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64) >> 3)
            .chain([0, -1, KEY_MODULUS, -KEY_MODULUS - 5, i64::MAX, i64::MIN + 1])
            .collect();
        let whole = fingerprint(&[&keys]);
        assert_eq!(whole, by_definition(&keys));
        let mut reversed = keys.clone();
        reversed.reverse();
        let (a, b) = reversed.split_at(1234);
        assert_eq!(fingerprint(&[a, &[], b]), whole);
        // As a source database returns it: sums reduced (with SQL's sign) but congruent.
        let m = i128::from(KEY_MODULUS);
        let s1: i128 = keys.iter().map(|&k| i128::from(k % KEY_MODULUS)).sum();
        let s2: i128 = keys
            .iter()
            .map(|&k| i128::from((k % KEY_MODULUS) * (k % KEY_MODULUS) % KEY_MODULUS))
            .sum();
        assert_eq!(
            KeyFingerprint::from_modular_sums(keys.len() as u64, s1 % m, s2 % m),
            whole
        );
    }

    #[test]
    fn integer_key_checksum_sees_a_swapped_or_duplicated_key() {
        let base: Vec<i64> = (1..=1000).collect();
        let whole = fingerprint(&[&base]);
        // One key replaced by another: same count.
        let mut swapped = base.clone();
        swapped[10] = 5000;
        assert_ne!(fingerprint(&[&swapped]), whole);
        // One key held twice instead of another.
        let mut doubled = base.clone();
        doubled[10] = doubled[11];
        assert_ne!(fingerprint(&[&doubled]), whole);
        // Two keys replaced by two others with the same sum: the squares differ.
        let mut pair = base.clone();
        pair[0] = 0; // 1 → 0
        pair[1] = 3; // 2 → 3: the sum is kept
        assert_ne!(fingerprint(&[&pair]), whole);
    }

    #[test]
    fn integer_and_row_format_key_maps_agree_with_a_brute_force_set() {
        let table = crate::model::table("interactions").expect("a table");
        let integers: KeyMap<Option<i64>> = KeyMap::new(table).expect("a map");
        assert!(matches!(integers, KeyMap::Integers(_)));
        let rows: KeyMap<Option<i64>> = KeyMap::Rows {
            converter: key_converter(table).expect("a converter"),
            keys: Default::default(),
        };
        let nullable = |keys: Vec<Option<i64>>| {
            let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys))])
                .expect("test data is well formed")
        };
        let mut next = 0x2545_F491_4F6C_DD1D_u64;
        let mut draw = move || {
            next ^= next << 13;
            next ^= next >> 7;
            next ^= next << 17;
            next
        };
        let mut expected = std::collections::HashMap::new();
        let (mut a, mut b) = (integers, rows);
        for _ in 0..20 {
            let keys: Vec<Option<i64>> = (0..300)
                .map(|_| match draw() % 50 {
                    0 => None,
                    1 => Some(i64::MIN),
                    _ => Some((draw() % 2000) as i64 - 1000),
                })
                .collect();
            let versions: Vec<Option<i64>> = (0..keys.len())
                .map(|i| (draw() % 3 > 0).then_some(i as i64))
                .collect();
            for (k, v) in keys.iter().zip(&versions) {
                expected.insert(*k, *v);
            }
            let batch = nullable(keys);
            a.insert(&batch, |i| versions[i]).expect("insert");
            b.insert(&batch, |i| versions[i]).expect("insert");
        }
        assert_eq!(a.len(), expected.len());
        assert_eq!(b.len(), expected.len());
        let probe: Vec<Option<i64>> = (-1100..1100)
            .map(Some)
            .chain([None, Some(i64::MIN)])
            .collect();
        let want: Vec<Option<Option<i64>>> =
            probe.iter().map(|k| expected.get(k).copied()).collect();
        let probe = nullable(probe);
        assert_eq!(a.lookup(&probe, |_, v| v.copied()).expect("lookup"), want);
        assert_eq!(b.lookup(&probe, |_, v| v.copied()).expect("lookup"), want);
        // A null key among them: no range bounds every key.
        assert_eq!(a.integer_range(), None);
        assert_eq!(b.integer_range(), None);
        let mut set = KeySet::new(table).expect("a set");
        assert_eq!(set.integer_range(), None);
        set.insert(&batch(&[7, -3, 12, 7])).expect("insert");
        assert_eq!(set.integer_range(), Some((-3, 12)));
    }

    #[test]
    fn key_lists_count_each_key_held_more_than_once() {
        let table = crate::model::table("interactions").expect("a table");
        let mut list = KeyList::new(table).expect("test data is well formed");
        list.add(&batch(&[5, 3, 5, 9, 5]))
            .expect("test data is well formed");
        list.add(&batch(&[3, 1])).expect("test data is well formed");
        // 5 three times and 3 twice: two keys held more than once (as GROUP BY … HAVING COUNT(*) > 1).
        assert_eq!(list.held_more_than_once(), 2);
        let mut unique = KeyList::new(table).expect("test data is well formed");
        unique
            .add(&batch(&[4, 2, 8]))
            .expect("test data is well formed");
        assert_eq!(unique.held_more_than_once(), 0);
    }
}
