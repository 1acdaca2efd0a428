//! Turning source values into Arrow record batches of a canonical table, with exact conversions and
//! errors that name table, column and row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use kartoteka_engine::model::{ColumnType, MONEY_PRECISION, MONEY_SCALE, Table};
pub use kartoteka_engine::time::parse_timestamp;
use kartoteka_engine::time::{TextTimestamp, parse_text_timestamp};

use crate::error::{Error, Result};
use crate::mapping::{Conversions, MoneyIntegers};

/// One value as a source driver hands it over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// An exact decimal.
    Decimal(Decimal),
    /// A boolean.
    Bool(bool),
    /// An instant, microseconds since the Unix epoch (UTC).
    Instant(i64),
    /// A date and wall-clock time without zone (read in the mapping's zone).
    Local(NaiveDateTime),
    /// A date.
    Date(NaiveDate),
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
            Value::Decimal(_) => "a decimal",
            Value::Bool(_) => "a boolean",
            Value::Instant(_) => "a timestamp with time zone",
            Value::Local(_) => "a timestamp without time zone",
            Value::Date(_) => "a date",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

/// An exact decimal number: `mantissa × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// The digits as one integer.
    pub mantissa: i128,
    /// Digits after the point.
    pub scale: u32,
}

impl Decimal {
    /// Parse `[-+]digits[.digits]` exactly (no exponent, no thousands separators).
    pub fn parse(s: &str) -> Option<Decimal> {
        let s = s.trim();
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut mantissa: i128 = 0;
        for c in int.bytes().chain(frac.bytes()) {
            if !c.is_ascii_digit() {
                return None;
            }
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(c - b'0'))?;
        }
        Some(Decimal {
            mantissa: if neg { -mantissa } else { mantissa },
            scale: u32::try_from(frac.len()).ok()?,
        })
    }

    /// The value in units of `10^-scale`, when that is exact (dropped digits must be zeros).
    pub fn rescale(self, scale: u32) -> Option<i128> {
        if scale >= self.scale {
            self.mantissa
                .checked_mul(10i128.checked_pow(scale - self.scale)?)
        } else {
            let div = 10i128.checked_pow(self.scale - scale)?;
            (self.mantissa % div == 0).then(|| self.mantissa / div)
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
    columns: Vec<Option<ColumnBuilder>>,
    conversions: Conversions,
    rows: usize,
    row_number: u64,
    /// Per money column read as text: the first whole number and the first decimal seen, with their
    /// rows. With integers as minor units, a column holding both would read "48" as 0.48 next to
    /// "48.50" as 48.50 — refused.
    money_text: Vec<MoneyForms>,
}

/// The first whole number and the first decimal a money column held as text, each with its row.
#[derive(Debug, Clone, Default)]
struct MoneyForms {
    whole: Option<(String, u64)>,
    decimal: Option<(String, u64)>,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("table", &self.table.name)
            .field("rows", &self.rows)
            .finish()
    }
}

/// Parse exact decimal text into minor units (scale 2). Digits beyond the second decimal must be
/// zeros: an amount is refused, never rounded.
pub fn parse_money(s: &str) -> Option<i128> {
    Decimal::parse(s)?.rescale(u32::from(MONEY_SCALE.unsigned_abs()))
}

