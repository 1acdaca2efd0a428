//! Kartoteka's end-to-end tests, one module per area, in one test binary: each test binary links
//! DataFusion, so ten binaries cost ten long links. Filter by module: `cargo test --workspace -- trust::`.

mod common;

mod browser;
mod cli;
mod files;
mod governance;
mod oracle;
mod own_crm;
mod reports;
mod rulings;
mod security;
mod servers;
mod slt;
mod sync;
mod trust;
mod web;
