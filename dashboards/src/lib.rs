//! Kartoteka's web door: an HTTPS server (rustls, ring) whose routes are declared once with who may
//! open them, security headers on every response, and the certificate it serves — from the config, or
//! a local CA and server certificate generated on first start. Sign-in and the role dashboards are
//! built on it (see the README's "Web" section for what is there today).
//!
//! Dependency direction: dashboards → reports → queries → engine, never the other way round.

pub mod qr;
pub mod server;
pub mod tls;
pub mod totp;

pub use server::{Access, ROUTES, Route, SECURITY_HEADERS, router, serve};
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
