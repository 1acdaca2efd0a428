//! Functions whose output size is set by their arguments, bounded by what they would produce.
//!
//! `repeat`, `lpad`, `replace`, `array_resize`, `range`… allocate their whole result outside
//! DataFusion's memory pool, sized by argument values: `repeat(repeat('x', 100000), 20000)` asks
//! for 2 GB, and under a memory cap the allocation aborts the process — every user and job of a
//! server with it. Checking literal arguments is not enough (the inner `repeat` makes the outer one's
//! input long), so each such function is replaced in every session by a wrapper that computes, from
//! the actual argument values of the batch, an upper bound of the bytes the call would produce and
//! refuses the call above [`MAX_GENERATED_BYTES`] before anything is allocated.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNano};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

use crate::error::Error;

/// The most one call of a sized function may produce for one batch, in bytes.
pub(crate) const MAX_GENERATED_BYTES: u128 = 64 << 20;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters.
    Pad,
    /// `overlay(s placing t …)`: `len(s) + len(t)`.
    Overlay,
    /// `replace(s, from, to)`: every occurrence of `from` (between every character when empty).
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: a match at every position, each
    /// replacement as long as its text plus the subject per back-reference.
    RegexpReplace,
    /// `array_repeat(x, n)`: `n` elements.
    ArrayRepeat,
    /// `array_resize(a, n [, v])`: `n` elements.
    ArrayResize,
    /// `range(start, stop [, step])`, `generate_series`: `(stop − start) / step` elements.
    Range,
}

const SIZED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("overlay", Growth::Overlay),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
];

/// Replace every sized function registered in `ctx` by its bounded wrapper.
pub(crate) fn register(ctx: &SessionContext) {
    let state = ctx.state();
    for (name, growth) in SIZED {
        if let Some(inner) = state.scalar_functions().get(*name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: Arc::clone(inner),
                growth: *growth,
            }));
        }
    }
}

/// Is `e` a refusal by a bounded function (possibly wrapped by the operators above it)?
pub(crate) fn is_refusal(e: &DataFusionError) -> bool {
    e.to_string().contains(REFUSAL_MARK)
}

const REFUSAL_MARK: &str = "one function call may produce";

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = bound(self.growth, &args.args, args.number_rows);
        if bytes > MAX_GENERATED_BYTES {
            let e = Error::LimitExceeded(format!(
                "{}() would produce up to {} MB here, more than the {} MB {REFUSAL_MARK} \
                 (it allocates outside the query's memory share); use shorter lengths or fewer rows",
                self.name(),
                bytes >> 20,
                MAX_GENERATED_BYTES >> 20
            ));
            return Err(DataFusionError::External(Box::new(e)));
        }
        self.inner.inner().invoke_with_args(args)
    }
}

/// Upper bound of the bytes a call produces for one batch: the sum over rows of each row's bound
/// (one row when every argument is a scalar).
fn bound(growth: Growth, args: &[ColumnarValue], number_rows: usize) -> u128 {
    let rows = if args.iter().any(|a| matches!(a, ColumnarValue::Array(_))) {
        number_rows
    } else {
        1
    };
    let ints: Vec<Option<ArrayRef>> = args.iter().map(as_int64).collect();
    let len = |i: usize, row: usize| -> u128 { args.get(i).map_or(0, |a| byte_len(a, row)) };
    let int = |i: usize, row: usize| -> u128 {
        match ints.get(i).and_then(Option::as_ref) {
            Some(a) => {
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                let row = if a.len() == 1 { 0 } else { row };
                if a.is_null(row) {
                    0
                } else {
                    a.value(row).max(0) as u128
                }
            }
            None => 0,
        }
    };
    let mut total: u128 = 0;
    for row in 0..rows {
        let one = match growth {
            Growth::Repeat => len(0, row).saturating_mul(int(1, row)),
            Growth::Pad => int(1, row).saturating_mul(4) + len(0, row),
            Growth::Overlay => len(0, row) + len(1, row),
            Growth::Replace => {
                let (s, from, to) = (len(0, row), len(1, row), len(2, row));
                let matches = s.checked_div(from).map_or(s + 1, |m| m + 1);
                s + matches.saturating_mul(to)
            }
            Growth::RegexpReplace => {
                let s = len(0, row);
                let refs = args.get(2).map_or(0, |a| back_references(a, row));
                let each = len(2, row) + refs.saturating_mul(s);
                s + (s + 1).saturating_mul(each)
            }
            Growth::ArrayRepeat => int(1, row).saturating_mul(16 + len(0, row)),
            Growth::ArrayResize => int(1, row).saturating_mul(16 + len(2, row)),
            Growth::Range => range_len(args, row).saturating_mul(16),
        };
        total = total.saturating_add(one);
        if total > MAX_GENERATED_BYTES {
            break;
        }
    }
    total
}

/// The argument as one Int64 array (a scalar as one value), when it is a whole number.
fn as_int64(arg: &ColumnarValue) -> Option<ArrayRef> {
    let array = match arg {
        ColumnarValue::Array(a) => Arc::clone(a),
        ColumnarValue::Scalar(s) => s.to_array().ok()?,
    };
    if !array.data_type().is_integer() {
        return None;
    }
    arrow::compute::cast(&array, &DataType::Int64).ok()
}