/// `[+-]digits` (surrounding spaces allowed) as an integer; anything else is not one.
fn integer_text(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
const MAX_MONEY: i128 = 10i128.pow(MONEY_PRECISION as u32) - 1;

impl BatchBuilder {
    /// A builder for `table`.
    pub fn new(table: &'static Table, conversions: Conversions) -> BatchBuilder {
        let all: Vec<usize> = (0..table.columns.len()).collect();
        BatchBuilder::for_columns(table, conversions, &all)
    }

    /// A builder of only the canonical columns `indices` of `table` (e.g. its key, for
    /// reconciliation); its batches have just those columns, in table order.
    pub fn for_columns(
        table: &'static Table,
        conversions: Conversions,
        indices: &[usize],
    ) -> BatchBuilder {
        let columns = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                indices.contains(&i).then(|| match c.ty {
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
            })
            .collect();
        BatchBuilder {
            table,
            columns,
            conversions,
            rows: 0,
            row_number: 0,
            money_text: vec![MoneyForms::default(); table.columns.len()],
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
        let Some(builder) = self.columns[index].as_mut() else {
            return Err(fail("this builder does not hold the column".into()));
        };
        if value == Value::Null {
            if !column.nullable {
                return Err(fail("NULL in a column that may not be NULL (a key)".into()));
            }
            match builder {
                ColumnBuilder::Int64(b) => b.append_null(),
                ColumnBuilder::Int32(b) => b.append_null(),
                ColumnBuilder::Text(b) => b.append_null(),
                ColumnBuilder::Timestamp(b) => b.append_null(),
                ColumnBuilder::Date(b) => b.append_null(),
                ColumnBuilder::Money(b) => b.append_null(),
            }
            return Ok(());
        }
        let money_scale = u32::from(MONEY_SCALE.unsigned_abs());
        let zone = self.conversions.zone;
        // A wall-clock time in the mapping's zone: in a DST fall-back hour the earlier instant; a time
        // that does not exist (the spring-forward gap) is an error, not a guess.
        let local = |t: NaiveDateTime| -> Result<i64> {
            zone.from_local_datetime(&t)
                .earliest()
                .map(|t| t.timestamp_micros())
                .ok_or_else(|| {
                    fail(format!(
                        "{t} does not exist in time zone {zone} (a DST gap)"
                    ))
                })
        };
        let int_money = |v: i64| -> Result<i128> {
            let minor = match self.conversions.money {
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
            Ok(minor)
        };
        // Money written as text: with integers as minor units, whole numbers and decimals in one
        // column cannot both be meant.
        if let (ColumnBuilder::Money(_), Value::Text(t), Some(MoneyIntegers::MinorUnits)) =
            (&*builder, value, self.conversions.money)
        {
            let forms = &mut self.money_text[index];
            let slot = if integer_text(t).is_some() {
                &mut forms.whole
            } else {
                &mut forms.decimal
            };
            slot.get_or_insert_with(|| (t.trim().to_string(), self.row_number));
            if let (Some((whole, wrow)), Some((decimal, drow))) = (&forms.whole, &forms.decimal) {
                return Err(fail(format!(
                    "the column holds whole numbers ({whole:?}, row {wrow}) and decimals ({decimal:?}, \
                     row {drow}); with [money] integers = \"minor_units\" the whole numbers would be \
                     read as minor units ({whole} → {}) and the decimals as units. Write the amounts \
                     one way in the query (e.g. every amount with its decimals), or set integers = \
                     \"units\" if whole numbers are whole units",
                    integer_text(whole).map_or(String::new(), |v| format!(
                        "{}.{:02}",
                        v / 100,
                        (v % 100).abs()
                    ))
                )));
            }
        }
        match (builder, value) {
            (ColumnBuilder::Int64(b), Value::Int(v)) => b.append_value(v),
            (ColumnBuilder::Int32(b), Value::Int(v)) => b.append_value(
                i32::try_from(v).map_err(|_| fail(format!("{v} does not fit in INT")))?,
            ),
            (ColumnBuilder::Int64(b), Value::Bool(v)) => b.append_value(i64::from(v)),
            (ColumnBuilder::Int32(b), Value::Bool(v)) => b.append_value(i32::from(v)),
            (ColumnBuilder::Int64(b), Value::Decimal(d)) => b.append_value(
                d.rescale(0)
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| fail(format!("{d:?} is not a whole BIGINT")))?,
            ),
            (ColumnBuilder::Int32(b), Value::Decimal(d)) => b.append_value(
                d.rescale(0)
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| fail(format!("{d:?} is not a whole INT")))?,
            ),
            // Export files hold only text: a whole number written out is an integer.
            (ColumnBuilder::Int64(b), Value::Text(t)) if integer_text(t).is_some() => {
                b.append_value(integer_text(t).expect("checked"))
            }
            (ColumnBuilder::Int32(b), Value::Text(t)) if integer_text(t).is_some() => {
                let v = integer_text(t).expect("checked");
                b.append_value(
                    i32::try_from(v).map_err(|_| fail(format!("{v} does not fit in INT")))?,
                )
            }
            // A whole number written with decimals ("17850.0", an export's idea of an id) is that
            // number; any other text key is kept as the stable surrogate of its text.
            (ColumnBuilder::Int64(b), Value::Text(t)) if self.conversions.text_keys => {
                b.append_value(kartoteka_engine::model::key_of_text(t))
            }
            (ColumnBuilder::Int64(_), Value::Text(_)) => {
                return Err(wrong(
                    "an integer (BIGINT); if this CRM's ids are text (e.g. C536379), add \
                     [keys] text = true to the mapping to keep them as stable surrogates",
                ));
            }
            (ColumnBuilder::Int64(b), Value::Real(v))
                if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 =>
            {
                b.append_value(v as i64)
            }
            (ColumnBuilder::Int64(_), _) => return Err(wrong("an integer (BIGINT)")),
            (ColumnBuilder::Int32(_), _) => return Err(wrong("an integer (INT)")),
            (ColumnBuilder::Text(b), Value::Text(s)) => b.append_value(s),
            (ColumnBuilder::Text(b), Value::Blob(bytes)) => b.append_value(
                std::str::from_utf8(bytes)
                    .map_err(|_| fail("binary data that is not UTF-8 text".into()))?,
            ),
            (ColumnBuilder::Text(b), Value::Bool(v)) => {
                b.append_value(if v { "true" } else { "false" })
            }
            (ColumnBuilder::Text(_), _) => {
                return Err(wrong(
                    "text; CAST it to text in the mapping query if that is meant",
                ));
            }
            (ColumnBuilder::Timestamp(b), Value::Text(s)) => {
                let t = match parse_text_timestamp(s) {
                    Some(TextTimestamp::Instant(t)) => t.timestamp_micros(),
                    Some(TextTimestamp::Local(t)) => local(t)?,
                    None => {
                        return Err(fail(format!(
                            "{s:?} is not a timestamp (expected e.g. 2025-03-01 14:05:00, in the mapping's time zone unless an offset is given)"
                        )));
                    }
                };
                b.append_value(t)
            }
            (ColumnBuilder::Timestamp(b), Value::Int(secs)) => b.append_value(
                secs.checked_mul(1_000_000)
                    .ok_or_else(|| fail(format!("{secs} is out of range for epoch seconds")))?,
            ),
            (ColumnBuilder::Timestamp(b), Value::Instant(us)) => b.append_value(us),
            (ColumnBuilder::Timestamp(b), Value::Local(t)) => b.append_value(local(t)?),
            (ColumnBuilder::Timestamp(_), _) => {
                return Err(wrong(
                    "a timestamp (a timestamp type, text, or epoch seconds)",
                ));
            }
            (ColumnBuilder::Date(b), Value::Text(s)) => {
                let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .map_err(|_| fail(format!("{s:?} is not a date (expected YYYY-MM-DD)")))?;
                b.append_value((d - EPOCH).num_days() as i32)
            }
            (ColumnBuilder::Date(b), Value::Date(d)) => {
                b.append_value((d - EPOCH).num_days() as i32)
            }
            (ColumnBuilder::Date(_), _) => {
                return Err(wrong(
                    "a date (a DATE, or text YYYY-MM-DD); CAST a timestamp to date in the mapping query if that is meant",
                ));
            }
            // Export files write integer money as text: the mapping's integer rule applies to it.
            (ColumnBuilder::Money(b), Value::Text(t))
                if self.conversions.money.is_some() && integer_text(t).is_some() =>
            {
                b.append_value(int_money(integer_text(t).expect("checked"))?)
            }
            (ColumnBuilder::Money(b), Value::Int(v)) => b.append_value(int_money(v)?),
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
            (ColumnBuilder::Money(b), Value::Decimal(d)) => {
                let minor = d
                    .rescale(money_scale)
                    .filter(|m| m.abs() <= MAX_MONEY)
                    .ok_or_else(|| {
                        fail(format!(
                            "{d:?} is not an exact amount with at most 2 decimals that fits DECIMAL(18,2)"
                        ))
                    })?;
                b.append_value(minor)
            }
            (ColumnBuilder::Money(_), Value::Real(_)) => {
                return Err(fail(
                    "found a floating-point number; money must be exact (integer minor units, a decimal type, or decimal text)".into(),
                ));
            }
            (ColumnBuilder::Money(_), _) => {
                return Err(wrong("money as an integer, a decimal, or decimal text"));
            }
        }
        Ok(())
    }

    /// Take the buffered rows as one record batch of the table's schema.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .flatten()
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
        let indices: Vec<usize> = (0..self.columns.len())
            .filter(|&i| self.columns[i].is_some())
            .collect();
        let schema = if indices.len() == self.columns.len() {
            self.table.schema()
        } else {
            Arc::new(self.table.schema().project(&indices)?)
        };
        Ok(RecordBatch::try_new(schema, arrays)?)
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
    fn wall_clock_times_are_read_in_the_mappings_zone_across_dst() {
        let table = kartoteka_engine::model::table("payments").expect("canonical");
        let paid_at = table
            .columns
            .iter()
            .position(|c| c.name == "paid_at")
            .expect("paid_at");
        let at = |zone: chrono_tz::Tz, text: &str| -> Result<i64> {
            let mut b = BatchBuilder::for_columns(
                table,
                Conversions {
                    money: None,
                    zone,
                    text_keys: false,
                },
                &[paid_at],
            );
            b.start_row();
            b.push(paid_at, Value::Text(text))?;
            b.end_row();
            let local =
                NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").expect("test text");
            b.start_row();
            b.push(paid_at, Value::Local(local))?;
            b.end_row();
            let batch = b.finish()?;
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .expect("timestamp");
            // Text and a driver's wall-clock value agree.
            assert_eq!(col.len(), 2);
            assert_eq!(col.value(0), col.value(1));
            Ok(col.value(0))
        };
        let utc = |s: &str| parse_timestamp(s).expect("utc").timestamp_micros();
        // Moscow has no DST: always UTC+3.
        assert_eq!(
            at(chrono_tz::Europe::Moscow, "2025-01-01 00:30:00").expect("ok"),
            utc("2024-12-31 21:30:00")
        );
        // Berlin, spring forward: 02:30 on 30 March 2025 never happened.
        let gap = at(chrono_tz::Europe::Berlin, "2025-03-30 02:30:00").expect_err("gap");
        assert!(gap.to_string().contains("does not exist"), "{gap}");
        // Berlin, fall back: 02:30 on 26 October 2025 happened twice; the earlier (CEST) is taken.
        assert_eq!(
            at(chrono_tz::Europe::Berlin, "2025-10-26 02:30:00").expect("ok"),
            utc("2025-10-26 00:30:00")
        );
        // An explicit offset wins over the zone.
        let mut b = BatchBuilder::new(
            table,
            Conversions {
                money: None,
                zone: chrono_tz::Europe::Moscow,
                text_keys: false,
            },
        );
        b.start_row();
        b.push(paid_at, Value::Text("2025-01-01T00:30:00Z"))
            .expect("ok");
    }

    #[test]
    fn decimals_are_exact_or_refused() {
        let d = Decimal::parse("1234.5600").expect("parses");
        assert_eq!(d.rescale(2), Some(123_456));
        assert_eq!(Decimal::parse("0.001").and_then(|d| d.rescale(2)), None);
        assert_eq!(Decimal::parse("-7").and_then(|d| d.rescale(2)), Some(-700));
        assert_eq!(Decimal::parse("1,5"), None);
        assert_eq!(Decimal::parse("."), None);
        assert_eq!(Decimal::parse("9".repeat(40).as_str()), None, "beyond i128");
    }

    #[test]
    fn floating_money_is_refused_with_the_column_named() {
        let table = kartoteka_engine::model::table("payments").expect("canonical");
        let mut b = BatchBuilder::new(
            table,
            Conversions {
                money: Some(MoneyIntegers::MinorUnits),
                zone: chrono_tz::UTC,
                text_keys: false,
            },
        );
        b.start_row();
        let err = b.push(3, Value::Real(10.5)).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains("payments") && msg.contains("amount") && msg.contains("exact"),
            "{msg}"
        );
    }
}
