//! Positional delete vectors: rows of a data file that are no longer live, recorded in the snapshot
//! beside the file instead of rewriting it.
//!
//! An incremental ingest that updates or deletes 1% of a table's rows used to rewrite every file
//! holding one of them (copy-on-write) — at the demo's sizes the whole table. Now it records the
//! positions (0-based row numbers in the file, in write order) of the rows that went, in the
//! manifest's entry for the file; the manifest is authenticated, so a vector cannot be edited
//! unnoticed. Every reader of the lake goes through [`raw_provider`](crate::session), which hands
//! the complement to DataFusion's Parquet reader as a [`ParquetRowSelection`]: the deleted rows are
//! never decoded, for user sessions and the engine's own maintenance contexts alike. The reader
//! checks that the selection covers exactly the rows the file has, so a vector that does not fit its
//! file is an error, never a silently different answer. A file whose vector would cover more than
//! [`MAX_DELETED_SHARE`] of its rows is rewritten instead, which bounds a manifest's size; erasure
//! always rewrites (a person's rows must leave the disk, not only the answers).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::TableType;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A file whose deleted rows would pass this share of its rows is rewritten instead of given a
/// longer vector: a vector of 4 M rows' tenth is ~0.5 MB in the manifest at most.
pub const MAX_DELETED_SHARE: f64 = 0.1;

/// The deleted positions of one data file: sorted, each once.
#[derive(Clone, PartialEq, Eq)]
pub struct Deletions(Arc<[u64]>);

impl fmt::Debug for Deletions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deletions({} rows)", self.0.len())
    }
}

impl Deletions {
    /// The vector of `positions` (any order; repeats count once).
    pub fn new(mut positions: Vec<u64>) -> Deletions {
        positions.sort_unstable();
        positions.dedup();
        Deletions(positions.into())
    }

    /// Rows deleted.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Whether no row is deleted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The deleted positions, ascending.
    pub fn positions(&self) -> &[u64] {
        &self.0
    }

    /// This vector and `more` together.
    pub fn with(&self, more: &[u64]) -> Deletions {
        let mut all = self.0.to_vec();
        all.extend_from_slice(more);
        Deletions::new(all)
    }

    /// The rows a reader reads of a file of `rows` rows: every row but these. `None` when a position
    /// lies beyond the file (the vector does not belong to it).
    pub fn selection(&self, rows: u64) -> Option<RowSelection> {
        let mut selectors = Vec::new();
        let mut next = 0u64;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            if start >= rows {
                return None;
            }
            let mut end = start + 1;
            i += 1;
            while i < self.0.len() && self.0[i] == end {
                end += 1;
                i += 1;
            }
            if start > next {
                selectors.push(RowSelector::select((start - next) as usize));
            }
            selectors.push(RowSelector::skip((end - start) as usize));
            next = end;
        }
        if next > rows {
            return None;
        }
        if rows > next {
            selectors.push(RowSelector::select((rows - next) as usize));
        }
        Some(RowSelection::from(selectors))
    }

    /// As stored in a manifest: the gaps between positions (the first from −1) as LEB128 varints,
    /// base64. Random deletions of a tenth of a file take about a byte and a half per row.
    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.0.len() * 2);
        let mut previous = None::<u64>;
        for &p in self.0.iter() {
            let mut gap = match previous {
                None => p,
                Some(q) => p - q - 1,
            };
            previous = Some(p);
            loop {
                let low = (gap & 0x7f) as u8;
                gap >>= 7;
                if gap == 0 {
                    bytes.push(low);
                    break;
                }
                bytes.push(low | 0x80);
            }
        }
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Result<Deletions, String> {
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|e| format!("a delete vector is not base64: {e}"))?;
        let mut positions = Vec::new();
        let mut previous = None::<u64>;
        let mut iter = bytes.iter();
        while let Some(&first) = iter.next() {
            let mut gap = u64::from(first & 0x7f);
            let mut shift = 7;
            let mut byte = first;
            while byte & 0x80 != 0 {
                byte = *iter.next().ok_or("a delete vector ends inside a number")?;
                if shift > 63 {
                    return Err("a delete vector holds a number too large".into());
                }
                gap |= u64::from(byte & 0x7f) << shift;
                shift += 7;
            }
            let p = match previous {
                None => Some(gap),
                Some(q) => q.checked_add(gap).and_then(|v| v.checked_add(1)),
            }
            .ok_or("a delete vector holds a position too large")?;
            positions.push(p);
            previous = Some(p);
        }
        Ok(Deletions(positions.into()))
    }
}

impl Serialize for Deletions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Deletions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Deletions, D::Error> {
        let text = String::deserialize(deserializer)?;
        Deletions::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// A lake table some of whose files carry delete vectors: the table as DataFusion's listing table
/// reads it, each such file read without its deleted rows. Statistics are not offered (a footer's
/// row count includes deleted rows), and a limit is not handed on (the listing table would stop
/// listing files once their footers' row counts reach it).
#[derive(Debug)]
pub(crate) struct LiveRows {
    inner: Arc<dyn TableProvider>,
    /// Per file location: its vector and its rows as written.
    files: HashMap<String, (Deletions, u64)>,
}

impl LiveRows {
    pub(crate) fn new(
        inner: Arc<dyn TableProvider>,
        files: HashMap<String, (Deletions, u64)>,
    ) -> LiveRows {
        LiveRows { inner, files }
    }
}

#[async_trait]
impl TableProvider for LiveRows {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, None).await?;
        without_deleted_rows(plan, &self.files)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}

