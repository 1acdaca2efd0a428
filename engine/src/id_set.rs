//! `column IN (ids)` for the long id lists of a principal's scope (a manager's clients and deals).
//!
//! DataFusion keeps an `IN` list as one literal child expression per value. Every rewrite of a physical
//! expression tree — and the Parquet opener rewrites a scan's predicate for each file it opens
//! (simplification, casts, literal guarantees) — then walks, clones and hashes every value: with a
//! manager's ~10 000 deals that was 27 ms of opening per file of `deal_stage_changes`, in a query that
//! read no row of it. [`in_ids`] keeps a short list as an `IN` list (DataFusion prunes row groups with
//! lists of up to 20 values) and turns a longer one into one function of the column over a hash set,
//! built once: a rewrite sees one child, and the answer is the same, NULL for a NULL id included.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{HashSet, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

/// The longest list kept as an `IN` list: DataFusion's pruning rewrites lists up to this length into
/// min/max checks (`datafusion_pruning::MAX_IN_LIST_SIZE`), and no longer ones.
const PRUNABLE: usize = 20;

/// `column IN (ids)`, named `scope_<what>` where it is a set (`scope_deals(deal_id)` in a plan, which
/// shows the ids of neither).
pub(crate) fn in_ids(column: Expr, what: &'static str, ids: &[i64]) -> Expr {
    if ids.is_empty() {
        return lit(false);
    }
    if ids.len() <= PRUNABLE {
        return Expr::InList(InList::new(
            Box::new(column),
            ids.iter().map(|&i| lit(i)).collect(),
            false,
        ));
    }
    ScalarUDF::from(IdSet {
        signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        name: format!("scope_{what}"),
        ids: Arc::new(ids.iter().copied().collect()),
    })
    .call(vec![column])
}

/// Membership in a fixed set of BIGINT ids.
struct IdSet {
    signature: Signature,
    name: String,
    ids: Arc<HashSet<i64>>,
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ids are a principal's clients: not for logs.
        f.debug_struct("IdSet")
            .field("name", &self.name)
            .field("ids", &self.ids.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for IdSet {
    fn eq(&self, other: &IdSet) -> bool {
        self.name == other.name && (Arc::ptr_eq(&self.ids, &other.ids) || self.ids == other.ids)
    }
}

impl Eq for IdSet {}

impl Hash for IdSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.ids.len().hash(state);
    }
}

impl ScalarUDFImpl for IdSet {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.as_slice() {
            [ColumnarValue::Scalar(ScalarValue::Int64(id))] => Ok(ColumnarValue::Scalar(
                ScalarValue::Boolean(id.map(|id| self.ids.contains(&id))),
            )),
            [ColumnarValue::Array(array)] => {
                let Some(ids) = array.as_primitive_opt::<Int64Type>() else {
                    return exec_err!("{} takes a BIGINT, got {}", self.name, array.data_type());
                };
                let values = ids.values();
                let found =
                    BooleanBuffer::collect_bool(ids.len(), |i| self.ids.contains(&values[i]));
                Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
                    found,
                    ids.nulls().cloned(),
                ))))
            }
            other => exec_err!("{} takes one BIGINT, got {other:?}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::when;
    use datafusion::prelude::{SessionContext, col};
    use rand::{Rng, SeedableRng};

    /// The set and DataFusion's own `IN` list give the same answer on every row — true, false or NULL
    /// (a NULL id) — in a filter, in a `CASE` (how a masked column uses it), and under `NOT`, for lists
    /// on both sides of the length where the set takes over.
    #[tokio::test]
    async fn a_set_answers_as_the_in_list_it_replaces() -> Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let ids: Vec<Option<i64>> = (0..20_000)
            .map(|_| rng.random_bool(0.95).then(|| rng.random_range(-50..5_000)))
            .chain([Some(i64::MIN), Some(i64::MAX), None])
            .collect();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(ids.clone()))],
        )?;
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch)?;
        let answer = |e: Expr| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx
                    .table("t")
                    .await?
                    .select(vec![e.alias("a")])?
                    .collect()
                    .await?;
                Ok::<_, datafusion::error::DataFusionError>(arrow::compute::concat_batches(
                    &batches[0].schema(),
                    &batches,
                )?)
            }
        };
        for n in [1, PRUNABLE, PRUNABLE + 1, 700, 4_000] {
            let mut scope: Vec<i64> = (0..n).map(|_| rng.random_range(-50..5_000)).collect();
            scope.push(i64::MAX);
            scope.sort_unstable();
            scope.dedup();
            let list = Expr::InList(InList::new(
                Box::new(col("id")),
                scope.iter().map(|&i| lit(i)).collect(),
                false,
            ));
            let ours = in_ids(col("id"), "test", &scope);
            assert_eq!(
                matches!(ours, Expr::ScalarFunction(_)),
                scope.len() > PRUNABLE,
                "{n} ids"
            );
            let masked = |cond: Expr| when(cond, col("id")).otherwise(lit(-1));
            for (theirs, mine) in [
                (list.clone(), ours.clone()),
                (masked(list.clone())?, masked(ours.clone())?),
                (!list.clone(), !ours.clone()),
            ] {
                assert_eq!(answer(theirs).await?, answer(mine).await?, "{n} ids");
            }
            // And as a filter: the rows kept, checked against the list by hand.
            let kept = ctx.table("t").await?.filter(ours)?.count().await?;
            let expected = ids
                .iter()
                .filter(|i| i.is_some_and(|i| scope.binary_search(&i).is_ok()))
                .count();
            assert_eq!(kept, expected, "{n} ids");
        }
        assert_eq!(in_ids(col("id"), "test", &[]), lit(false));
        Ok(())
    }
}
