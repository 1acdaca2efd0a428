//! The demo CRM the report and web benchmarks run over: generated with its history up to today (panels
//! default to periods ending at the snapshot's time), and loaded into an engine's lake.

use std::path::{Path, PathBuf};

use anyhow::Result;
use kartoteka_engine::Engine;
use kartoteka_ingest::demo::{self, DemoConfig};
use kartoteka_ingest::{Mapping, NoProgress, Source, SqliteSource};

/// Generate the demo CRM at `scale` (seed 42) as `dir/demo-crm.sqlite`; its path.
pub(crate) async fn generate(dir: &Path, scale: f64) -> Result<PathBuf> {
    let db = dir.join("demo-crm.sqlite");
    demo::generate(
        &db,
        DemoConfig {
            seed: 42,
            scale,
            end: chrono::Utc::now().date_naive(),
        },
    )
    .await?;
    Ok(db)
}

/// Ingest the demo CRM at `db` into `engine`'s lake through the demo mapping.
pub(crate) async fn ingest(engine: &Engine, db: &Path) -> Result<()> {
    let mapping = Mapping::parse(demo::MAPPING, Path::new("demo-mapping.toml"))?;
    let source = Source::Sqlite(SqliteSource::open(db).await?);
    kartoteka_ingest::ingest(
        engine,
        &source,
        &mapping,
        "bench",
        &NoProgress,
        Default::default(),
    )
    .await?;
    Ok(())
}
