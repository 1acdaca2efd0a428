//! PostgreSQL sources through sqlx's PostgreSQL driver: read-only sessions in UTC, TLS as the URL asks
//! (`sslmode=verify-full&sslrootcert=…`), values decoded from the binary protocol.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use sqlx::postgres::{
    PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgTypeInfo, PgTypeKind, PgValueFormat,
};
use sqlx::{AssertSqlSafe, Decode, Postgres, Row, TypeInfo, ValueRef};

use super::{Decoder, Rows, SourceColumn, SourceRow, decode_error, redact_url};
use crate::batch::{Decimal, Value};

/// A PostgreSQL CRM database.
#[derive(Debug)]
pub struct PgSource {
    pool: PgPool,
    display: String,
}

impl PgSource {
    /// Connect to `url` (read-only session, time zone UTC); `password` overrides the URL's.
    pub async fn open(
        url: &str,
        password: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<PgSource, sqlx::Error> {
        let mut options = PgConnectOptions::from_str(url)?
            .application_name("kartoteka-ingest")
            .options([("default_transaction_read_only", "on"), ("TimeZone", "UTC")]);
        if let Some(p) = password {
            options = options.password(p);
        }
        super::probe(&options, timeout).await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await?;
        sqlx::query("SELECT 1").execute(&pool).await?;
        Ok(PgSource {
            pool,
            display: redact_url(url),
        })
    }

    /// The location, without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The pool, for tests and oracles that ask the source its own questions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The columns `query` returns and how each is decoded, without running it.
    pub async fn describe(&self, query: &str) -> Result<Vec<SourceColumn>, sqlx::Error> {
        super::describe_with(&self.pool, query, decoder).await
    }

    /// Stream the rows of `query`.
    pub fn rows(&self, query: &str) -> Rows<'_, PgRow> {
        sqlx::query(AssertSqlSafe(query.to_string()))
            .fetch(&self.pool)
            .boxed()
    }
}

/// The decoder for a PostgreSQL type, or `None` when it has no faithful canonical form.
fn decoder(ty: &PgTypeInfo) -> Option<Decoder> {
    match ty.kind() {
        PgTypeKind::Enum(_) => return Some(Decoder::Text),
        PgTypeKind::Domain(base) => return decoder(base),
        _ => {}
    }
    Some(match ty.name() {
        "INT2" => Decoder::Int16,
        "INT4" => Decoder::Int32,
        "INT8" => Decoder::Int64,
        "FLOAT4" => Decoder::Float32,
        "FLOAT8" => Decoder::Float64,
        "NUMERIC" => Decoder::Decimal,
        "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "JSON" | "CITEXT" | "UNKNOWN" => {
            Decoder::Text
        }
        "JSONB" => Decoder::Jsonb,
        "BYTEA" => Decoder::Bytes,
        "BOOL" => Decoder::Bool,
        "TIMESTAMPTZ" => Decoder::Instant,
        "TIMESTAMP" => Decoder::Local,
        "DATE" => Decoder::Date,
        _ => return None,
    })
}

