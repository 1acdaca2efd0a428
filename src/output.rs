//! Printing results as a table, CSV or JSON.

use std::io::Write;

use anyhow::Result;
use arrow::array::RecordBatch;
use kartoteka_engine::QueryResult;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A readable table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Standard output could not be written (a full disk; a closed pipe ends the command quietly).
#[derive(Debug)]
pub(crate) struct OutputError(pub(crate) std::io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write the output: {}", self.0)
    }
}

impl std::error::Error for OutputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Did the command stop because its reader closed the pipe?
pub(crate) fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<OutputError>()
            .map(|o| &o.0)
            .or_else(|| c.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            // Writers that keep only the text of an I/O error (Arrow's CSV and JSON writers).
            || c.to_string().contains("Broken pipe (os error 32)")
    })
}

/// How a table is shown to a person: column captions (a metric's units: `revenue, USD`) and what an
/// empty answer says (the period it covered, where the data ends).
#[derive(Debug, Default)]
pub(crate) struct Presentation {
    /// Column → caption in table form (CSV and JSON keep the names, for scripts).
    pub(crate) captions: std::collections::HashMap<String, String>,
    /// Said after "no rows" in table form.
    pub(crate) empty_note: Option<String>,
}

/// Print `result` to stdout. In table form at most `max_rows` rows are shown.
pub(crate) fn print(result: &QueryResult, format: Format, max_rows: Option<usize>) -> Result<()> {
    print_with(result, format, max_rows, &Presentation::default())
}

/// [`print`], presented as `how` says.
pub(crate) fn print_with(
    result: &QueryResult,
    format: Format,
    max_rows: Option<usize>,
    how: &Presentation,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            let total = result.rows();
            let shown: Vec<RecordBatch> = match max_rows {
                Some(n) if total > n => {
                    let mut left = n;
                    let mut v = Vec::new();
                    for b in &result.batches {
                        if left == 0 {
                            break;
                        }
                        let take = left.min(b.num_rows());
                        v.push(b.slice(0, take));
                        left -= take;
                    }
                    v
                }
                _ => result.batches.clone(),
            };
            if total == 0 {
                match &how.empty_note {
                    Some(note) => writeln!(out, "(no rows {note})")?,
                    None => writeln!(out, "(no rows)")?,
                }
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(
                        &shown
                            .iter()
                            .map(|b| round_floats(b, &how.captions))
                            .collect::<Result<Vec<_>>>()?
                    )?
                )?;
            }
            if let Some(n) = max_rows.filter(|n| total > *n) {
                writeln!(
                    out,
                    "… {} more rows (use --format csv or json for all of them)",
                    total - n
                )?;
            }
            writeln!(
                out,
                "{total} row(s); data as of snapshot {} ({}); {:.3} s",
                result.snapshot_id,
                result.snapshot_time.format("%Y-%m-%d %H:%M:%S UTC"),
                result.elapsed.as_secs_f64()
            )?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &result.batches {
                w.write(b)?;
            }
            if result.rows() == 0 {
                // No batch, no header from the writer: the columns are still the answer's shape.
                w.write(&RecordBatch::new_empty(std::sync::Arc::clone(
                    &result.schema,
                )))?;
            }
            drop(w);
            note_snapshot(result);
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&RecordBatch> = result.batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            drop(w);
            writeln!(out)?;
            note_snapshot(result);
        }
    }
    Ok(())
}

/// For people, ratios and minutes read better with four decimals, and columns with their captions;
/// CSV and JSON keep full precision and the names.
fn round_floats(
    batch: &RecordBatch,
    captions: &std::collections::HashMap<String, String>,
) -> Result<RecordBatch> {
    use arrow::array::{Array, ArrayRef, Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = captions.get(field.name()).unwrap_or(field.name());
        match column.as_any().downcast_ref::<Float64Array>() {
            Some(values) => {
                let text: StringArray = values
                    .iter()
                    .map(|v| v.map(|v| format!("{v:.4}")))
                    .collect();
                fields.push(Field::new(name, DataType::Utf8, true));
                columns.push(Arc::new(text));
            }
            None => {
                fields.push(field.as_ref().clone().with_name(name));
                columns.push(Arc::clone(column));
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn note_snapshot(result: &QueryResult) {
    eprintln!(
        "{} row(s); data as of snapshot {} ({})",
        result.rows(),
        result.snapshot_id,
        result.snapshot_time.format("%Y-%m-%d %H:%M:%S UTC")
    );
}
