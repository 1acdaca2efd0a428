//! `percentile_exact(x, p)`: the exact continuous percentile of a group, an aggregate in every session.
//!
//! The catalog's medians and p90s are defined (metrics.md) as exact, interpolated linearly at
//! `p·(n−1)` between the neighbouring values in ascending order — the definition of PostgreSQL's and
//! DuckDB's `percentile_cont`/`quantile_cont`. DataFusion 55's `percentile_cont` truncates the fraction
//! to six digits and `approx_percentile_cont` is approximate, so the catalog computed them with
//! `ROW_NUMBER`/`COUNT` windows: a sort and two window passes per partition, the heaviest part of
//! `response_time`, `time_in_stage` and `manager_scorecard`. This aggregate keeps each group's values
//! and sorts them once at the end. NULLs are ignored; a group without values gives NULL; `p` must be a
//! literal in [0, 1].

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// The aggregate's SQL name.
pub const NAME: &str = "percentile_exact";

/// The UDAF (see the module documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PercentileExact {
    signature: Signature,
}

impl PercentileExact {
    fn new() -> PercentileExact {
        PercentileExact {
            // Any numbers, coerced to double: the values and the percentile.
            signature: Signature::uniform(2, vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

/// Register `percentile_exact` in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(PercentileExact::new()));
}

impl AggregateUDFImpl for PercentileExact {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "values"),
            DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let Some(p) = args.exprs.get(1) else {
            return plan_err!("{NAME}(x, p) takes two arguments");
        };
        let empty =
            arrow::array::RecordBatch::new_empty(Arc::new(arrow::datatypes::Schema::empty()));
        let p = match p.evaluate(&empty) {
            Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(p)))) => p,
            _ => return plan_err!("{NAME}(x, p): p must be a number literal"),
        };
        if !(0.0..=1.0).contains(&p) {
            return plan_err!("{NAME}(x, p): p must be between 0 and 1, not {p}");
        }
        Ok(Box::new(Values {
            p,
            values: Vec::new(),
        }))
    }
}

/// One group's values.
#[derive(Debug)]
struct Values {
    p: f64,
    values: Vec<f64>,
}

impl Values {
    fn extend(&mut self, array: &ArrayRef) -> Result<()> {
        let array = arrow::compute::cast(array, &DataType::Float64)?;
        let array = array.as_primitive::<Float64Type>();
        if array.null_count() == 0 {
            self.values.extend_from_slice(array.values());
        } else {
            self.values.extend(array.iter().flatten());
        }
        Ok(())
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.extend(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for list in lists.iter().flatten() {
            self.extend(&list)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = Float64Array::from(std::mem::take(&mut self.values));
        let list = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::from_lengths([values.len()]),
            Arc::new(values),
            None,
        );
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(percentile(&mut self.values, self.p)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

/// The exact continuous percentile `p` of `values` (reordered): linear interpolation at `p·(n−1)`.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = p * (values.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    // Only the two neighbours need their place: select, not sort.
    let (_, &mut low, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let high = if hi == lo {
        low
    } else {
        above.iter().copied().min_by(f64::total_cmp).unwrap_or(low)
    };
    Some(low + (high - low) * (rank - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by sorting.
    fn by_sort(values: &[f64], p: f64) -> Option<f64> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return None;
        }
        let rank = p * (v.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
    }

    #[test]
    fn selection_agrees_with_sorting() {
        let mut seed = 7u64;
        for n in 0..60 {
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) % 1000) as f64 / 7.0
                })
                .collect();
            for p in [0.0, 0.1, 0.5, 0.9, 0.999, 1.0] {
                assert_eq!(
                    percentile(&mut values.clone(), p),
                    by_sort(&values, p),
                    "{n} {p}"
                );
            }
        }
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(percentile(&mut [10.0, 0.0], 0.9), Some(9.0));
    }

    #[tokio::test]
    async fn the_aggregate_matches_the_window_formula_the_catalog_used() {
        let ctx = SessionContext::new();
        register(&ctx);
        let sql = "WITH v(g, x) AS (VALUES (1, 3.0), (1, 1.0), (1, NULL), (1, 10.0), (1, 4.0), \
                   (2, 5.0), (3, NULL)) \
                   SELECT g, percentile_exact(x, 0.5) AS m, percentile_exact(x, 0.9) AS p90 \
                   FROM v GROUP BY g ORDER BY g";
        let batches = ctx
            .sql(sql)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let m = batches[0].column(1).as_primitive::<Float64Type>();
        let p90 = batches[0].column(2).as_primitive::<Float64Type>();
        // Group 1: 1, 3, 4, 10 → median 3.5; p90 at 2.7 → 4 + 0.7 × 6 = 8.2.
        assert_eq!(m.value(0), 3.5);
        assert!((p90.value(0) - 8.2).abs() < 1e-12);
        assert_eq!((m.value(1), p90.value(1)), (5.0, 5.0));
        assert!(m.is_null(2) && p90.is_null(2));
        let err = ctx
            .sql("SELECT percentile_exact(x, 1.5) FROM (VALUES (1.0)) v(x)")
            .await
            .expect("plans")
            .collect()
            .await
            .expect_err("p out of range");
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
    }
}
