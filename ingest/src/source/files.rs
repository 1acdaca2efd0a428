//! CRM export files (amoCRM, Bitrix24, HubSpot export CSV or XLSX): each file named in the mapping's
//! `[files.NAME]` is streamed into table `NAME` of a private SQLite staging database — text columns
//! named by the header row, empty cells as NULL — and the mapping's queries then run over it like over
//! any SQLite source. Structural errors (encoding, a row with the wrong number of fields, a bad header,
//! an Excel error cell) name the file and line (CSV) or sheet and cell (XLSX); value errors name table,
//! column and row as for every source.
//!
//! XLSX cells become the text a person sees without formatting: whole numbers as integers, other
//! numbers in their shortest exact decimal form, dates as `YYYY-MM-DD` and date-times as
//! `YYYY-MM-DD HH:MM:SS[.fff]` (wall-clock: the mapping's `[time] zone` applies, as for any text time).
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
    /// XLSX only: the worksheet to read (default: the first).
    pub sheet: Option<String>,
}

impl FileSpec {
    fn is_xlsx(&self) -> bool {
        self.path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("xlsx") || e.eq_ignore_ascii_case("xlsm"))
    }
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
    let db_err = |cause| file_error(dir, format!("the staging database failed: {cause}"));
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
        if spec.is_xlsx() {
            import_xlsx(&pool, name, &path, spec).await?;
        } else {
            import_csv(&pool, name, &path, spec).await?;
        }
    }
    pool.close().await;
    SqliteSource::open_staged(&db, staging, dir).await
}

/// One staging table being filled: created from a header, rows inserted in one transaction.
struct StagingTable<'a> {
    tx: sqlx::Transaction<'a, sqlx::Sqlite>,
    insert: String,
    width: usize,
    path: &'a Path,
}

impl<'a> StagingTable<'a> {
    /// Check the header (`what` says where it is, e.g. "line 1") and create the table.
    async fn create(
        pool: &'a sqlx::SqlitePool,
        table: &str,
        headers: &[String],
        path: &'a Path,
        what: &str,
    ) -> Result<StagingTable<'a>> {
        if headers.is_empty() || headers.iter().any(|h| h.is_empty()) {
            return Err(file_error(
                path,
                format!("{what}: every column needs a name in the header"),
            ));
        }
        for (i, h) in headers.iter().enumerate() {
            if headers[..i].contains(h) {
                return Err(file_error(
                    path,
                    format!("{what}: column {h:?} appears twice"),
                ));
            }
        }
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let columns: Vec<String> = headers
            .iter()
            .map(|h| format!("{} TEXT", quote(h)))
            .collect();
        let db_err = |e: sqlx::Error| file_error(path, format!("staging: {e}"));
        pool.execute(AssertSqlSafe(format!(
            "CREATE TABLE {} ({})",
            quote(table),
            columns.join(", ")
        )))
        .await
        .map_err(db_err)?;
        Ok(StagingTable {
            tx: pool.begin().await.map_err(db_err)?,
            insert: format!(
                "INSERT INTO {} VALUES ({})",
                quote(table),
                vec!["?"; headers.len()].join(", ")
            ),
            width: headers.len(),
            path,
        })
    }

    /// Insert one row of `width` fields; `None` is a missing value.
    async fn insert<I: IntoIterator<Item = Option<String>>>(&mut self, fields: I) -> Result<()> {
        let mut q = sqlx::query(AssertSqlSafe(self.insert.clone()));
        let mut n = 0;
        for field in fields {
            q = q.bind(field);
            n += 1;
        }
        debug_assert_eq!(n, self.width, "a staging row has the header's width");
        q.execute(&mut *self.tx)
            .await
            .map_err(|e| file_error(self.path, format!("staging: {e}")))?;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx
            .commit()
            .await
            .map_err(|e| file_error(path, format!("staging: {e}")))
    }
}

