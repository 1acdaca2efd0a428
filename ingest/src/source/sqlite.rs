//! SQLite sources through sqlx, opened read-only.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Decode, Row, Sqlite, TypeInfo, ValueRef};

use super::{Decoder, SourceColumn, SourceRow};
use crate::batch::Value;
use crate::error::{Error, Result};

/// A SQLite CRM database, opened read-only.
#[derive(Debug)]
pub struct SqliteSource {
    pool: SqlitePool,
    path: PathBuf,
    /// The staging directory of imported export files, deleted with the source.
    _staging: Option<tempfile::TempDir>,
    /// What messages call the source (the export folder, for a staging database).
    label: Option<String>,
}

impl SqliteSource {
    /// Open `path` read-only; it must exist and be a SQLite database.
    pub async fn open(path: &Path) -> Result<SqliteSource> {
        let unavailable = |cause| Error::SourceUnavailable {
            source_name: path.display().to_string(),
            cause,
            attempts: 1,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        // Opening succeeds on any file; reading the schema proves it is a database.
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        Ok(SqliteSource {
            pool,
            path: path.to_path_buf(),
            _staging: None,
            label: None,
        })
    }

    /// Open the staging database of imported export files; `staging` is deleted with the source.
    pub(crate) async fn open_staged(
        path: &Path,
        staging: tempfile::TempDir,
        exports: &Path,
    ) -> Result<SqliteSource> {
        let mut source = SqliteSource::open(path).await?;
        source._staging = Some(staging);
        source.label = Some(format!("files://{}", exports.display()));
        Ok(source)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The source as messages name it: the file, or the export folder a staging database holds.
    pub fn display(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The columns `query` returns, without running it. SQLite types values, not columns: every
    /// column is decoded by each value's storage class.
    pub async fn describe(&self, query: &str) -> Result<Vec<SourceColumn>, sqlx::Error> {
        super::describe_with(&self.pool, query, |_| Some(Decoder::Dynamic)).await
    }

    /// Stream the rows of `query`.
    pub fn rows(&self, query: &str) -> BoxStream<'_, Result<SqliteRow, sqlx::Error>> {
        sqlx::query(AssertSqlSafe(query.to_string()))
            .fetch(&self.pool)
            .boxed()
    }

    /// The pool, for tests and oracles that ask the source its own questions.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl SourceRow for SqliteRow {
    fn value(&self, i: usize, _decoder: Decoder) -> Result<Value<'_>, sqlx::Error> {
        value(self, i)
    }
}

/// Read column `i` of `row` as a [`Value`], by the value's own storage class.
pub fn value(row: &SqliteRow, i: usize) -> Result<Value<'_>, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let decode_err = |e| sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: e,
    };
    #[derive(Clone, Copy)]
    enum Storage {
        Integer,
        Real,
        Blob,
        Text,
    }
    // SQLite types values, not columns: decide by this value's storage class.
    let storage = match raw.type_info().name() {
        "INTEGER" => Storage::Integer,
        "REAL" => Storage::Real,
        "BLOB" => Storage::Blob,
        _ => Storage::Text,
    };
    Ok(match storage {
        Storage::Integer => Value::Int(<i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
        Storage::Real => Value::Real(<f64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
        Storage::Blob => Value::Blob(<&[u8] as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
        Storage::Text => Value::Text(<&str as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
    })
}
