//! The web door's server, over real TLS on a port the OS picks: the generated certificate chain is
//! trusted through its local CA (and only through it), every route answers as its rule says, every
//! response carries the security headers, plain HTTP is refused off loopback and not spoken on the TLS
//! port.

use std::sync::Arc;

use kartoteka_dashboards::{Access, ROUTES, SECURITY_HEADERS};

/// A server on 127.0.0.1:0 with a certificate generated under `dir`: its address and the local CA.
async fn start(
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    Vec<u8>,
    tokio::sync::oneshot::Sender<()>,
) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert =
        kartoteka_dashboards::load_or_generate(dir, None, None, &names).expect("certificate");
    assert!(cert.generated);
    let ca_pem = std::fs::read(cert.ca_path.as_ref().expect("a generated CA")).expect("ca");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kartoteka_dashboards::serve(
        listener,
        Some(cert.config),
        kartoteka_dashboards::router(),
        async {
            let _ = stopped.await;
        },
    ));
    (addr, ca_pem, stop)
}

/// A client trusting only `ca_pem`.
fn client(ca_pem: &[u8]) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca_pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(roots.len(), 1, "one CA certificate");
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .new_agent()
}

#[tokio::test]
async fn the_server_speaks_only_tls_with_its_certificate_and_sends_the_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca_pem, stop) = start(dir.path()).await;
    let port = addr.port();
    let outcome = tokio::task::spawn_blocking(move || {
        let agent = client(&ca_pem);
        // Every route in the table answers as its rule says, with the headers.
        for route in ROUTES {
            let url = format!("https://localhost:{port}{}", route.path);
            let response = match route.method {
                "GET" => agent.get(&url).call(),
                other => panic!("a route with method {other}: extend this test"),
            }
            .unwrap_or_else(|e| panic!("{url}: {e}"));
            let want = match route.access {
                Access::Open => 200,
            };
            assert_eq!(
                response.status().as_u16(),
                want,
                "{} {}",
                route.method,
                route.path
            );
            for (name, value) in SECURITY_HEADERS {
                assert_eq!(
                    response.headers().get(*name).and_then(|v| v.to_str().ok()),
                    Some(*value),
                    "{name} on {}",
                    route.path
                );
            }
        }
        // No inline script or style may run.
        let csp = SECURITY_HEADERS
            .iter()
            .find(|(n, _)| *n == "content-security-policy")
            .map(|(_, v)| *v)
            .expect("a CSP");
        assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"));
        let health = agent
            .get(&format!("https://127.0.0.1:{port}/health"))
            .call()
            .expect("by IP too")
            .into_body()
            .read_to_string()
            .expect("body");
        assert_eq!(health, "ok");
        // Anything else: 404, with the headers.
        let missing = agent
            .get(&format!("https://localhost:{port}/admin"))
            .call()
            .expect("answers");
        assert_eq!(missing.status().as_u16(), 404);
        assert!(missing.headers().contains_key("strict-transport-security"));
        // A client that does not trust the local CA is refused the connection.
        let stranger = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .unversioned_rustls_crypto_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .build(),
            )
            .build()
            .new_agent();
        let e = stranger
            .get(&format!("https://localhost:{port}/health"))
            .call()
            .expect_err("an unknown CA");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        // Plain HTTP on the TLS port gets no answer.
        assert!(
            ureq::get(&format!("http://localhost:{port}/health"))
                .call()
                .is_err()
        );
    })
    .await;
    let _ = stop.send(());
    outcome.expect("client checks");

    // The generated key is private; a second start serves the same certificate.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls").join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key.pem is private: {mode:o}");
    }
    let names = vec!["localhost".to_string()];
    let first =
        kartoteka_dashboards::load_or_generate(dir.path(), None, None, &names).expect("again");
    assert!(!first.generated);
    let der = std::fs::read(dir.path().join("tls").join("cert.pem")).expect("cert");
    assert!(!first.fingerprint.is_empty() && !der.is_empty());
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback_and_half_a_pair_is_an_error() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let e = kartoteka_dashboards::serve(listener, None, kartoteka_dashboards::router(), async {})
        .await
        .expect_err("plain HTTP on every interface");
    assert!(e.to_string().contains("loopback"), "{e}");
    let dir = tempfile::tempdir().expect("tempdir");
    let e = kartoteka_dashboards::load_or_generate(
        dir.path(),
        Some(&dir.path().join("cert.pem")),
        None,
        &[],
    )
    .expect_err("a certificate without its key");
    assert!(e.to_string().contains("both cert and key"), "{e}");
}
