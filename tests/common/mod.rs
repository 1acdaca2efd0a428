//! Helpers shared by the end-to-end tests.
#![allow(dead_code, unreachable_pub)]

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Every cell of a result as text (NULL as "NULL"), row by row.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formattable"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

/// Kopecks as the lake prints DECIMAL(18,2).
pub fn money(kopecks: i64) -> String {
    let sign = if kopecks < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", kopecks.abs() / 100, kopecks.abs() % 100)
}

/// The kartoteka binary.
pub fn kartoteka() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kartoteka"));
    c.env_remove("KARTOTEKA_PASSPHRASE")
        .env_remove("KARTOTEKA_FAILPOINT")
        .env_remove("KARTOTEKA_HOME");
    c
}
