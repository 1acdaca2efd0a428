//! Kartoteka's web door: an HTTPS server (rustls, ring) whose routes are declared once with who may
//! open them ([`ROUTES`]), security headers on every response, the certificate it serves — from the
//! config, or a local CA and server certificate generated on first start — sign-in with a password and
//! a TOTP second factor (`auth`), and the role dashboards (`pages`) drawn by the reports' chart code
//! from catalog metrics run under each viewer's own policy.
//!
//! Dependency direction: dashboards → reports → queries → engine, never the other way round.

pub mod app;
pub mod auth;
pub mod html;
pub mod pages;
pub mod qr;
pub mod server;
pub mod tls;
pub mod totp;

pub use app::{App, Settings, WatchedSource};
pub use server::{Access, DATA_ROLES, ROUTES, Route, SECURITY_HEADERS, router, serve};
pub use tls::{ServerCertificate, load_or_generate};

use std::path::{Path, PathBuf};

/// The web app's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key cannot be read, generated or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A QR code cannot be drawn.
    #[error("QR code: {0}")]
    Qr(String),
    /// The engine or the control plane failed.
    #[error("{0}")]
    Engine(String),
    /// The listener cannot be used as asked.
    #[error("web server: {0}")]
    Listen(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The web app's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
