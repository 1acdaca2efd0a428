//! The demo CRM on a database server: the same rows as the SQLite demo, in the types a CRM on
//! PostgreSQL or MySQL/MariaDB would use (see `schema.postgres.sql`, `schema.mysql.sql`). Tests and
//! benchmarks load it to prove that ingest from a server gives exactly the lake ingest from SQLite
//! gives, and the dialect-specific mappings show how a real CRM's schema is mapped.

use std::path::Path;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::postgres::PgPoolCopyExt;
use sqlx::{AssertSqlSafe, Row};

use crate::batch::{Value, parse_timestamp};
use crate::error::{Error, Result};
use crate::source::sqlite::{self, SqliteSource};

/// The demo CRM's schema in PostgreSQL.
pub const POSTGRES_SCHEMA: &str = include_str!("schema.postgres.sql");
/// The demo CRM's schema in MySQL/MariaDB.
pub const MYSQL_SCHEMA: &str = include_str!("schema.mysql.sql");
/// The mapping of the PostgreSQL demo.
pub const POSTGRES_MAPPING: &str = include_str!("mapping.postgres.toml");
/// The mapping of the MySQL/MariaDB demo.
pub const MYSQL_MAPPING: &str = include_str!("mapping.mysql.toml");

/// Rows per INSERT statement into MySQL.
const MYSQL_ROWS_PER_INSERT: usize = 500;

/// The demo's tables, in the order of its schema.
fn demo_tables() -> Vec<&'static str> {
    super::SCHEMA
        .split("CREATE TABLE ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next())
        .collect()
}

/// How a value is written for one target column.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Integer kopecks become decimal roubles.
    Roubles,
    /// A UTC instant becomes Moscow wall-clock time.
    MoscowLocal,
    /// A UTC instant with its offset spelled out.
    Instant,
    /// `YYYY-MM` months become their first day; dates as they are.
    Date,
    /// As it is.
    Plain,
}

fn target(data_type: &str) -> Target {
    match data_type.to_ascii_lowercase().as_str() {
        "numeric" | "decimal" => Target::Roubles,
        "timestamp without time zone" | "datetime" => Target::MoscowLocal,
        "timestamp with time zone" => Target::Instant,
        "date" => Target::Date,
        _ => Target::Plain,
    }
}

fn render(value: Value<'_>, target: Target) -> Option<String> {
    let instant = |s: &str| -> DateTime<Utc> {
        parse_timestamp(s).unwrap_or_else(|| panic!("demo timestamps are well-formed: {s:?}"))
    };
    Some(match (value, target) {
        (Value::Null, _) => return None,
        (Value::Int(k), Target::Roubles) => {
            let sign = if k < 0 { "-" } else { "" };
            format!(
                "{sign}{}.{:02}",
                k.unsigned_abs() / 100,
                k.unsigned_abs() % 100
            )
        }
        (Value::Text(s), Target::MoscowLocal) => instant(s)
            .with_timezone(&chrono_tz::Europe::Moscow)
            .naive_local()
            .format("%Y-%m-%d %H:%M:%S%.f")
            .to_string(),
        (Value::Text(s), Target::Instant) => {
            instant(s).format("%Y-%m-%d %H:%M:%S%.f+00").to_string()
        }
        (Value::Text(s), Target::Date) if s.len() == 7 => format!("{s}-01"),
        (Value::Int(v), _) => v.to_string(),
        (Value::Real(v), _) => v.to_string(),
        (Value::Text(s), _) => s.to_string(),
        (other, _) => panic!("the demo holds no {other:?}"),
    })
}