fn value_at(arg: &ColumnarValue, row: usize) -> Option<ScalarValue> {
    match arg {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) if row < a.len() => ScalarValue::try_from_array(a, row).ok(),
        ColumnarValue::Array(_) => None,
    }
}

/// Bytes of a text or binary value, elements of a list (16 bytes each) — 8 for anything else.
fn byte_len(arg: &ColumnarValue, row: usize) -> u128 {
    match arg {
        ColumnarValue::Scalar(s) => scalar_len(s),
        ColumnarValue::Array(a) => {
            let row = if a.len() == 1 { 0 } else { row };
            if row >= a.len() || a.is_null(row) {
                return 0;
            }
            match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(row).len() as u128,
                DataType::LargeUtf8 => a.as_string::<i64>().value(row).len() as u128,
                DataType::Utf8View => a.as_string_view().value(row).len() as u128,
                DataType::Binary => a.as_binary::<i32>().value(row).len() as u128,
                DataType::LargeBinary => a.as_binary::<i64>().value(row).len() as u128,
                DataType::BinaryView => a.as_binary_view().value(row).len() as u128,
                DataType::List(_) => a.as_list::<i32>().value(row).len() as u128 * 16,
                DataType::LargeList(_) => a.as_list::<i64>().value(row).len() as u128 * 16,
                _ => 8,
            }
        }
    }
}

fn scalar_len(s: &ScalarValue) -> u128 {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            v.as_ref().map_or(0, |t| t.len() as u128)
        }
        ScalarValue::Binary(v) | ScalarValue::LargeBinary(v) | ScalarValue::BinaryView(v) => {
            v.as_ref().map_or(0, |t| t.len() as u128)
        }
        ScalarValue::List(a) => a.values().len() as u128 * 16,
        ScalarValue::LargeList(a) => a.values().len() as u128 * 16,
        _ => 8,
    }
}

/// Back-references (`$1`, `\1`, `${name}`) in a replacement text: each may insert the whole subject.
fn back_references(arg: &ColumnarValue, row: usize) -> u128 {
    let text = match value_at(arg, row) {
        Some(ScalarValue::Utf8(Some(t)))
        | Some(ScalarValue::LargeUtf8(Some(t)))
        | Some(ScalarValue::Utf8View(Some(t))) => t,
        _ => return 0,
    };
    text.matches(['$', '\\']).count() as u128
}

/// Elements of `range(start, stop [, step])` / `range(stop)` for whole numbers, dates and
/// timestamps (steps as intervals).
fn range_len(args: &[ColumnarValue], row: usize) -> u128 {
    let values: Vec<Option<ScalarValue>> = args.iter().map(|a| value_at(a, row)).collect();
    let point = |v: &Option<ScalarValue>| -> Option<i128> {
        Some(match v.as_ref()? {
            ScalarValue::Date32(Some(d)) => *d as i128 * 86_400_000_000_000,
            ScalarValue::Date64(Some(ms)) => *ms as i128 * 1_000_000,
            ScalarValue::TimestampSecond(Some(t), _) => *t as i128 * 1_000_000_000,
            ScalarValue::TimestampMillisecond(Some(t), _) => *t as i128 * 1_000_000,
            ScalarValue::TimestampMicrosecond(Some(t), _) => *t as i128 * 1_000,
            ScalarValue::TimestampNanosecond(Some(t), _) => *t as i128,
            other => match other.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(Some(n)) => n as i128,
                _ => return None,
            },
        })
    };
    let step = |v: &Option<ScalarValue>| -> Option<i128> {
        Some(match v.as_ref()? {
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
                months,
                days,
                nanoseconds,
            })) => {
                *months as i128 * 28 * 86_400_000_000_000
                    + *days as i128 * 86_400_000_000_000
                    + *nanoseconds as i128
            }
            ScalarValue::IntervalDayTime(Some(v)) => {
                v.days as i128 * 86_400_000_000_000 + v.milliseconds as i128 * 1_000_000
            }
            ScalarValue::IntervalYearMonth(Some(m)) => *m as i128 * 28 * 86_400_000_000_000,
            other => match other.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(Some(n)) => n as i128,
                _ => return None,
            },
        })
    };
    let temporal = values.first().is_some_and(|v| {
        v.as_ref().is_some_and(|v| {
            matches!(
                v.data_type(),
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
            )
        })
    });
    let (start, stop, by) = match values.len() {
        1 => (Some(0), point(&values[0]), Some(1)),
        2 => (
            point(&values[0]),
            point(&values[1]),
            Some(if temporal { 86_400_000_000_000 } else { 1 }),
        ),
        _ => (point(&values[0]), point(&values[1]), step(&values[2])),
    };
    match (start, stop, by) {
        (Some(a), Some(b), Some(s)) if s != 0 => ((b - a) / s).unsigned_abs() + 1,
        _ => 0,
    }
}
