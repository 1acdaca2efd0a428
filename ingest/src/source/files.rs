//! CRM export files (amoCRM, Bitrix24, HubSpot export CSV): each file named in the mapping's
//! `[files.NAME]` is streamed into table `NAME` of a private SQLite staging database — text columns
//! named by the header row, empty cells as NULL — and the mapping's queries then run over it like over
//! any SQLite source. Structural errors (encoding, a row with the wrong number of fields, a bad header)
//! name the file and line; value errors name table, column and row as for every source.
//!
//! The staging database is plaintext CRM data on disk, like the export files themselves: it lives in a
//! fresh directory only the owner can read and is deleted when the source is dropped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Executor};

use super::sqlite::SqliteSource;
use crate::error::{Error, Result};

/// How one export file is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The file, relative to the source directory.
    pub path: PathBuf,
    /// Field delimiter (one character; default `,`).
    pub delimiter: Option<char>,
    /// Text encoding: any WHATWG label (`utf-8`, `windows-1251`, `koi8-r`, …); default UTF-8.
    pub encoding: Option<String>,
}

/// A reader decoding `inner` from `encoding` into UTF-8, refusing malformed bytes (reported with their
/// line) instead of replacing them.
struct Decoding<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    input: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    out: Vec<u8>,
    out_pos: usize,
    line: u64,
}

impl<R: Read> Decoding<R> {
    fn new(inner: R, encoding: &'static encoding_rs::Encoding) -> Decoding<R> {
        Decoding {
            inner,
            // A BOM, when present, wins (exports from Excel carry one).
            decoder: encoding.new_decoder_with_bom_removal(),
            input: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            eof: false,
            out: Vec::with_capacity(4 * 64 * 1024),
            out_pos: 0,
            line: 1,
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        if self.start == self.end && !self.eof {
            self.start = 0;
            self.end = self.inner.read(&mut self.input)?;
            self.eof = self.end == 0;
        }
        self.out.clear();
        self.out_pos = 0;
        self.out.resize(4 * self.input.len() + 16, 0);
        let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
            &self.input[self.start..self.end],
            &mut self.out,
            self.eof,
        );
        let consumed = &self.input[self.start..self.start + read];
        if let encoding_rs::DecoderResult::Malformed(_, _) = result {
            let before = consumed.iter().filter(|&&b| b == b'\n').count() as u64;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "line {}: bytes that are not valid {}",
                    self.line + before,
                    self.decoder.encoding().name()
                ),
            ));
        }
        self.line += consumed.iter().filter(|&&b| b == b'\n').count() as u64;
        self.start += read;
        self.out.truncate(written);
        Ok(())
    }
}

impl<R: Read> Read for Decoding<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.out_pos == self.out.len() {
            if self.eof && self.start == self.end {
                return Ok(0);
            }
            self.fill()?;
            if self.eof && self.start == self.end && self.out.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

fn file_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Stream the export files `files` (relative to `dir`) into a private staging database and open it as
/// a SQLite source.
pub async fn open_files(dir: &Path, files: &BTreeMap<String, FileSpec>) -> Result<SqliteSource> {
    if files.is_empty() {
        return Err(file_error(
            dir,
            "the mapping names no export file; add [files.NAME] path = \"…\" sections",
        ));
    }
    let staging = tempfile::Builder::new()
        .prefix("kartoteka-import-")
        .tempdir()
        .map_err(|e| file_error(dir, format!("cannot create a staging directory: {e}")))?;
    let db = staging.path().join("import.sqlite");
    let db_err = |cause| Error::Demo {
        path: db.clone(),
        cause,
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Off)
                .synchronous(SqliteSynchronous::Off),
        )
        .await
        .map_err(db_err)?;
    for (name, spec) in files {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(file_error(
                &spec.path,
                format!("[files.{name}]: a table name is letters, digits and _"),
            ));
        }
        let path = dir.join(&spec.path);
        import_csv(&pool, name, &path, spec).await?;
    }
    pool.close().await;
    SqliteSource::open_staged(&db, staging).await
}

async fn import_csv(
    pool: &sqlx::SqlitePool,
    table: &str,
    path: &Path,
    spec: &FileSpec,
) -> Result<()> {
    let label = spec.encoding.as_deref().unwrap_or("utf-8");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
        file_error(
            path,
            format!("unknown encoding {label:?} (e.g. utf-8, windows-1251, koi8-r)"),
        )
    })?;
    let delimiter = spec.delimiter.unwrap_or(',');
    if !delimiter.is_ascii() {
        return Err(file_error(
            path,
            "the delimiter must be one ASCII character",
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter as u8)
        .has_headers(true)
        .from_reader(Decoding::new(std::io::BufReader::new(file), encoding));
    let csv_err = |e: csv::Error| -> Error {
        let line = e.position().map(|p| p.line());
        match (e.kind(), line) {
            (
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                },
                Some(line),
            ) => file_error(
                path,
                format!("line {line}: {len} fields, but the header has {expected_len}"),
            ),
            (csv::ErrorKind::Io(io), _) => file_error(path, io.to_string()),
            (_, Some(line)) => file_error(path, format!("line {line}: {e}")),
            (_, None) => file_error(path, e.to_string()),
        }
    };
    let headers: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.is_empty() || headers.iter().any(|h| h.is_empty()) {
        return Err(file_error(
            path,
            "line 1: every column needs a name in the header",
        ));
    }
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].contains(h) {
            return Err(file_error(
                path,
                format!("line 1: column {h:?} appears twice"),
            ));
        }
    }
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let db_err = |e: sqlx::Error| file_error(path, format!("staging: {e}"));
    let columns: Vec<String> = headers
        .iter()
        .map(|h| format!("{} TEXT", quote(h)))
        .collect();
    pool.execute(AssertSqlSafe(format!(
        "CREATE TABLE {} ({})",
        quote(table),
        columns.join(", ")
    )))
    .await
    .map_err(db_err)?;
    let insert = format!(
        "INSERT INTO {} VALUES ({})",
        quote(table),
        vec!["?"; headers.len()].join(", ")
    );
    let mut tx = pool.begin().await.map_err(db_err)?;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_err)? {
        let mut q = sqlx::query(AssertSqlSafe(insert.clone()));
        for field in record.iter() {
            // Exports have no NULL: an empty cell is a missing value.
            q = q.bind((!field.is_empty()).then(|| field.to_string()));
        }
        q.execute(&mut *tx).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(())
}