/// PostgreSQL COPY text format: backslash, tab, newline and carriage return escaped; NULL is `\N`.
fn copy_text(out: &mut String, value: Option<&str>) {
    let Some(v) = value else {
        out.push_str("\\N");
        return;
    };
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Copy the demo CRM in the SQLite file `from` into the empty database at `url` (`postgres://…` or
/// `mysql://…`): create the demo schema there and load every row. Returns the rows copied.
pub async fn copy_to_server(from: &Path, url: &str) -> Result<u64> {
    let source = SqliteSource::open(from).await?;
    let fail = |cause| Error::Demo {
        path: from.to_path_buf(),
        cause,
    };
    let postgres = url.starts_with("postgres");
    let mut copied = 0u64;
    if postgres {
        let pool = sqlx::PgPool::connect(url).await.map_err(fail)?;
        sqlx::raw_sql(POSTGRES_SCHEMA)
            .execute(&pool)
            .await
            .map_err(fail)?;
        for table in demo_tables() {
            let columns = targets(
                sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(&pool)
                .await
                .map_err(fail)?,
            );
            let mut copy = pool
                .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", names(&columns)))
                .await
                .map_err(fail)?;
            let mut buf = String::new();
            let mut rows = source_rows(&source, table, &columns).await?;
            while let Some(row) = rows.try_next().await.map_err(fail)? {
                for (i, (_, t)) in columns.iter().enumerate() {
                    if i > 0 {
                        buf.push('\t');
                    }
                    let v = sqlite::value(&row, i).map_err(fail)?;
                    copy_text(&mut buf, render(v, *t).as_deref());
                }
                buf.push('\n');
                copied += 1;
                if buf.len() > 1 << 20 {
                    copy.send(std::mem::take(&mut buf).into_bytes())
                        .await
                        .map_err(fail)?;
                }
            }
            copy.send(buf.into_bytes()).await.map_err(fail)?;
            copy.finish().await.map_err(fail)?;
        }
        pool.close().await;
    } else {
        let pool = sqlx::MySqlPool::connect(url).await.map_err(fail)?;
        sqlx::raw_sql(MYSQL_SCHEMA)
            .execute(&pool)
            .await
            .map_err(fail)?;
        for table in demo_tables() {
            let columns = targets(
                sqlx::query_as(
                    "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(&pool)
                .await
                .map_err(fail)?,
            );
            let mut batch: Vec<Option<String>> = Vec::new();
            let mut rows = source_rows(&source, table, &columns).await?;
            loop {
                let row = rows.try_next().await.map_err(fail)?;
                if let Some(row) = &row {
                    for (i, (_, t)) in columns.iter().enumerate() {
                        batch.push(render(sqlite::value(row, i).map_err(fail)?, *t));
                    }
                    copied += 1;
                }
                let n = batch.len() / columns.len();
                if n > 0 && (row.is_none() || n == MYSQL_ROWS_PER_INSERT) {
                    let one = format!("({})", vec!["?"; columns.len()].join(", "));
                    let sql = format!(
                        "INSERT INTO {table} ({}) VALUES {}",
                        names(&columns),
                        vec![one; n].join(", ")
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for v in batch.drain(..) {
                        q = q.bind(v);
                    }
                    q.execute(&pool).await.map_err(fail)?;
                }
                if row.is_none() {
                    break;
                }
            }
        }
        pool.close().await;
    }
    Ok(copied)
}

fn names(columns: &[(String, Target)]) -> String {
    columns
        .iter()
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn targets(columns: Vec<(String, String)>) -> Vec<(String, Target)> {
    columns
        .into_iter()
        .map(|(name, ty)| (name, target(&ty)))
        .collect()
}

/// The demo rows of `table` with, for each target column, the SQLite column holding its value
/// (`price` is kept as `price_kopecks` in SQLite).
async fn source_rows<'a>(
    source: &'a SqliteSource,
    table: &str,
    columns: &[(String, Target)],
) -> Result<crate::source::Rows<'a, sqlx::sqlite::SqliteRow>> {
    let present: Vec<String> = sqlx::query(AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}')"
    )))
    .fetch_all(source.pool())
    .await
    .map_err(|cause| Error::Demo {
        path: source.path().to_path_buf(),
        cause,
    })?
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let select: Vec<String> = columns
        .iter()
        .map(|(c, _)| {
            if present.contains(c) {
                c.clone()
            } else {
                format!("{c}_kopecks")
            }
        })
        .collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY id", select.join(", "));
    Ok(source.rows(&sql))
}
