//! Progress bars for long steps (drawn only when stderr is a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// Shows one line per table while ingesting.
#[derive(Debug, Default)]
pub(crate) struct IngestBars {
    bar: Mutex<Option<ProgressBar>>,
}

impl kartoteka_ingest::Progress for IngestBars {
    fn table_started(&self, table: &str) {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:>20} {human_pos:>10} rows  {per_sec}")
                .expect("valid template"),
        );
        bar.set_prefix(table.to_string());
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    fn rows(&self, rows: u64) {
        if let Some(b) = self.bar.lock().expect("not poisoned").as_ref() {
            b.inc(rows);
        }
    }

    fn table_done(&self, _table: &str, _rows: u64) {
        if let Some(b) = self.bar.lock().expect("not poisoned").take() {
            b.finish();
        }
    }
}

impl kartoteka_ingest::JobProgress for IngestBars {
    fn source_opened(&self, name: &str, source: &str, mapping: &str) {
        eprintln!("ingesting source {name} ({source}) with mapping {mapping}");
    }
}

/// A spinner with a message, for steps without a count.
pub(crate) fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
