//! Decrypted Parquet footers kept between statements, per key set.
//!
//! DataFusion 55 does not cache the metadata of an encrypted file (one cache per path would hand a
//! footer decrypted with one session's keys to a session without them), so every statement decrypted
//! and parsed every footer — and page index — it read again: most of a small query's fixed cost.
//! Here a footer is kept under (file path, file size, the session's key ids, the page-index policy it
//! was read with): a session gets only what was decrypted with exactly the keys it holds, so the
//! statistics and page index of a pii column never reach a session without the pii key (such a
//! session cannot decrypt them and gets its own entry without them). Data files are immutable and
//! named once (a rewrite writes a new path), and the size is checked against the snapshot before
//! every session, so an entry never describes other bytes than the file's.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::ParquetMetaData;

/// Footers held at most (the demo lake at scale 10 has a dozen files; a large lake a few thousand).
const CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: String,
    size: u64,
    keys: Arc<str>,
    policy: String,
}

#[derive(Default)]
struct Entries {
    footers: HashMap<Key, Arc<ParquetMetaData>>,
    order: VecDeque<Key>,
}

/// The engine's footer cache, shared by its sessions.
#[derive(Default)]
pub(crate) struct FooterCache {
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for FooterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FooterCache")
            .field("footers", &self.lock().footers.len())
            .finish()
    }
}

impl FooterCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every change is one statement: a panic elsewhere leaves a consistent map.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &Key) -> Option<Arc<ParquetMetaData>> {
        self.lock().footers.get(key).cloned()
    }

    fn put(&self, key: Key, footer: Arc<ParquetMetaData>) {
        let mut entries = self.lock();
        if entries.footers.contains_key(&key) {
            return;
        }
        while entries.footers.len() >= CAPACITY {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            entries.footers.remove(&oldest);
        }
        entries.order.push_back(key.clone());
        entries.footers.insert(key, footer);
    }
}

/// Readers for one session's scans: footers through the cache under the session's key ids.
#[derive(Debug)]
pub(crate) struct CachedFooters {
    inner: DefaultParquetFileReaderFactory,
    cache: Arc<FooterCache>,
    keys: Arc<str>,
}

impl CachedFooters {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        cache: Arc<FooterCache>,
        keys: Arc<str>,
    ) -> CachedFooters {
        CachedFooters {
            inner: DefaultParquetFileReaderFactory::new(store),
            cache,
            keys,
        }
    }
}

impl ParquetFileReaderFactory for CachedFooters {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let path = file.object_meta.location.to_string();
        let size = file.object_meta.size;
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(CachedReader {
            inner,
            cache: Arc::clone(&self.cache),
            path,
            size,
            keys: Arc::clone(&self.keys),
        }))
    }
}

struct CachedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    cache: Arc<FooterCache>,
    path: String,
    size: u64,
    keys: Arc<str>,
}

impl AsyncFileReader for CachedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let key = Key {
                path: self.path.clone(),
                size: self.size,
                keys: Arc::clone(&self.keys),
                policy: format!(
                    "{:?}/{:?}",
                    options.map(|o| o.column_index_policy()),
                    options.map(|o| o.offset_index_policy())
                ),
            };
            if let Some(footer) = self.cache.get(&key) {
                return Ok(footer);
            }
            let footer = self.inner.get_metadata(options).await?;
            self.cache.put(key, Arc::clone(&footer));
            Ok(footer)
        }
        .boxed()
    }
}

/// `plan` with its Parquet scan reading footers through `cache` under `keys`; any other plan as is.
pub(crate) fn through_cache(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    state: &dyn datafusion::catalog::Session,
    cache: &Arc<FooterCache>,
    keys: &Arc<str>,
) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    let Some(exec) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<DataSourceExec>() else {
        return Ok(plan);
    };
    let Some((conf, parquet)) = exec.downcast_to_file_source::<ParquetSource>() else {
        return Ok(plan);
    };
    let store = state
        .runtime_env()
        .object_store(conf.object_store_url.clone())?;
    let source = parquet
        .clone()
        .with_parquet_file_reader_factory(Arc::new(CachedFooters::new(
            store,
            Arc::clone(cache),
            Arc::clone(keys),
        )));
    let conf = FileScanConfigBuilder::from(conf.clone())
        .with_source(Arc::new(source))
        .build();
    Ok(DataSourceExec::from_data_source(conf))
}