async fn import_csv(
    pool: &sqlx::SqlitePool,
    table: &str,
    path: &Path,
    spec: &FileSpec,
) -> Result<()> {
    if spec.sheet.is_some() {
        return Err(file_error(
            path,
            "`sheet` is for XLSX files; this file is read as CSV",
        ));
    }
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
    let mut staging = StagingTable::create(pool, table, &headers, path, "line 1").await?;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_err)? {
        // Exports have no NULL: an empty cell is a missing value.
        staging
            .insert(
                record
                    .iter()
                    .map(|field| (!field.is_empty()).then(|| field.to_string())),
            )
            .await?;
    }
    staging.commit().await
}

/// Rows travel from the XLSX reading thread to the staging database in chunks of this many.
const XLSX_CHUNK: usize = 1024;

/// What the XLSX reading thread sends: the header, then rows (1-based sheet row, cells), or an error.
enum XlsxRows {
    Header(Vec<String>),
    Rows(Vec<(u32, Vec<Option<String>>)>),
}

async fn import_xlsx(
    pool: &sqlx::SqlitePool,
    table: &str,
    path: &Path,
    spec: &FileSpec,
) -> Result<()> {
    if spec.delimiter.is_some() || spec.encoding.is_some() {
        return Err(file_error(
            path,
            "`delimiter` and `encoding` are for CSV files; an XLSX file carries its own",
        ));
    }
    // calamine reads synchronously: a blocking thread streams the sheet's cells, a bounded channel
    // keeps memory to a few chunks whatever the sheet's size.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<XlsxRows>>(4);
    let owned_path = path.to_path_buf();
    let sheet = spec.sheet.clone();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = read_xlsx(&owned_path, sheet.as_deref(), &tx) {
            // The receiver may be gone (it failed first); its error is the one reported then.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut staging = None;
    while let Some(msg) = rx.recv().await {
        match msg? {
            XlsxRows::Header(headers) => {
                staging =
                    Some(StagingTable::create(pool, table, &headers, path, "the header row").await?)
            }
            XlsxRows::Rows(rows) => {
                let staging = staging.as_mut().expect("the header comes first");
                for (_, cells) in rows {
                    staging.insert(cells).await?;
                }
            }
        }
    }
    reader
        .await
        .map_err(|e| file_error(path, format!("the XLSX reader failed: {e}")))?;
    match staging {
        Some(staging) => staging.commit().await,
        None => Err(file_error(
            path,
            "the sheet is empty: it needs a header row naming the columns",
        )),
    }
}

/// Excel's column letters for a 0-based column: 0 → A, 26 → AA.
fn column_letters(mut col: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (col % 26) as u8);
        if col < 26 {
            break;
        }
        col = col / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// The text a person reads in a cell, without its display format; `None` for an empty cell.
fn xlsx_cell_text(cell: &calamine::DataRef<'_>) -> std::result::Result<Option<String>, String> {
    use calamine::DataRef;
    Ok(match cell {
        DataRef::Empty => None,
        DataRef::String(s) => (!s.is_empty()).then(|| s.clone()),
        DataRef::SharedString(s) => (!s.is_empty()).then(|| s.to_string()),
        DataRef::Int(v) => Some(v.to_string()),
        // 2^53: beyond it a float no longer holds every integer exactly.
        DataRef::Float(v) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
            Some((*v as i64).to_string())
        }
        DataRef::Float(v) if v.is_finite() => Some(v.to_string()),
        DataRef::Float(v) => return Err(format!("{v} is not a number")),
        DataRef::Bool(b) => Some(b.to_string()),
        DataRef::DateTime(d) if d.is_duration() => {
            let ms = (d.as_f64() * 86_400_000.0).round() as i64;
            let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
            let (m, rest) = (rest / 60_000, rest % 60_000);
            Some(format!("{h}:{m:02}:{:02}", rest / 1000))
        }
        DataRef::DateTime(d) => {
            let t = d
                .as_datetime()
                .ok_or_else(|| format!("{} is not a date Excel can hold", d.as_f64()))?;
            Some(if t.time() == chrono::NaiveTime::MIN {
                t.format("%Y-%m-%d").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
            })
        }
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Some(s.clone()),
        DataRef::Error(e) => return Err(format!("the cell holds the error {e}")),
    })
}

