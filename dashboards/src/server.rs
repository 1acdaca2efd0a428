//! The HTTPS server: every route is declared once in [`ROUTES`] with who may open it, the router is
//! built from that table (a route without a rule cannot exist), every response carries the security
//! headers, and every connection is TLS unless plain HTTP was asked for on loopback.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// Who may open a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (health check, the stylesheet).
    Open,
}

/// One route of the web app: where, who may open it, and what answers.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path.
    pub path: &'static str,
    /// Who may open it.
    pub access: Access,
    /// The handler.
    pub handler: fn() -> MethodRouter,
}

/// Every route the server answers, with its rule. Anything else is 404.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        access: Access::Open,
        handler: || get(|| async { "ok" }),
    },
    Route {
        method: "GET",
        path: "/assets/app.css",
        access: Access::Open,
        handler: || {
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) })
        },
    },
];

/// The stylesheet, served by the binary (no CDN, no inline style).
const APP_CSS: &str = include_str!("assets/app.css");

/// The security headers every response carries: HSTS, a CSP allowing no inline script or style and
/// no framing, no MIME sniffing, no referrer.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// The router: each of [`ROUTES`] with its handler, the security headers on every response.
pub fn router() -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "Страница не найдена / Not found")
        })
        .layer(axum::middleware::map_response(secure))
}

async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// Serve `app` on `listener` until `shutdown` resolves. Plain HTTP (`tls` = `None`) is refused unless
/// the listener is on loopback.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Listen(e.to_string()))?;
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(Error::Listen(format!(
            "plain HTTP on {addr} would send passwords and session cookies in the clear; it is \
             allowed on loopback only (127.0.0.1, ::1)"
        )));
    }
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let http = hyper::server::conn::http1::Builder::new();
            let outcome = match acceptor {
                Some(acceptor) => {
                    // A peer that never finishes its handshake does not hold a task for ever.
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => http
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                            .map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
                None => http
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = outcome {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
