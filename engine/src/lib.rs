//! Kartoteka's engine: the encrypted Parquet lake (manifest, commits, garbage collection), the keyring,
//! the canonical CRM model and the DataFusion query session.
//!
//! It owns every byte at rest and every path to a row: other crates write only through
//! [`lake::TableWriter`] and read only through [`session::Engine::session`], which builds a session for
//! one principal. It must never know about HTTP, schedules or sources, and never log or print a key.

pub mod audit;
pub mod calendar;
pub mod control;
mod deadline;
pub mod deletions;
pub mod error;
pub mod failpoint;
mod footers;
mod id_set;
pub mod keyring;
pub mod lake;
mod limits;
pub mod maintenance;
pub mod model;
pub mod password;
pub mod percentile;
pub mod policy;
pub mod principal;
pub mod reconcile;
pub mod second_factor;
pub mod session;
mod sized;
pub mod store;
pub mod time;
pub mod web_session;
pub mod zone;

pub use error::{Error, Result};
pub use keyring::MasterKeySource;
pub use lake::{
    CommitLedger, CommitRecord, DataFile, Lake, MappingFacts, Snapshot, TableWriter, WriteTxn,
};
pub use session::{Engine, EngineConfig, Limits, Principal, QueryResult, QuerySession, Role};
pub use store::LakeStore;

#[cfg(test)]
mod tests;
