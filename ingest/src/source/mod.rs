//! Sources: a CRM's own database, read through sqlx's driver for that database (the `Any` driver has
//! no timestamps or decimals).
//!
//! A mapping query is described before anything is read: each result column gets a [`Decoder`] chosen
//! from the column's declared type, and a type Kartoteka cannot map faithfully is an error naming the
//! table and column before the first row. Rows are then decoded column by column into [`Value`]s.

pub mod files;
pub mod mysql;
pub mod postgres;
pub mod sqlite;

use std::time::Duration;

use futures::stream::BoxStream;

use crate::batch::Value;
use crate::error::{Error, Result};
use mysql::MySqlSource;
use postgres::PgSource;
use sqlite::SqliteSource;

/// How one result column's values are decoded, chosen once per column from its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// SQLite: decided per value by its storage class (SQLite types values, not columns).
    Dynamic,
    /// A 2-byte integer.
    Int16,
    /// A 4-byte integer.
    Int32,
    /// An 8-byte integer (MySQL: any signed integer width).
    Int64,
    /// An unsigned integer (MySQL); above `i64::MAX` is an error.
    UInt64,
    /// A 4-byte float.
    Float32,
    /// An 8-byte float.
    Float64,
    /// An exact decimal (PostgreSQL NUMERIC, MySQL DECIMAL).
    Decimal,
    /// Text, enum labels, JSON.
    Text,
    /// PostgreSQL JSONB (a version byte, then JSON text).
    Jsonb,
    /// Bytes.
    Bytes,
    /// A boolean.
    Bool,
    /// An instant (PostgreSQL TIMESTAMPTZ, MySQL TIMESTAMP read in a UTC session).
    Instant,
    /// A wall-clock date and time without zone (PostgreSQL TIMESTAMP, MySQL DATETIME).
    Local,
    /// A date.
    Date,
}

/// One result column of a mapping query.
#[derive(Debug, Clone)]
pub struct SourceColumn {
    /// Column name as the query returns it.
    pub name: String,
    /// The database's name for its type.
    pub type_name: String,
    /// How its values are decoded; `None` when Kartoteka cannot map the type.
    pub decoder: Option<Decoder>,
}

/// A row type of one of the drivers, decodable column by column.
pub trait SourceRow: sqlx::Row {
    /// Column `i` of this row, decoded as `decoder` says.
    fn value(&self, i: usize, decoder: Decoder) -> Result<Value<'_>, sqlx::Error>;
}

/// The result columns of `query` in `pool`'s database, prepared (not run), each with the decoder
/// `decoder` picks for its declared type.
pub(crate) async fn describe_with<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    query: &str,
    decoder: impl Fn(&DB::TypeInfo) -> Option<Decoder>,
) -> Result<Vec<SourceColumn>, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::{Column, Executor, SqlSafeStr, Statement, TypeInfo};
    // Mapping queries are SQL written by the owner in their own config: trusted as SQL by design.
    let stmt = pool
        .prepare(sqlx::AssertSqlSafe(query).into_sql_str())
        .await?;
    Ok(stmt
        .columns()
        .iter()
        .map(|c| SourceColumn {
            name: c.name().to_string(),
            type_name: c.type_info().name().to_string(),
            decoder: decoder(c.type_info()),
        })
        .collect())
}

/// Wrap a decoding failure of column `i` as a driver error.
pub(crate) fn decode_error(
    i: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: e.into(),
    }
}

/// A CRM database to read from.
#[derive(Debug)]
pub enum Source {
    /// A SQLite file.
    Sqlite(SqliteSource),
    /// A PostgreSQL database.
    Postgres(PgSource),
    /// A MySQL or MariaDB database.
    MySql(MySqlSource),
}

/// How a source is reached.
#[derive(Clone, Default)]
pub struct SourceSpec {
    /// `postgres://…`, `mysql://…` / `mariadb://…`, `sqlite://PATH`, or a plain SQLite file path.
    /// May carry credentials: never printed (see [`SourceSpec::display`]).
    pub url: String,
    /// Password, when kept out of the URL (e.g. read from an environment variable by the caller).
    pub password: Option<String>,
    /// Connection attempts before giving up (at least 1).
    pub connect_attempts: u32,
    /// How long one attempt may take (the driver retries within it while the server refuses).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSpec")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SourceSpec {
    /// A spec for `url` with default retries.
    pub fn new(url: impl Into<String>) -> SourceSpec {
        SourceSpec {
            url: url.into(),
            password: None,
            connect_attempts: 3,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The location without credentials, for messages and logs.
    pub fn display(&self) -> String {
        redact_url(&self.url)
    }
}

/// `scheme://user:secret@host/db?…` → `scheme://user@host/db` (the query string may hold key paths or
/// passwords too, so it is dropped).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

/// Does `url` carry a password in its user info (`scheme://user:secret@host`) or query string?
pub fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        || query
            .split('&')
            .any(|kv| kv.to_ascii_lowercase().starts_with("password="))
}

/// A name for a source at `location`: the database's name, or the file's stem.
pub fn default_name(location: &str) -> String {
    let path = location
        .split_once("://")
        .map_or(location, |(_, rest)| rest)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let last = path.rsplit(['/', '\\']).next().unwrap_or("");
    let stem = last.rsplit_once('.').map_or(last, |(stem, _)| stem);
    if stem.is_empty() {
        "source".into()
    } else {
        stem.into()
    }
}

impl Source {
    /// Open the source `spec` names for `mapping`: `files://DIR` imports the export files the
    /// mapping's `[files.*]` sections name (relative to DIR); anything else is [`Source::open`].
    pub async fn open_for(spec: &SourceSpec, mapping: &crate::Mapping) -> Result<Source> {
        match spec.url.trim().strip_prefix("files://") {
            Some(dir) => Ok(Source::Sqlite(
                files::open_files(std::path::Path::new(dir), &mapping.files).await?,
            )),
            None => Source::open(spec).await,
        }
    }