/// `plan` with every Parquet scan of a file in `files` reading only its live rows, and the scans'
/// statistics marked inexact. A plan with files to patch but no Parquet scan is an error.
fn without_deleted_rows(
    plan: Arc<dyn ExecutionPlan>,
    files: &HashMap<String, (Deletions, u64)>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::datasource::physical_plan::ParquetSource;
    let mut scans = 0;
    let plan = plan
        .transform_up(|node| {
            let Some(exec) = (node.as_ref() as &dyn std::any::Any).downcast_ref::<DataSourceExec>()
            else {
                return Ok(Transformed::no(node));
            };
            let Some((conf, _)) = exec.downcast_to_file_source::<ParquetSource>() else {
                return Ok(Transformed::no(node));
            };
            scans += 1;
            let mut groups = Vec::with_capacity(conf.file_groups.len());
            for group in &conf.file_groups {
                let mut out = Vec::with_capacity(group.len());
                for file in group.iter() {
                    let mut file = file.clone();
                    if let Some((deleted, rows)) = files.get(file.object_meta.location.as_ref()) {
                        let selection = deleted.selection(*rows).ok_or_else(|| {
                            datafusion::error::DataFusionError::Execution(format!(
                                "the delete vector of {} names rows beyond its {rows} rows",
                                file.object_meta.location
                            ))
                        })?;
                        file = file.with_extension(ParquetRowSelection::new(selection));
                        file.statistics =
                            file.statistics.map(|s| Arc::new((*s).clone().to_inexact()));
                    }
                    out.push(file);
                }
                groups.push(FileGroup::new(out));
            }
            let conf = FileScanConfigBuilder::from(conf.clone())
                .with_statistics(conf.statistics().to_inexact())
                .with_file_groups(groups)
                .build();
            Ok(Transformed::yes(
                DataSourceExec::from_data_source(conf) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data;
    let empty = (plan.as_ref() as &dyn std::any::Any)
        .downcast_ref::<datafusion::physical_plan::empty::EmptyExec>()
        .is_some();
    if scans == 0 && !empty {
        return Err(datafusion::error::DataFusionError::Internal(
            "a table with deleted rows was planned without a Parquet scan to hide them from".into(),
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected(selection: &RowSelection, rows: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for s in selection.iter() {
            if !s.skip {
                out.extend(at..at + s.row_count as u64);
            }
            at += s.row_count as u64;
        }
        assert_eq!(at, rows, "a selection covers every row of the file");
        out
    }

    #[test]
    fn a_selection_reads_exactly_the_rows_not_deleted() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..200 {
            let rows = 1 + random() % 300;
            let positions: Vec<u64> = (0..random() % (rows + 2))
                .map(|_| random() % rows)
                .collect();
            let deleted = Deletions::new(positions.clone());
            // Brute force: every row, minus the positions.
            let expected: Vec<u64> = (0..rows).filter(|r| !positions.contains(r)).collect();
            let selection = deleted.selection(rows).expect("positions within the file");
            assert_eq!(selected(&selection, rows), expected, "case {case}");
            // The manifest's text form gives back the same vector.
            let text = serde_json::to_string(&deleted).expect("serialises");
            let back: Deletions = serde_json::from_str(&text).expect("parses");
            assert_eq!(back, deleted, "case {case}");
            assert_eq!(back.len() as usize, expected.len().abs_diff(rows as usize));
        }
    }

    #[test]
    fn a_vector_beyond_its_file_or_malformed_is_refused() {
        assert!(Deletions::new(vec![3, 10]).selection(10).is_none());
        assert!(Deletions::new(vec![3, 9]).selection(10).is_some());
        assert!(
            serde_json::from_str::<Deletions>("\"gA\"").is_err(),
            "ends inside a number"
        );
        assert!(
            serde_json::from_str::<Deletions>("\"***\"").is_err(),
            "not base64"
        );
        let huge = base64::engine::general_purpose::STANDARD_NO_PAD.encode([0xffu8; 11]);
        assert!(serde_json::from_str::<Deletions>(&format!("\"{huge}\"")).is_err());
    }

    #[test]
    fn vectors_merge_and_large_positions_survive_the_text_form() {
        let d = Deletions::new(vec![5, 1, 5, u64::MAX / 2]).with(&[0, 2]);
        assert_eq!(d.positions(), &[0, 1, 2, 5, u64::MAX / 2]);
        let back: Deletions =
            serde_json::from_str(&serde_json::to_string(&d).expect("json")).expect("parses");
        assert_eq!(back, d);
        assert_eq!(format!("{d:?}"), "Deletions(5 rows)");
    }
}
