//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong inside the engine, each variant saying what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master key does not open the keyring: wrong passphrase or key file.
    #[error(
        "wrong master key: the {source_kind} does not open the keyring of this lake; \
         check KARTOTEKA_PASSPHRASE (or the key file) — the lake itself is unchanged"
    )]
    WrongMasterKey {
        /// "passphrase" or "key file".
        source_kind: &'static str,
    },

    /// The lake is sealed with a passphrase and none was given.
    #[error("this lake is sealed with a passphrase: set KARTOTEKA_PASSPHRASE to open it")]
    PassphraseRequired,

    /// A key needed to read or write is not in the keyring (or not handed to this session).
    #[error("no data key {key_id} for this session: {reason}")]
    MissingKey {
        /// Key id as stored in Parquet key metadata.
        key_id: String,
        /// Why it is missing.
        reason: &'static str,
    },

    /// A cryptographic operation failed: tampered or corrupt key material.
    #[error(
        "keyring entry {what} failed authentication: the keyring file is corrupt or was tampered with"
    )]
    KeyringCorrupt {
        /// Which entry.
        what: String,
    },

    /// Another process holds the single-writer lock of the lake.
    #[error(
        "the lake at {path} is being written by another process (writer lock held); wait for it to finish and retry"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// Someone else committed snapshot `n` first.
    #[error(
        "commit conflict: snapshot {snapshot} already exists (another writer committed first); nothing of this write is visible — retry"
    )]
    CommitConflict {
        /// The snapshot id that was taken.
        snapshot: u64,
    },

    /// The lake directory has no snapshot yet.
    #[error("the lake at {path} has no data yet: run `kartoteka demo` or `kartoteka ingest` first")]
    EmptyLake {
        /// Lake root.
        path: String,
    },

    /// A snapshot manifest failed its checks: its name and id disagree, its authentication code is
    /// missing or wrong, or it does not link to the snapshot before it.
    #[error(
        "snapshot file {path} is not trustworthy: {detail}. Nothing was read from it. Lake metadata must \
         never be edited or copied by hand: restore `_meta/snapshots` from a backup, or move the \
         offending file out of the directory; `kartoteka snapshots` lists what is there"
    )]
    SnapshotInvalid {
        /// The manifest's path in the lake.
        path: String,
        /// What is wrong.
        detail: String,
    },

    /// The newest snapshot on disk is older than (or differs from) the newest commit recorded outside
    /// the snapshot directory: snapshots were deleted, the lake rolled back or a manifest swapped.
    #[error(
        "the lake was rolled back or its snapshots replaced: {detail}. Queries would answer from older \
         data without saying so, so nothing is read. Restore the missing snapshot files (and the data \
         files they list) from a backup; if the lake was restored from a backup on purpose, accept its \
         newest snapshot with `kartoteka snapshots trust --yes` (recorded in the audit log)"
    )]
    RolledBack {
        /// What was found.
        detail: String,
    },

    /// A data file a snapshot lists is gone or has another size than the snapshot recorded.
    #[error(
        "data file {path} of table {table} (snapshot {snapshot}) {problem}: the lake is damaged and \
         nothing was answered. Restore the file (or the whole lake) from a backup, or reload the table \
         from its source with `kartoteka ingest --full`"
    )]
    DataFileMissing {
        /// Table.
        table: String,
        /// Path in the lake.
        path: String,
        /// The snapshot listing it.
        snapshot: u64,
        /// "is missing" or "has N bytes where M were written".
        problem: String,
    },

    /// The lake holds snapshots or data files but no keyring: the files cannot be read, and a new
    /// keyring would not open them either.
    #[error(
        "the lake at {path} holds data but its keyring (_meta/keyring.json) is missing: the lake is \
         damaged. Restore _meta/keyring.json from a backup (with the same master key); a new keyring \
         cannot read the existing files, so none is created"
    )]
    KeyringMissing {
        /// Lake root.
        path: String,
    },

    /// A snapshot or keyring file could not be parsed.
    #[error("lake metadata file {path} is unreadable: {source}")]
    BadMetadata {
        /// Which file.
        path: String,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A table name not in the canonical model.
    #[error("unknown table {0:?}; the canonical tables are: {tables}", tables = crate::model::table_names().join(", "))]
    UnknownTable(String),

    /// A record batch whose schema differs from the table's.
    #[error("batch for table {table} does not match its schema: {detail}")]
    SchemaMismatch {
        /// Table.
        table: String,
        /// What differs.
        detail: String,
    },

    /// The SQL is not a query (DDL, DML, COPY, SET, ...).
    #[error("only queries (SELECT, WITH, VALUES, EXPLAIN) may run here: {0}")]
    NotAQuery(String),

    /// The query ran longer than allowed.
    #[error(
        "query exceeded the time limit of {seconds} s and was cancelled; narrow the period or ask for a higher limit"
    )]
    Timeout {
        /// The limit.
        seconds: u64,
    },

    /// A data file failed AES-GCM authentication while being read.
    #[error(
        "a data file of the lake failed authentication while decrypting (it was modified, corrupted or \
         swapped for another file); nothing was returned. Lake files must never be edited: restore the lake \
         from a backup, or re-ingest. Detail: {0}"
    )]
    Integrity(String),

    /// The principal may not use this lake at all.
    #[error("access denied: {0}")]
    Denied(String),

    /// Something this build or configuration cannot do.
    #[error("not supported: {0}")]
    Unsupported(String),

    /// What a command names does not exist (nothing was changed).
    #[error("{0}")]
    NotFound(String),

    /// A per-role limit was reached (rows, memory).
    #[error("limit reached: {0}")]
    LimitExceeded(String),

    /// The identity store refused or failed.
    #[error("{0}")]
    Control(String),

    /// The audit log or its checkpoints are damaged or cannot be written.
    #[error("audit log: {0}")]
    Audit(String),

    /// A query failed while running (message already fit for the principal who asked).
    #[error("query failed: {0}")]
    Execution(String),

    /// Error from DataFusion (planning or execution).
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// The thread encoding a data file could not start, or stopped without a word.
    #[error("writing a data file failed: {0}; nothing was committed — retry")]
    Writer(String),

    /// Error from the Parquet writer or reader.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Error from Arrow.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Error from the object store.
    #[error("lake storage: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// Local file system error with the path involved.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