    /// Connect to the source `spec` names, retrying with backoff (0.5 s, 1 s, 2 s, …) when the server
    /// cannot be reached; every session is read-only.
    pub async fn open(spec: &SourceSpec) -> Result<Source> {
        let url = spec.url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let attempts = spec.connect_attempts.max(1);
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let outcome = match scheme.as_deref() {
                Some("postgres" | "postgresql") => {
                    PgSource::open(url, spec.password.as_deref(), spec.connect_timeout)
                        .await
                        .map(Source::Postgres)
                }
                Some("mysql" | "mariadb") => {
                    MySqlSource::open(url, spec.password.as_deref(), spec.connect_timeout)
                        .await
                        .map(Source::MySql)
                }
                Some("sqlite") => {
                    let path = url.split_once("://").map_or(url, |(_, p)| p);
                    return SqliteSource::open(std::path::Path::new(path))
                        .await
                        .map(Source::Sqlite);
                }
                Some(other) => {
                    return Err(Error::SourceUnavailable {
                        source_name: spec.display(),
                        cause: sqlx::Error::Configuration(
                            format!(
                                "unknown scheme {other:?}: use postgres://, mysql://, mariadb:// or sqlite:// (or a SQLite file path)"
                            )
                            .into(),
                        ),
                        attempts: 1,
                    });
                }
                None => {
                    return SqliteSource::open(std::path::Path::new(url))
                        .await
                        .map(Source::Sqlite);
                }
            };
            match outcome {
                Err(cause) if attempt < attempts && transient(&cause) => {
                    tracing::warn!(
                        source = %spec.display(),
                        attempt,
                        "cannot reach the source ({cause}); retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(cause) => {
                    return Err(Error::SourceUnavailable {
                        source_name: spec.display(),
                        cause,
                        attempts: attempt,
                    });
                }
                Ok(source) => return Ok(source),
            }
        }
    }

    /// The source's location, without credentials.
    pub fn display(&self) -> String {
        match self {
            Source::Sqlite(s) => s.display(),
            Source::Postgres(s) => s.display().to_string(),
            Source::MySql(s) => s.display().to_string(),
        }
    }

    /// The result columns of `query` with their decoders, without running it.
    pub async fn describe(&self, query: &str) -> Result<Vec<SourceColumn>, sqlx::Error> {
        match self {
            Source::Sqlite(s) => s.describe(query).await,
            Source::Postgres(s) => s.describe(query).await,
            Source::MySql(s) => s.describe(query).await,
        }
    }
}

/// A read of the whole source at one point in time: one connection in one read-only transaction
/// (PostgreSQL `REPEATABLE READ`, InnoDB `WITH CONSISTENT SNAPSHOT`, SQLite's read transaction), so
/// every table of a run — and the reconciliation after it — sees the same moment of a live CRM.
#[derive(Debug)]
pub enum SnapshotReader {
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// MySQL/MariaDB.
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
}

impl Source {
    /// Start a consistent read of the source; a failure is the source being unavailable.
    pub(crate) async fn begin_read(&self) -> Result<SnapshotReader> {
        self.snapshot()
            .await
            .map_err(|cause| Error::SourceUnavailable {
                source_name: self.display(),
                cause,
                attempts: 1,
            })
    }

    /// Start a consistent read of the source.
    pub async fn snapshot(&self) -> Result<SnapshotReader, sqlx::Error> {
        Ok(match self {
            Source::Sqlite(s) => SnapshotReader::Sqlite(s.pool().begin_with("BEGIN").await?),
            Source::Postgres(s) => SnapshotReader::Postgres(
                s.pool()
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
            Source::MySql(s) => SnapshotReader::MySql(
                s.pool()
                    .begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await?,
            ),
        })
    }
}

/// One direct connection before the pool: a pool only says it timed out, while the connection says
/// why (refused, no such host, wrong password, no such database).
pub(crate) async fn probe<O>(options: &O, timeout: Duration) -> Result<(), sqlx::Error>
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    use sqlx::Connection;
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => conn.close().await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Errors worth another connection attempt: the server is unreachable or went away, not a refusal.
fn transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    )
}

/// A stream of one driver's rows.
pub type Rows<'a, R> = BoxStream<'a, Result<R, sqlx::Error>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://crm:s3cret@db.local:5432/crm?sslmode=verify-full&password=x"),
            "postgres://crm@db.local:5432/crm"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(redact_url("crm.sqlite"), "crm.sqlite");
        let spec = SourceSpec {
            password: Some("hunter2".into()),
            ..SourceSpec::new("postgres://u:pw@h/db")
        };
        let debug = format!("{spec:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("pw@"),
            "{debug}"
        );
        assert!(url_has_password("postgres://u:pw@h/db"));
        assert!(url_has_password("mysql://u@h/db?password=x"));
        assert!(!url_has_password("postgres://u@h/db?sslmode=require"));
        assert_eq!(
            default_name("postgres://u@h:5432/crm_prod?sslmode=require"),
            "crm_prod"
        );
        assert_eq!(default_name("/data/crm.sqlite"), "crm");
    }
}