/// Read `sheet` (default: the first) of the workbook at `path` and send its header and rows.
fn read_xlsx(
    path: &Path,
    sheet: Option<&str>,
    tx: &tokio::sync::mpsc::Sender<Result<XlsxRows>>,
) -> Result<()> {
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(path)
        .map_err(|e| file_error(path, format!("cannot open as XLSX: {e}")))?;
    let names = book.sheet_names();
    let sheet = match sheet {
        Some(s) if names.iter().any(|n| n == s) => s.to_string(),
        Some(s) => {
            return Err(file_error(
                path,
                format!("no sheet {s:?}; the workbook has {names:?}"),
            ));
        }
        None => names
            .first()
            .cloned()
            .ok_or_else(|| file_error(path, "the workbook has no sheets"))?,
    };
    let mut cells = book
        .worksheet_cells_reader(&sheet)
        .map_err(|e| file_error(path, format!("sheet {sheet:?}: {e}")))?;
    let at =
        |row: u32, col: u32| format!("sheet {sheet:?}, cell {}{}", column_letters(col), row + 1);
    let send = |msg: XlsxRows| -> bool { tx.blocking_send(Ok(msg)).is_ok() };

    let mut width: Option<u32> = None;
    let mut first_col = 0u32;
    let mut current: Option<(u32, Vec<Option<String>>)> = None;
    let mut chunk: Vec<(u32, Vec<Option<String>>)> = Vec::new();
    loop {
        let cell = cells
            .next_cell()
            .map_err(|e| file_error(path, format!("sheet {sheet:?}: {e}")))?;
        let (row, col) = match &cell {
            Some(c) => c.get_position(),
            None => (u32::MAX, 0),
        };
        // A new row begins: the row just read is complete.
        if (current.as_ref().is_some_and(|(r, _)| *r != row) || cell.is_none())
            && let Some((r, values)) = current.take()
        {
            if width.is_none() {
                // The first row with anything in it is the header.
                let mut header: Vec<String> = values
                    .into_iter()
                    .map(|v| v.unwrap_or_default().trim().to_string())
                    .collect();
                while header.last().is_some_and(String::is_empty) {
                    header.pop();
                }
                width = Some(header.len() as u32);
                if !send(XlsxRows::Header(header)) {
                    return Ok(());
                }
            } else if values.iter().any(Option::is_some) {
                chunk.push((r + 1, values));
                if chunk.len() == XLSX_CHUNK && !send(XlsxRows::Rows(std::mem::take(&mut chunk))) {
                    return Ok(());
                }
            }
        }
        let Some(cell) = cell else { break };
        let text = xlsx_cell_text(cell.get_value())
            .map_err(|e| file_error(path, format!("{}: {e}", at(row, col))))?;
        if current.is_none() {
            if width.is_none() {
                first_col = col;
            }
            let w = width.map_or(0, |w| w as usize);
            current = Some((row, vec![None; w]));
        }
        let (_, values) = current.as_mut().expect("set above");
        match width {
            None => {
                // Header cells: a gap is kept as an empty name (refused when the header is checked).
                let i = (col.saturating_sub(first_col)) as usize;
                if values.len() <= i {
                    values.resize(i + 1, None);
                }
                values[i] = text;
            }
            Some(w) => {
                let i = col.checked_sub(first_col).filter(|i| *i < w);
                match (i, text) {
                    (Some(i), text) => values[i as usize] = text,
                    (None, None) => {}
                    (None, Some(_)) => {
                        return Err(file_error(
                            path,
                            format!(
                                "{}: a value outside the header's columns ({}{} to {}{})",
                                at(row, col),
                                column_letters(first_col),
                                1,
                                column_letters(first_col + w.max(1) - 1),
                                1
                            ),
                        ));
                    }
                }
            }
        }
    }
    if !chunk.is_empty() {
        send(XlsxRows::Rows(chunk));
    }
    Ok(())
}
