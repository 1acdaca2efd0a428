//! Turning source values into Arrow record batches of a canonical table, with exact conversions and
//! errors that name table, column and row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use chrono::NaiveDate;
use kartoteka_engine::model::{ColumnType, MONEY_PRECISION, MONEY_SCALE, Table};
pub use kartoteka_engine::time::parse_timestamp;

use crate::error::{Error, Result};
use crate::mapping::MoneyIntegers;

/// One value as a source driver hands it over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a floating-point number",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

enum ColumnBuilder {
    Int64(Int64Builder),
    Int32(Int32Builder),
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Money(Decimal128Builder),
}

/// Accumulates rows of one canonical table into record batches.
pub struct BatchBuilder {
    table: &'static Table,
    columns: Vec<ColumnBuilder>,
    money: Option<MoneyIntegers>,
    rows: usize,
    row_number: u64,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("table", &self.table.name)
            .field("rows", &self.rows)
            .finish()
    }
}

/// Parse exact decimal text into minor units (scale 2). More than two decimals is refused, not rounded.
pub fn parse_money(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 2 {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let cents: i128 = format!("{frac:0<2}").parse().ok()?;
    let v = whole.checked_mul(100)?.checked_add(cents)?;
    Some(if neg { -v } else { v })
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
const MAX_MONEY: i128 = 10i128.pow(MONEY_PRECISION as u32) - 1;

impl BatchBuilder {
    /// A builder for `table`.
    pub fn new(table: &'static Table, money: Option<MoneyIntegers>) -> BatchBuilder {
        let columns = table
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::BigInt => ColumnBuilder::Int64(Int64Builder::new()),
                ColumnType::Int => ColumnBuilder::Int32(Int32Builder::new()),
                ColumnType::Text => ColumnBuilder::Text(StringBuilder::new()),
                ColumnType::Timestamp => ColumnBuilder::Timestamp(
                    TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                ),
                ColumnType::Date => ColumnBuilder::Date(Date32Builder::new()),
                ColumnType::Money => ColumnBuilder::Money(
                    Decimal128Builder::new()
                        .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)
                        .expect("18,2 is a valid decimal"),
                ),
            })
            .collect();
        BatchBuilder {
            table,
            columns,
            money,
            rows: 0,
            row_number: 0,
        }
    }

    /// Rows buffered since the last batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// No rows buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Start a new row (values are then pushed column by column with [`BatchBuilder::push`]).
    pub fn start_row(&mut self) {
        self.row_number += 1;
    }

    /// Finish the row started last.
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Push the value of canonical column `index` for the current row.
    pub fn push(&mut self, index: usize, value: Value<'_>) -> Result<()> {
        let column = &self.table.columns[index];
        let fail = |detail: String| Error::Value {
            table: self.table.name.into(),
            column: column.name.into(),
            row: self.row_number,
            detail,
        };
        let wrong = |expected: &str| fail(format!("found {}, expected {expected}", value.kind()));
        if value == Value::Null {
            if !column.nullable {
                return Err(fail("NULL in a column that may not be NULL (a key)".into()));
            }
            match &mut self.columns[index] {
                ColumnBuilder::Int64(b) => b.append_null(),
                ColumnBuilder::Int32(b) => b.append_null(),
                ColumnBuilder::Text(b) => b.append_null(),
                ColumnBuilder::Timestamp(b) => b.append_null(),
                ColumnBuilder::Date(b) => b.append_null(),
                ColumnBuilder::Money(b) => b.append_null(),
            }
            return Ok(());
        }
        match (&mut self.columns[index], value) {
            (ColumnBuilder::Int64(b), Value::Int(v)) => b.append_value(v),
            (ColumnBuilder::Int64(_), _) => return Err(wrong("an integer (BIGINT)")),
            (ColumnBuilder::Int32(b), Value::Int(v)) => b.append_value(
                i32::try_from(v).map_err(|_| fail(format!("{v} does not fit in INT")))?,
            ),
            (ColumnBuilder::Int32(_), _) => return Err(wrong("an integer (INT)")),
            (ColumnBuilder::Text(b), Value::Text(s)) => b.append_value(s),
            (ColumnBuilder::Text(_), _) => {
                return Err(wrong(
                    "text; CAST it to text in the mapping query if that is meant",
                ));
            }
            (ColumnBuilder::Timestamp(b), Value::Text(s)) => {
                let t = parse_timestamp(s).ok_or_else(|| fail(format!("{s:?} is not a timestamp (expected e.g. 2025-03-01 14:05:00, UTC unless an offset is given)")))?;
                b.append_value(t.timestamp_micros())
            }
            (ColumnBuilder::Timestamp(b), Value::Int(secs)) => b.append_value(
                secs.checked_mul(1_000_000)
                    .ok_or_else(|| fail(format!("{secs} is out of range for epoch seconds")))?,
            ),
            (ColumnBuilder::Timestamp(_), _) => {
                return Err(wrong("a timestamp as text or epoch seconds"));
            }
            (ColumnBuilder::Date(b), Value::Text(s)) => {
                let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .map_err(|_| fail(format!("{s:?} is not a date (expected YYYY-MM-DD)")))?;
                b.append_value((d - EPOCH).num_days() as i32)
            }
            (ColumnBuilder::Date(_), _) => return Err(wrong("a date as text YYYY-MM-DD")),
            (ColumnBuilder::Money(b), Value::Int(v)) => {
                let minor = match self.money {
                    Some(MoneyIntegers::MinorUnits) => v as i128,
                    Some(MoneyIntegers::Units) => v as i128 * 100,
                    None => {
                        return Err(fail(
                            "integer money, but the mapping does not say whether integers are minor units; \
                             add [money] integers = \"minor_units\" (or \"units\")"
                                .into(),
                        ));
                    }
                };
                if minor.abs() > MAX_MONEY {
                    return Err(fail(format!("{v} does not fit DECIMAL(18,2)")));
                }
                b.append_value(minor)
            }
            (ColumnBuilder::Money(b), Value::Text(s)) => {
                let minor = parse_money(s)
                    .filter(|m| m.abs() <= MAX_MONEY)
                    .ok_or_else(|| {
                        fail(format!(
                            "{s:?} is not an exact amount with at most 2 decimals"
                        ))
                    })?;
                b.append_value(minor)
            }
            (ColumnBuilder::Money(_), Value::Real(_)) => {
                return Err(fail(
                    "found a floating-point number; money must be exact (integer minor units or decimal text)".into(),
                ));
            }
            (ColumnBuilder::Money(_), _) => {
                return Err(wrong("money as an integer or decimal text"));
            }
        }
        Ok(())
    }

    /// Take the buffered rows as one record batch of the table's schema.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    ColumnBuilder::Int64(b) => Arc::new(b.finish()),
                    ColumnBuilder::Int32(b) => Arc::new(b.finish()),
                    ColumnBuilder::Text(b) => Arc::new(b.finish()),
                    ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
                    ColumnBuilder::Date(b) => Arc::new(b.finish()),
                    ColumnBuilder::Money(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.table.schema(), arrays)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_text_is_exact() {
        assert_eq!(parse_money("123.45"), Some(12345));
        assert_eq!(parse_money("-0.5"), Some(-50));
        assert_eq!(parse_money("7"), Some(700));
        assert_eq!(parse_money("1.005"), None);
        assert_eq!(parse_money("1e3"), None);
        assert_eq!(parse_money(""), None);
    }

    #[test]
    fn timestamps_without_offset_are_utc() {
        let t = parse_timestamp("2025-03-01 14:05:00").expect("parses");
        assert_eq!(t.to_rfc3339(), "2025-03-01T14:05:00+00:00");
        let t = parse_timestamp("2025-03-01T17:05:00+03:00").expect("parses");
        assert_eq!(t.to_rfc3339(), "2025-03-01T14:05:00+00:00");
        assert!(parse_timestamp("yesterday").is_none());
        assert!(
            parse_timestamp("2025-02-30 10:00:00").is_none(),
            "no 30 February"
        );
        assert!(parse_timestamp("2025-01-01 24:00:00").is_none());
        assert_eq!(
            parse_timestamp("2025-01-01T23:59:59")
                .expect("parses")
                .to_rfc3339(),
            "2025-01-01T23:59:59+00:00"
        );
        assert_eq!(
            parse_timestamp("2025-01-01 23:59:59.5")
                .expect("parses")
                .timestamp_subsec_millis(),
            500
        );
    }

    #[test]
    fn floating_money_is_refused_with_the_column_named() {
        let table = kartoteka_engine::model::table("payments").expect("canonical");
        let mut b = BatchBuilder::new(table, Some(MoneyIntegers::MinorUnits));
        b.start_row();
        let err = b.push(3, Value::Real(10.5)).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains("payments") && msg.contains("amount") && msg.contains("exact"),
            "{msg}"
        );
    }
}
