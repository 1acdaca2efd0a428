//! CRM export files: the demo CRM exported table by table to CSV — contacts in Windows-1251 with `;`
//! (as Russian CRMs export), the rest UTF-8 with `,` — and ingested through the demo's own mapping gives
//! the lake the SQLite demo gives (CSV cannot tell an empty string from a missing value: both compare
//! as missing). The same export as one XLSX workbook (a sheet per table, numbers as numbers, times as
//! Excel date cells) gives the same lake too. Broken files name the file and line (or sheet and cell),
//! and commit nothing.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Principal};
use kartoteka_ingest::demo;
use kartoteka_ingest::{IngestOptions, Mapping, Source, SourceSpec};
use sqlx::Row;

const TABLES: &[&str] = &[
    "users",
    "contacts",
    "funnels",
    "funnel_statuses",
    "leads",
    "lead_status_log",
    "calls",
    "emails",
    "chat_messages",
    "meetings",
    "todo",
    "invoices",
    "responsible_log",
    "sales_plan",
    "ad_budget",
];

/// One demo value as an export holds it.
enum Cell {
    Missing,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Missing => String::new(),
            Cell::Int(v) => v.to_string(),
            Cell::Real(v) => v.to_string(),
            Cell::Text(t) => t.clone(),
        }
    }
}

/// Every demo table: (name, header, rows).
async fn demo_tables(db: &Path) -> Vec<(&'static str, Vec<String>, Vec<Vec<Cell>>)> {
    let pool =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(db))
            .await
            .expect("demo");
    let mut out = Vec::new();
    for table in TABLES {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&pool)
            .await
            .expect("rows");
        let header: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        )))
        .fetch_all(&pool)
        .await
        .expect("columns");
        let rows = rows
            .iter()
            .map(|r| {
                (0..r.columns().len())
                    .map(
                        |i| match kartoteka_ingest::source::sqlite::value(r, i).expect("value") {
                            kartoteka_ingest::batch::Value::Null => Cell::Missing,
                            kartoteka_ingest::batch::Value::Int(v) => Cell::Int(v),
                            kartoteka_ingest::batch::Value::Real(v) => Cell::Real(v),
                            kartoteka_ingest::batch::Value::Text(t) => Cell::Text(t.to_string()),
                            other => panic!("the demo holds no {other:?}"),
                        },
                    )
                    .collect()
            })
            .collect();
        out.push((*table, header, rows));
    }
    pool.close().await;
    out
}

/// Export the demo as one workbook `demo.xlsx` in `dir`, a sheet per table (Russian CRMs name them
/// in Russian: `contacts` is «Контакты»); returns the `[files.*]` sections naming the sheets. Times
/// become Excel date cells, numbers number cells, as a CRM's XLSX export has them.
async fn export_xlsx(db: &Path, dir: &Path) -> String {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let datetime = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let mut book = Workbook::new();
    let mut sections = String::new();
    for (table, header, rows) in demo_tables(db).await {
        let sheet_name = if table == "contacts" {
            "Контакты"
        } else {
            table
        };
        let sheet = book.add_worksheet();
        sheet.set_name(sheet_name).expect("sheet name");
        for (c, h) in header.iter().enumerate() {
            sheet.write_string(0, c as u16, h).expect("header");
        }
        for (r, row) in rows.iter().enumerate() {
            let r = r as u32 + 1;
            for (c, cell) in row.iter().enumerate() {
                let c = c as u16;
                match cell {
                    Cell::Missing => {}
                    Cell::Int(v) => {
                        sheet.write_number(r, c, *v as f64).expect("number");
                    }
                    Cell::Real(v) => {
                        sheet.write_number(r, c, *v).expect("number");
                    }
                    Cell::Text(t) if t.len() == 10 && t.as_bytes()[4] == b'-' => {
                        let d = ExcelDateTime::parse_from_str(t).expect("a demo date");
                        sheet
                            .write_datetime_with_format(r, c, d, &date)
                            .expect("date");
                    }
                    Cell::Text(t) if t.len() == 19 && t.as_bytes()[10] == b' ' => {
                        let d = ExcelDateTime::parse_from_str(t).expect("a demo time");
                        sheet
                            .write_datetime_with_format(r, c, d, &datetime)
                            .expect("time");
                    }
                    Cell::Text(t) => {
                        sheet.write_string(r, c, t).expect("text");
                    }
                }
            }
        }
        sections.push_str(&format!(
            "\n[files.{table}]\npath = \"demo.xlsx\"\nsheet = \"{sheet_name}\"\n"
        ));
    }
    book.save(dir.join("demo.xlsx")).expect("save");
    sections
}