impl SourceRow for PgRow {
    fn value(&self, i: usize, decoder: Decoder) -> Result<Value<'_>, sqlx::Error> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let err = |e| decode_error(i, e);
        Ok(match decoder {
            Decoder::Int16 => {
                Value::Int(<i16 as Decode<Postgres>>::decode(raw).map_err(err)?.into())
            }
            Decoder::Int32 => {
                Value::Int(<i32 as Decode<Postgres>>::decode(raw).map_err(err)?.into())
            }
            Decoder::Int64 | Decoder::UInt64 => {
                Value::Int(<i64 as Decode<Postgres>>::decode(raw).map_err(err)?)
            }
            Decoder::Float32 => {
                Value::Real(<f32 as Decode<Postgres>>::decode(raw).map_err(err)?.into())
            }
            Decoder::Float64 => Value::Real(<f64 as Decode<Postgres>>::decode(raw).map_err(err)?),
            Decoder::Decimal => Value::Decimal(match raw.format() {
                PgValueFormat::Binary => numeric(raw.as_bytes().map_err(err)?).map_err(err)?,
                PgValueFormat::Text => {
                    let s = raw.as_str().map_err(err)?;
                    Decimal::parse(s)
                        .ok_or_else(|| err(format!("{s:?} is not a finite decimal").into()))?
                }
            }),
            Decoder::Text | Decoder::Dynamic => {
                Value::Text(<&str as Decode<Postgres>>::decode(raw).map_err(err)?)
            }
            Decoder::Jsonb => {
                let bytes = raw.as_bytes().map_err(err)?;
                let text = match (raw.format(), bytes.split_first()) {
                    (PgValueFormat::Binary, Some((1, rest))) => rest,
                    (PgValueFormat::Binary, _) => {
                        return Err(err("unknown JSONB binary version".into()));
                    }
                    (PgValueFormat::Text, _) => bytes,
                };
                Value::Text(std::str::from_utf8(text).map_err(|e| err(e.into()))?)
            }
            Decoder::Bytes => Value::Blob(<&[u8] as Decode<Postgres>>::decode(raw).map_err(err)?),
            Decoder::Bool => Value::Bool(<bool as Decode<Postgres>>::decode(raw).map_err(err)?),
            Decoder::Instant => Value::Instant(
                <DateTime<Utc> as Decode<Postgres>>::decode(raw)
                    .map_err(err)?
                    .timestamp_micros(),
            ),
            Decoder::Local => {
                Value::Local(<NaiveDateTime as Decode<Postgres>>::decode(raw).map_err(err)?)
            }
            Decoder::Date => {
                Value::Date(<NaiveDate as Decode<Postgres>>::decode(raw).map_err(err)?)
            }
        })
    }
}

/// PostgreSQL's binary NUMERIC: digit count, weight (of the first base-10000 digit), sign, display
/// scale, then base-10000 digits. Exact: the result's scale is large enough for every digit sent.
fn numeric(b: &[u8]) -> Result<Decimal, sqlx::error::BoxDynError> {
    let word = |i: usize| -> Result<u16, sqlx::error::BoxDynError> {
        b.get(2 * i..2 * i + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or_else(|| "truncated NUMERIC".into())
    };
    let ndigits = i64::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = i64::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN is not a number Kartoteka can store".into()),
        _ => return Err("infinity is not a number Kartoteka can store".into()),
    }
    // Scale so that the last digit sent lands at or above the units of the mantissa.
    let scale = dscale.max(4 * (ndigits - 1 - weight)).max(0);
    let too_large = || -> sqlx::error::BoxDynError { "NUMERIC too large for 38 digits".into() };
    let mut mantissa: i128 = 0;
    for i in 0..ndigits {
        let digit = i128::from(word(4 + i as usize)?);
        let exp = u32::try_from(4 * (weight - i) + scale).map_err(|_| too_large())?;
        let term = 10i128
            .checked_pow(exp)
            .and_then(|p| p.checked_mul(digit))
            .ok_or_else(too_large)?;
        mantissa = mantissa.checked_add(term).ok_or_else(too_large)?;
    }
    // Back to the display scale when the digits below it are zeros (they are, for PostgreSQL's own
    // values: base-10000 groups pad the last digit).
    let mut scale = u32::try_from(scale).map_err(|_| too_large())?;
    let dscale = u32::try_from(dscale).map_err(|_| too_large())?;
    while scale > dscale && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    Ok(Decimal {
        mantissa: if sign == 0x4000 { -mantissa } else { mantissa },
        scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            b.extend(w.to_be_bytes());
        }
        for d in digits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_binary_is_exact() {
        // 12345.67 = [1, 2345, 6700], weight 1, dscale 2
        let d = numeric(&encode(3, 1, 0, 2, &[1, 2345, 6700])).expect("decodes");
        assert_eq!(d.rescale(2), Some(1_234_567));
        // -0.05 = [500], weight -1, dscale 2
        let d = numeric(&encode(1, -1, 0x4000, 2, &[500])).expect("decodes");
        assert_eq!(d.rescale(2), Some(-5));
        // 1000000 = [100], weight 1, dscale 0 (trailing zero groups are not sent)
        let d = numeric(&encode(1, 1, 0, 0, &[100])).expect("decodes");
        assert_eq!(d.rescale(0), Some(1_000_000));
        // zero: no digits
        assert_eq!(
            numeric(&encode(0, 0, 0, 2, &[])).expect("zero").rescale(2),
            Some(0)
        );
        assert!(numeric(&encode(0, 0, 0xC000, 0, &[])).is_err(), "NaN");
        assert!(
            numeric(&encode(1, 20, 0, 0, &[1])).is_err(),
            "10^80 overflows"
        );
    }
}
