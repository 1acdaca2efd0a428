//! Storage under the lake: an `object_store` (a local directory today, S3-compatible later) plus the
//! durability the commit protocol needs — object_store's local backend does not fsync, so for a local
//! lake every data file, snapshot and their directories are synced here before a commit counts.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// URL under which the lake's store is registered with DataFusion.
pub const LAKE_URL: &str = "kartoteka://lake/";

/// The lake's object store and, for a local lake, its root directory.
#[derive(Debug, Clone)]
pub struct LakeStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl LakeStore {
    /// A lake in a local directory (created if missing).
    pub fn local(root: &FsPath) -> Result<LakeStore> {
        std::fs::create_dir_all(root).map_err(Error::io("cannot create lake directory", root))?;
        let root = root
            .canonicalize()
            .map_err(Error::io("cannot resolve lake directory", root))?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(LakeStore {
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    /// The underlying object store (for DataFusion and the Parquet writer).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Local root directory, when the lake is on the local file system.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    /// Human-readable location for messages.
    pub fn describe(&self) -> String {
        match &self.local_root {
            Some(p) => p.display().to_string(),
            None => LAKE_URL.to_string(),
        }
    }

    pub(crate) async fn exists(&self, path: &str) -> Result<bool> {
        match self.store.head(&Path::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The object's size, `None` when it does not exist.
    pub(crate) async fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.store.head(&Path::from(path)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Bytes> {
        Ok(self.store.get(&Path::from(path)).await?.bytes().await?)
    }

    /// Write (or overwrite atomically) and make durable.
    pub(crate) async fn put_durable(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.store
            .put(&Path::from(path), PutPayload::from(data))
            .await?;
        self.sync(path)
    }

    /// Create only if absent; `Ok(false)` when the object already exists.
    pub(crate) async fn put_if_absent(&self, path: &str, data: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(path), PutPayload::from(data), opts)
            .await
        {
            Ok(_) => {
                self.sync(path)?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?)
    }

    pub(crate) async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// fsync a file and every directory from it up to the lake root (new directories must be durable
    /// too, or a crash can lose a file whose name was never persisted).
    pub(crate) fn sync(&self, path: &str) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(()); // remote stores are durable once `put` returns
        };
        let file = root.join(path);
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(Error::io("cannot fsync", &file))?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("cannot fsync directory", d))?;
            if d == root {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}