/// Export every demo table to `dir`; returns the `[files.*]` sections naming them.
async fn export(db: &Path, dir: &Path) -> String {
    let mut sections = String::new();
    for (table, header, rows) in demo_tables(db).await {
        let cp1251 = table == "contacts";
        let delimiter = if cp1251 { b';' } else { b',' };
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(Vec::new());
        w.write_record(&header).expect("header");
        for row in &rows {
            let fields: Vec<String> = row.iter().map(Cell::csv).collect();
            w.write_record(&fields).expect("row");
        }
        let text = String::from_utf8(w.into_inner().expect("csv")).expect("utf-8");
        let file = dir.join(format!("{table}.csv"));
        if cp1251 {
            let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(&text);
            assert!(!unmappable, "the demo's contacts fit Windows-1251");
            std::fs::write(&file, bytes).expect("write");
            sections.push_str(&format!(
                "\n[files.{table}]\npath = \"{table}.csv\"\ndelimiter = \";\"\nencoding = \"windows-1251\"\n"
            ));
        } else {
            std::fs::write(&file, text).expect("write");
            sections.push_str(&format!("\n[files.{table}]\npath = \"{table}.csv\"\n"));
        }
    }
    sections
}

/// The demo CRM at `scale` and its CSV export under `dir`: (database, export directory, the demo's
/// mapping with the `[files.*]` sections naming the exports).
async fn exported_demo(dir: &Path, scale: f64) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let db = common::demo_sqlite(dir, scale, 4).await;
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    let sections = export(&db, &exports).await;
    (db, exports, format!("{}{sections}", demo::MAPPING))
}

async fn new_lake(dir: &Path) -> Arc<Lake> {
    std::fs::create_dir_all(dir).expect("dir");
    let store = LakeStore::local(&dir.join("lake")).expect("store");
    let key = MasterKeySource::create_key_file(&dir.join("master.key")).expect("key");
    Arc::new(Lake::open_or_create(store, &key).await.expect("lake"))
}

fn missing_as_null(mut t: Vec<(String, Vec<Vec<String>>)>) -> Vec<(String, Vec<Vec<String>>)> {
    for (_, rows) in &mut t {
        for row in rows {
            for v in row {
                if v.is_empty() {
                    *v = "NULL".into();
                }
            }
        }
    }
    t
}

/// The lake a `files://` ingest of `exports` through `mapping_text` gives equals the SQLite demo's
/// lake from `db` (missing and empty compare equal).
async fn assert_export_gives_the_demo_lake(
    dir: &Path,
    db: &Path,
    exports: &Path,
    mapping_text: &str,
    what: &str,
) {
    let mapping = Mapping::parse(mapping_text, Path::new("m.toml")).expect("mapping");
    let (_, want_lake) = common::ingest_demo_source(&dir.join("a"), db).await;
    let lake = new_lake(&dir.join("b")).await;
    let engine = Engine::new(lake, EngineConfig::default()).expect("engine");
    let source = Source::open_for(
        &SourceSpec::new(format!("files://{}", exports.display())),
        &mapping,
    )
    .await
    .expect("files import");
    common::ingest_reconciled(&engine, &source, &mapping, IngestOptions::default()).await;
    let owner = Principal::local_owner();
    let want = Engine::new(want_lake, EngineConfig::default())
        .expect("engine")
        .session(&owner)
        .await
        .expect("session");
    let got = engine.session(&owner).await.expect("session");
    common::assert_same_contents(
        &missing_as_null(common::lake_contents(&want).await),
        &missing_as_null(common::lake_contents(&got).await),
        what,
    );
}

#[tokio::test]
async fn an_exported_xlsx_workbook_gives_the_same_lake_as_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::demo_sqlite(dir.path(), 0.02, 4).await;
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    let sections = export_xlsx(&db, &exports).await;
    let mapping_text = format!("{}{sections}", demo::MAPPING);
    assert_export_gives_the_demo_lake(
        dir.path(),
        &db,
        &exports,
        &mapping_text,
        "XLSX vs the database",
    )
    .await;
}

