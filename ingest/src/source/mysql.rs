//! MySQL and MariaDB sources through sqlx's MySQL driver: read-only sessions with `time_zone = '+00:00'`
//! (so TIMESTAMP columns arrive as UTC), TLS as the URL asks (`ssl-mode=VERIFY_IDENTITY&ssl-ca=…`).

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlTypeInfo};
use sqlx::{AssertSqlSafe, Decode, Executor, MySql, Row, TypeInfo, ValueRef};

use super::{Decoder, Rows, SourceColumn, SourceRow, decode_error, redact_url};
use crate::batch::{Decimal, Value};

/// A MySQL or MariaDB CRM database.
#[derive(Debug)]
pub struct MySqlSource {
    pool: MySqlPool,
    display: String,
}

impl MySqlSource {
    /// Connect to `url` (`mysql://` or `mariadb://`); `password` overrides the URL's.
    pub async fn open(
        url: &str,
        password: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<MySqlSource, sqlx::Error> {
        let normalized = match url.split_once("://") {
            Some((_, rest)) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let mut options = MySqlConnectOptions::from_str(&normalized)?
            .timezone(Some("+00:00".to_string()))
            .charset("utf8mb4");
        if let Some(p) = password {
            options = options.password(p);
        }
        super::probe(&options, timeout).await?;
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::query("SELECT 1").execute(&pool).await?;
        Ok(MySqlSource {
            pool,
            display: redact_url(url),
        })
    }

    /// The location, without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The pool, for tests and oracles that ask the source its own questions.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The columns `query` returns and how each is decoded, without running it.
    pub async fn describe(&self, query: &str) -> Result<Vec<SourceColumn>, sqlx::Error> {
        super::describe_with(&self.pool, query, decoder).await
    }

    /// Stream the rows of `query`.
    pub fn rows(&self, query: &str) -> Rows<'_, MySqlRow> {
        sqlx::query(AssertSqlSafe(query.to_string()))
            .fetch(&self.pool)
            .boxed()
    }
}

/// The decoder for a MySQL type, or `None` when it has no faithful canonical form.
fn decoder(ty: &MySqlTypeInfo) -> Option<Decoder> {
    let name = ty.name();
    Some(match name {
        "BOOLEAN" => Decoder::Bool,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Decoder::Int64,
        _ if name.ends_with(" UNSIGNED") => Decoder::UInt64,
        "FLOAT" => Decoder::Float32,
        "DOUBLE" => Decoder::Float64,
        "DECIMAL" => Decoder::Decimal,
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "JSON" | "NULL" => Decoder::Text,
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => Decoder::Bytes,
        "TIMESTAMP" => Decoder::Instant,
        "DATETIME" => Decoder::Local,
        "DATE" => Decoder::Date,
        _ => return None,
    })
}

impl SourceRow for MySqlRow {
    fn value(&self, i: usize, decoder: Decoder) -> Result<Value<'_>, sqlx::Error> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let err = |e| decode_error(i, e);
        Ok(match decoder {
            Decoder::Int16 | Decoder::Int32 | Decoder::Int64 => {
                Value::Int(<i64 as Decode<MySql>>::decode(raw).map_err(err)?)
            }
            Decoder::UInt64 => {
                let v = <u64 as Decode<MySql>>::decode(raw).map_err(err)?;
                Value::Int(
                    i64::try_from(v)
                        .map_err(|_| err(format!("{v} is larger than BIGINT").into()))?,
                )
            }
            Decoder::Float32 => {
                Value::Real(<f32 as Decode<MySql>>::decode(raw).map_err(err)?.into())
            }
            Decoder::Float64 => Value::Real(<f64 as Decode<MySql>>::decode(raw).map_err(err)?),
            Decoder::Decimal => {
                let s = <&str as Decode<MySql>>::decode(raw).map_err(err)?;
                Value::Decimal(
                    Decimal::parse(s)
                        .ok_or_else(|| err(format!("{s:?} is not a decimal").into()))?,
                )
            }
            Decoder::Text | Decoder::Jsonb | Decoder::Dynamic => {
                Value::Text(<&str as Decode<MySql>>::decode(raw).map_err(err)?)
            }
            Decoder::Bytes => Value::Blob(<&[u8] as Decode<MySql>>::decode(raw).map_err(err)?),
            Decoder::Bool => Value::Bool(<bool as Decode<MySql>>::decode(raw).map_err(err)?),
            Decoder::Instant => Value::Instant(
                <DateTime<Utc> as Decode<MySql>>::decode(raw)
                    .map_err(err)?
                    .timestamp_micros(),
            ),
            Decoder::Local => {
                Value::Local(<NaiveDateTime as Decode<MySql>>::decode(raw).map_err(err)?)
            }
            Decoder::Date => Value::Date(<NaiveDate as Decode<MySql>>::decode(raw).map_err(err)?),
        })
    }
}
