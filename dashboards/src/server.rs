//! The HTTPS server: every route is declared once in [`ROUTES`] with who may open it, the router is
//! built from that table (a route without a rule cannot exist), every response carries the security
//! headers, and every connection is TLS unless plain HTTP was asked for on loopback.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kartoteka_engine::Role;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

use crate::app::{App, Peer};
use crate::{Error, Result, auth, pages};

/// Who may open a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (health check, the stylesheet, the language switch).
    Open,
    /// Anyone not yet signed in (the sign-in form); a signed-in user is sent home.
    SignIn,
    /// A sign-in half done (the password was right): a new password, the second factor.
    SignInStep,
    /// Any session, half or whole (sign-out).
    AnySession,
    /// Signed in with one of these roles.
    Signed(&'static [Role]),
}

/// One route of the web app: where, who may open it, and what answers.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path (`{name}` for a path parameter).
    pub path: &'static str,
    /// Who may open it.
    pub access: Access,
    /// The handler.
    pub handler: fn() -> MethodRouter<Arc<App>>,
}

/// Roles that read CRM data.
pub const DATA_ROLES: &[Role] = &[Role::Owner, Role::Manager, Role::TeamLead, Role::Analyst];

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
    Route {
        method: "GET",
        path: "/language",
        access: Access::Open,
        handler: || get(auth::language),
    },
    Route {
        method: "GET",
        path: "/login",
        access: Access::SignIn,
        handler: || get(auth::login_form),
    },
    Route {
        method: "POST",
        path: "/login",
        access: Access::SignIn,
        handler: || post(auth::login_submit),
    },
    Route {
        method: "GET",
        path: "/login/password",
        access: Access::SignInStep,
        handler: || get(auth::password_form),
    },
    Route {
        method: "POST",
        path: "/login/password",
        access: Access::SignInStep,
        handler: || post(auth::password_submit),
    },
    Route {
        method: "GET",
        path: "/login/enrol",
        access: Access::SignInStep,
        handler: || get(auth::enrol_form),
    },
    Route {
        method: "POST",
        path: "/login/enrol",
        access: Access::SignInStep,
        handler: || post(auth::enrol_submit),
    },
    Route {
        method: "GET",
        path: "/login/code",
        access: Access::SignInStep,
        handler: || get(auth::code_form),
    },
    // After a wrong password the code form is shown too, without a session: its answer is the one
    // failure message.
    Route {
        method: "POST",
        path: "/login/code",
        access: Access::SignIn,
        handler: || post(auth::code_submit),
    },
    Route {
        method: "POST",
        path: "/logout",
        access: Access::AnySession,
        handler: || post(auth::logout),
    },
    Route {
        method: "GET",
        path: "/",
        access: Access::Signed(&[
            Role::Owner,
            Role::Manager,
            Role::TeamLead,
            Role::Analyst,
            Role::Admin,
        ]),
        handler: || get(pages::home),
    },
    Route {
        method: "GET",
        path: "/owner",
        access: Access::Signed(&[Role::Owner]),
        handler: || get(pages::board),
    },
    Route {
        method: "GET",
        path: "/manager",
        access: Access::Signed(&[Role::Manager]),
        handler: || get(pages::board),
    },
    Route {
        method: "GET",
        path: "/team",
        access: Access::Signed(&[Role::TeamLead]),
        handler: || get(pages::board),
    },
    Route {
        method: "GET",
        path: "/catalog",
        access: Access::Signed(DATA_ROLES),
        handler: || get(pages::catalog),
    },
    Route {
        method: "GET",
        path: "/metric/{name}",
        access: Access::Signed(DATA_ROLES),
        handler: || get(pages::metric),
    },
    Route {
        method: "GET",
        path: "/metric/{name}/csv",
        access: Access::Signed(DATA_ROLES),
        handler: || get(pages::metric_csv),
    },
    Route {
        method: "GET",
        path: "/admin",
        access: Access::Signed(&[Role::Owner, Role::Admin]),
        handler: || get(pages::admin),
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

/// The router: each of [`ROUTES`] with its handler behind the guard (its access rule, the session,
/// the CSRF check), the security headers on every response.
pub fn router(app: Arc<App>) -> Router {
    let mut router: Router<Arc<App>> = Router::new();
    // One path may carry several methods: merge them into one method router.
    let mut paths: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    for path in paths {
        let mut methods: Option<MethodRouter<Arc<App>>> = None;
        for route in ROUTES.iter().filter(|r| r.path == path) {
            let handler = (route.handler)();
            methods = Some(match methods {
                Some(m) => m.merge(handler),
                None => handler,
            });
        }
        if let Some(methods) = methods {
            router = router.route(path, methods);
        }
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .fallback(not_found)
        .with_state(app)
        .layer(axum::middleware::map_response(secure))
}

/// Anything not in [`ROUTES`]: a page that says so, in the reader's language, with the way home.
async fn not_found(headers: axum::http::HeaderMap) -> Response {
    use crate::html::{Lang, page};
    let lang = auth::read_cookie(&headers, auth::LANG_COOKIE).map_or(Lang::Ru, Lang::parse);
    let body = format!(
        "<p>{}</p><p><a href=\"/\">{}</a></p>",
        lang.pick(
            "Такой страницы нет. Возможно, ссылка устарела.",
            "There is no such page. The link may be out of date."
        ),
        lang.pick("На главную", "Home")
    );
    (
        StatusCode::NOT_FOUND,
        axum::response::Html(page(
            lang,
            lang.pick("Страница не найдена", "Page not found"),
            "/",
            None,
            None,
            &body,
        )),
    )
        .into_response()
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
            // Each request learns where its connection came from (the sign-in audit records it).
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                let mut app = app.clone();
                async move { app.call(request.map(Body::new)).await }
            });
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