#[tokio::test]
async fn broken_xlsx_names_sheet_and_cell_and_commits_nothing() {
    use rust_xlsxwriter::{Formula, Workbook};
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    let mapping_for = |sheet: &str| {
        let text = format!(
            "{}\n[files.users]\npath = \"staff.xlsx\"\nsheet = \"{sheet}\"\n",
            demo::MAPPING
        );
        Mapping::parse(&text, Path::new("m.toml")).expect("mapping")
    };
    let spec = SourceSpec::new(format!("files://{}", exports.display()));
    let write = |build: &dyn Fn(&mut rust_xlsxwriter::Worksheet)| {
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        sheet.set_name("Сотрудники").expect("name");
        for (c, h) in ["id", "full_name", "email"].iter().enumerate() {
            sheet.write_string(0, c as u16, *h).expect("header");
        }
        sheet.write_number(1, 0, 1.0).expect("id");
        sheet.write_string(1, 1, "Анна Петрова").expect("name");
        build(sheet);
        book.save(exports.join("staff.xlsx")).expect("save");
    };

    // An error value left in a cell (a formula that divides by zero), on row 3.
    write(&|s| {
        s.write_number(2, 0, 2.0).expect("id");
        s.write_formula(2, 2, Formula::new("=1/0").set_result("#DIV/0!"))
            .expect("formula");
    });
    let e = Source::open_for(&spec, &mapping_for("Сотрудники"))
        .await
        .expect_err("error cell")
        .to_string();
    assert!(
        e.contains("staff.xlsx")
            && e.contains("Сотрудники")
            && e.contains("C3")
            && e.contains("#DIV/0!"),
        "{e}"
    );

    // A value to the right of the header's columns.
    write(&|s| {
        s.write_string(1, 5, "stray").expect("stray");
    });
    let e = Source::open_for(&spec, &mapping_for("Сотрудники"))
        .await
        .expect_err("stray value")
        .to_string();
    assert!(e.contains("F2") && e.contains("outside the header"), "{e}");

    // A sheet the workbook does not have: the error lists the sheets it has.
    write(&|_| {});
    let e = Source::open_for(&spec, &mapping_for("Staff"))
        .await
        .expect_err("no such sheet")
        .to_string();
    assert!(e.contains("\"Staff\"") && e.contains("Сотрудники"), "{e}");

    // Not a workbook at all.
    std::fs::write(exports.join("staff.xlsx"), "id,full_name\n1,x\n").expect("write");
    let e = Source::open_for(&spec, &mapping_for("Сотрудники"))
        .await
        .expect_err("not xlsx")
        .to_string();
    assert!(e.contains("staff.xlsx") && e.contains("XLSX"), "{e}");
}

#[tokio::test]
async fn exported_csv_files_give_the_same_lake_as_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, exports, mapping_text) = exported_demo(dir.path(), 0.02).await;
    let raw = std::fs::read(exports.join("contacts.csv")).expect("contacts");
    assert!(
        std::str::from_utf8(&raw).is_err(),
        "contacts.csv really is Windows-1251"
    );
    assert_export_gives_the_demo_lake(
        dir.path(),
        &db,
        &exports,
        &mapping_text,
        "CSV exports vs the database",
    )
    .await;
}

#[tokio::test]
async fn broken_files_name_file_and_line_and_commit_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, exports, mapping_text) = exported_demo(dir.path(), 0.01).await;
    let mapping = Mapping::parse(&mapping_text, Path::new("m.toml")).expect("mapping");
    let spec = SourceSpec::new(format!("files://{}", exports.display()));
    let calls = exports.join("calls.csv");
    let good = std::fs::read_to_string(&calls).expect("calls");
    let mut lines: Vec<&str> = good.lines().collect();
    // Line 5 gets one field too many.
    let extra = format!("{},extra", lines[4]);
    lines[4] = &extra;
    std::fs::write(&calls, lines.join("\n")).expect("write");
    let e = Source::open_for(&spec, &mapping)
        .await
        .expect_err("malformed line")
        .to_string();
    assert!(
        e.contains("calls.csv") && e.contains("line 5") && e.contains("header"),
        "{e}"
    );

    // Bytes that are not UTF-8 in a UTF-8 file, on line 3.
    let mut bytes = good.clone().into_bytes();
    let third = good.match_indices('\n').nth(1).expect("lines").0 + 1;
    bytes.insert(third, 0xff);
    std::fs::write(&calls, bytes).expect("write");
    let e = Source::open_for(&spec, &mapping)
        .await
        .expect_err("bad bytes")
        .to_string();
    assert!(
        e.contains("calls.csv") && e.contains("line 3") && e.contains("UTF-8"),
        "{e}"
    );

    // A value of the wrong type: found when the mapping reads it, nothing committed.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let mut fields: Vec<&str> = lines[1].splitn(5, ',').collect();
    fields[3] = "Иванов"; // user_id: ids before any quoted text, so splitting on commas is safe
    lines[1] = fields.join(",");
    std::fs::write(&calls, lines.join("\n")).expect("write");
    let lake = new_lake(&dir.path().join("b")).await;
    let engine = Engine::new(lake.clone(), EngineConfig::default()).expect("engine");
    let source = Source::open_for(&spec, &mapping)
        .await
        .expect("imports (text is text)");
    // Messages name the export folder, not the private staging database it was imported into.
    assert_eq!(source.display(), format!("files://{}", exports.display()));
    let e = common::ingest_error(&engine, &source, &mapping).await;
    assert!(!e.contains("kartoteka-import-"), "{e}");
    assert!(
        e.contains("interactions") && e.contains("staff_id") && e.contains("integer"),
        "{e}"
    );
    assert!(
        lake.snapshot_ids().await.expect("ids").is_empty(),
        "nothing committed"
    );

    // An encoding nobody knows.
    let odd = mapping_text.replace("encoding = \"windows-1251\"", "encoding = \"klingon\"");
    let odd = Mapping::parse(&odd, Path::new("m.toml")).expect("mapping");
    let e = Source::open_for(&spec, &odd)
        .await
        .expect_err("encoding")
        .to_string();
    assert!(e.contains("klingon") && e.contains("windows-1251"), "{e}");
}
