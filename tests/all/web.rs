//! The web door, end to end: `kartoteka serve` on a copy of the demo home, listening on a port the OS
//! picks, over real TLS trusted through the home's generated local CA (and only through it). Sign-in
//! with every negative path, the authorization matrix generated from the route table, the numbers the
//! pages show against the CLI's own answers, and the answer cache's isolation between two managers.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kartoteka_dashboards::totp::{Totp, base32_decode};
use kartoteka_dashboards::{Access, ROUTES, SECURITY_HEADERS};
use kartoteka_engine::Role;

use crate::common;

/// `kartoteka serve` with a `[web]` section, on a home of its own; stopped on drop.
pub(crate) struct Server {
    child: Child,
    /// The port it listens on.
    pub(crate) port: u16,
    /// The local CA's certificate (PEM).
    pub(crate) ca: Vec<u8>,
    /// The home it serves.
    pub(crate) home: tempfile::TempDir,
}

impl Server {
    /// Serve `home` with `web` (the `[web]` section's lines) added to its config.
    pub(crate) fn start(home: tempfile::TempDir, web: &str) -> Server {
        Self::try_start(home, web).unwrap_or_else(|e| panic!("serve did not start: {e}"))
    }

    /// As [`Server::start`], or what the process said when it did not start.
    pub(crate) fn try_start(home: tempfile::TempDir, web: &str) -> Result<Server, String> {
        let config = home.path().join("kartoteka.toml");
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(&format!("\n[web]\n{web}\n"));
        std::fs::write(&config, text).expect("config");
        let mut child = common::kartoteka()
            .arg("--dir")
            .arg(home.path())
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = String::new();
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    said.push_str(&line);
                    said.push('\n');
                    if let Some(rest) = line
                        .strip_prefix("web: https://")
                        .or_else(|| line.strip_prefix("web: http://"))
                    {
                        let addr = rest.split_whitespace().next().expect("an address");
                        let port = addr.rsplit(':').next().expect("a port");
                        break port.parse::<u16>().expect("a port number");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(said);
                }
            }
        };
        let ca = std::fs::read(home.path().join("tls").join("ca.pem")).unwrap_or_default();
        Ok(Server {
            child,
            port,
            ca,
            home,
        })
    }

    /// `https://localhost:PORT` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Run the CLI on the served home.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        common::ok(self.home.path(), args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client trusting only `ca_pem`, following no redirects.
fn agent(ca_pem: &[u8]) -> ureq::Agent {
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
        .max_redirects(0)
        .build()
        .new_agent()
}

/// One response, read whole.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) set_cookies: Vec<String>,
    pub(crate) body: String,
}

impl Page {
    /// The hidden CSRF field's value.
    pub(crate) fn csrf(&self) -> String {
        attribute_after(&self.body, "name=\"csrf\" value=\"").unwrap_or_default()
    }
}

fn attribute_after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_string())
}

/// A browser-like client: one cookie jar, no redirects followed.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Client {
    pub(crate) fn new(server: &Server) -> Client {
        Client {
            agent: agent(&server.ca),
            base: server.url(""),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take(&mut self, response: ureq::http::Response<ureq::Body>) -> Page {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() && !c.contains("Max-Age=0") {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
        let body = response
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    pub(crate) fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if !self.cookies.is_empty() {
            request = request.header("cookie", &self.cookie_header());
        }
        let response = request.call().unwrap_or_else(|e| panic!("{url}: {e}"));
        self.take(response)
    }

    /// `method` on `path`, a POST with an empty form (no CSRF token).
    pub(crate) fn request(&mut self, method: &str, path: &str) -> Page {
        match method {
            "GET" => self.get(path),
            "POST" => self.post(path, &[]),
            other => panic!("a route with method {other}: extend this test"),
        }
    }

    pub(crate) fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("user-agent", "kartoteka-tests/1");
        if !self.cookies.is_empty() {
            request = request.header("cookie", &self.cookie_header());
        }
        let response = request
            .send_form(form.iter().copied())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        self.take(response)
    }
}

/// What a user needs to sign in again: their password and authenticator.
pub(crate) struct Credentials {
    pub(crate) login: String,
    pub(crate) password: String,
    pub(crate) totp: Option<Totp>,
    /// The newest time step used (a code works once).
    pub(crate) last_step: u64,
    pub(crate) recovery: Vec<String>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

impl Credentials {
    /// A code for a step not used before (the next step when this one is spent: the server accepts
    /// one step either side).
    pub(crate) fn fresh_code(&mut self) -> String {
        let totp = self.totp.as_ref().expect("enrolled");
        let mut step = unix_now() / 30;
        if step <= self.last_step {
            step = self.last_step + 1;
        }
        if step > unix_now() / 30 + 1 {
            // Two codes spent within one step: wait for the clock.
            std::thread::sleep(Duration::from_secs(30 - unix_now() % 30 + 1));
            step = unix_now() / 30;
        }
        self.last_step = step;
        totp.hotp(step)
    }
}

/// A copy of the demo home whose history ends today.
pub(crate) fn web_home() -> tempfile::TempDir {
    common::copy_home_of(common::current_demo_home().0.path())
}

/// The demo's initial passwords, from `kartoteka demo`'s output: (login, role, password).
pub(crate) fn demo_passwords() -> Vec<(String, String, String)> {
    let stdout = &common::current_demo_home().1;
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("demo users"))
        .skip(1)
        .map_while(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.len() == 3).then(|| (parts[0].into(), parts[1].into(), parts[2].into()))
        })
        .collect()
}

/// Sign `login` in through every step the server asks for (a new password, enrolment, the code);
/// the credentials to sign in again.
pub(crate) fn sign_in(client: &mut Client, login: &str, password: &str) -> Credentials {
    let mut creds = Credentials {
        login: login.into(),
        password: password.into(),
        totp: None,
        last_step: 0,
        recovery: Vec::new(),
    };
    sign_in_again(client, &mut creds);
    creds
}

/// Sign in with known credentials (enrolling or changing the password when asked).
pub(crate) fn sign_in_again(client: &mut Client, creds: &mut Credentials) {
    let form = client.get("/login");
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = form.csrf();
    let mut page = client.post(
        "/login",
        &[
            ("csrf", &csrf),
            ("login", &creds.login),
            ("password", &creds.password),
        ],
    );
    for _ in 0..6 {
        let Some(next) = page.location.clone() else {
            panic!("sign-in stopped at {}: {}", page.status, page.body);
        };
        match next.as_str() {
            "/" => return,
            "/login/password" => {
                let form = client.get("/login/password");
                let new = format!("{} любит длинные фразы", creds.login.replace('-', " "));
                let new = new.replace(&creds.login, "");
                page = client.post(
                    "/login/password",
                    &[("csrf", &form.csrf()), ("new", &new), ("again", &new)],
                );
                assert_eq!(page.status, 303, "new password refused: {}", page.body);
                creds.password = new;
            }
            "/login/enrol" => {
                let form = client.get("/login/enrol");
                let marker = "<code class=\"secret\">";
                let start = form.body.find(marker).expect("the key in text") + marker.len();
                let end = form.body[start..].find('<').expect("end") + start;
                let secret: String = form.body[start..end]
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                creds.totp = Some(Totp::from_secret(&base32_decode(&secret).expect("base32")));
                let code = creds.fresh_code();
                let done = client.post("/login/enrol", &[("csrf", &form.csrf()), ("code", &code)]);
                assert_eq!(done.status, 200, "{}", done.body);
                creds.recovery = done
                    .body
                    .split("<li><code>")
                    .skip(1)
                    .filter_map(|s| s.split('<').next())
                    .map(str::to_string)
                    .collect();
                assert_eq!(creds.recovery.len(), 10, "ten recovery codes shown");
                return;
            }
            "/login/code" => {
                let form = client.get("/login/code");
                let code = creds.fresh_code();
                page = client.post("/login/code", &[("csrf", &form.csrf()), ("code", &code)]);
            }
            other => panic!("unexpected redirect to {other}"),
        }
    }
    panic!("sign-in did not finish");
}

const FAILED: &str = "Войти не удалось: неверен логин, пароль или код.";

#[test]
fn the_server_speaks_only_tls_with_its_certificate_and_sends_the_security_headers() {
    let server = Server::start(web_home(), "listen = \"127.0.0.1:0\"");
    let agent = agent(&server.ca);
    // Every open route answers, with the headers.
    for route in ROUTES.iter().filter(|r| r.access == Access::Open) {
        let response = agent.get(&server.url(route.path)).call().expect("answers");
        assert_eq!(
            response.status().as_u16(),
            if route.path == "/language" { 400 } else { 200 },
            "{}",
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
    let csp = SECURITY_HEADERS
        .iter()
        .find(|(n, _)| *n == "content-security-policy")
        .map(|(_, v)| *v)
        .expect("a CSP");
    assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"));
    let health = agent
        .get(&format!("https://127.0.0.1:{}/health", server.port))
        .call()
        .expect("by IP too")
        .into_body()
        .read_to_string()
        .expect("body");
    assert_eq!(health, "ok");
    let missing = agent.get(&server.url("/nowhere")).call().expect("answers");
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
        .get(&server.url("/health"))
        .call()
        .expect_err("an unknown CA");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        ureq::get(&format!("http://localhost:{}/health", server.port))
            .call()
            .is_err()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.home.path().join("tls").join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key.pem is private: {mode:o}");
    }
}

#[test]
fn plain_http_is_refused_off_loopback_and_half_a_pair_is_an_error() {
    let said = Server::try_start(web_home(), "listen = \"0.0.0.0:0\"\nplain_http = true")
        .err()
        .expect("plain HTTP on every interface is refused");
    assert!(said.contains("loopback"), "{said}");
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

/// The audit log's `web.sign-in` entries: (target, outcome, step, ip).
fn sign_in_entries(server: &Server) -> Vec<(String, String, String, String)> {
    let log = std::fs::read_to_string(server.home.path().join("audit").join("audit.jsonl"))
        .expect("audit log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == "web.sign-in")
        .map(|e| {
            (
                e["target"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
                e["details"]["step"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["details"]["ip"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn sign_in_takes_password_and_code_and_every_wrong_turn_gets_the_same_answer() {
    let server = Server::start(web_home(), "listen = \"127.0.0.1:0\"");
    let passwords = demo_passwords();
    let initial = |login: &str| {
        passwords
            .iter()
            .find(|(l, _, _)| l == login)
            .map(|(_, _, p)| p.clone())
            .expect("a demo login")
    };
    let mut client = Client::new(&server);
    // Anonymous: sent to sign in.
    let page = client.get("/owner");
    assert_eq!(
        (page.status, page.location.as_deref()),
        (303, Some("/login"))
    );

    // First sign-in: a new password is forced, a weak one refused, then enrolment.
    let form = client.get("/login");
    let pre = form
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-kt-pre="))
        .expect("the pre-sign-in cookie");
    assert!(pre.contains("Secure") && pre.contains("HttpOnly") && pre.contains("SameSite=Strict"));
    let page = client.post(
        "/login",
        &[
            ("csrf", &form.csrf()),
            ("login", "owner"),
            ("password", &initial("owner")),
        ],
    );
    assert_eq!(page.location.as_deref(), Some("/login/password"));
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-kt="))
        .expect("the session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    let form = client.get("/login/password");
    for (weak, why) in [
        ("short one", "не короче 12"),
        ("password12345678", "слишком распространён"),
        (initial("owner").as_str(), "отличаться от прежнего"),
    ] {
        let page = client.post(
            "/login/password",
            &[("csrf", &form.csrf()), ("new", weak), ("again", weak)],
        );
        assert_eq!(page.status, 200);
        assert!(page.body.contains(why), "{weak}: {}", page.body);
    }
    // The owner cannot reach a page before the second factor.
    assert_eq!(client.get("/owner").location.as_deref(), Some("/login"));
    let mut owner = Credentials {
        login: "owner".into(),
        password: initial("owner"),
        totp: None,
        last_step: 0,
        recovery: Vec::new(),
    };
    let new = "три весёлых гуся на рассвете";
    let page = client.post(
        "/login/password",
        &[("csrf", &form.csrf()), ("new", new), ("again", new)],
    );
    assert_eq!(page.location.as_deref(), Some("/login/enrol"));
    owner.password = new.into();
    // Enrolment: the QR code reads back as the key printed beside it.
    let enrol = client.get("/login/enrol");
    assert!(enrol.body.contains("<svg"), "an inline QR code");
    let marker = "<code class=\"secret\">";
    let start = enrol.body.find(marker).expect("key") + marker.len();
    let secret: String = enrol.body[start..]
        .split('<')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    owner.totp = Some(Totp::from_secret(&base32_decode(&secret).expect("base32")));
    let wrong = client.post(
        "/login/enrol",
        &[("csrf", &enrol.csrf()), ("code", "000000")],
    );
    assert!(wrong.body.contains("Код не подошёл"), "{}", wrong.body);
    let code = owner.fresh_code();
    let done = client.post("/login/enrol", &[("csrf", &enrol.csrf()), ("code", &code)]);
    assert_eq!(done.status, 200);
    owner.recovery = done
        .body
        .split("<li><code>")
        .skip(1)
        .filter_map(|s| s.split('<').next())
        .map(str::to_string)
        .collect();
    assert_eq!(owner.recovery.len(), 10);
    let home = client.get("/");
    assert_eq!(home.location.as_deref(), Some("/owner"));
    assert_eq!(client.get("/owner").status, 200);

    // Sign out: the session is gone.
    let page = client.get("/owner");
    let out = client.post("/logout", &[("csrf", &page.csrf())]);
    assert_eq!(out.location.as_deref(), Some("/login"));
    assert_eq!(client.get("/owner").location.as_deref(), Some("/login"));

    // Wrong password: the same code form as a right one, then the one message.
    let mut stranger = Client::new(&server);
    let form = stranger.get("/login");
    let page = stranger.post(
        "/login",
        &[
            ("csrf", &form.csrf()),
            ("login", "owner"),
            ("password", "not the password at all"),
        ],
    );
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("action=\"/login/code\""),
        "the code form"
    );
    let page = stranger.post("/login/code", &[("csrf", &page.csrf()), ("code", "123456")]);
    assert!(page.body.contains(FAILED), "{}", page.body);
    // An unknown login: the same.
    let form = stranger.get("/login");
    let page = stranger.post(
        "/login",
        &[
            ("csrf", &form.csrf()),
            ("login", "nobody"),
            ("password", "whatever it is"),
        ],
    );
    assert!(page.body.contains("action=\"/login/code\""));
    // Back to the sign-in form half-way through: it still works (either token is accepted there).
    let mut back = Client::new(&server);
    for _ in 0..2 {
        let form = back.get("/login");
        let page = back.post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("login", "owner"),
                ("password", &owner.password),
            ],
        );
        assert_eq!(
            page.location.as_deref(),
            Some("/login/code"),
            "{}",
            page.body
        );
    }
    // Right password, wrong code: the same message.
    let mut client = Client::new(&server);
    let form = client.get("/login");
    let page = client.post(
        "/login",
        &[
            ("csrf", &form.csrf()),
            ("login", "owner"),
            ("password", &owner.password),
        ],
    );
    assert_eq!(page.location.as_deref(), Some("/login/code"));
    let form = client.get("/login/code");
    let page = client.post("/login/code", &[("csrf", &form.csrf()), ("code", "000000")]);
    assert!(page.body.contains(FAILED));
    // A replayed code (the step used at enrolment): the same message.
    let replay = owner.totp.as_ref().expect("totp").hotp(owner.last_step);
    let page = client.post("/login/code", &[("csrf", &form.csrf()), ("code", &replay)]);
    assert!(page.body.contains(FAILED), "a code works once");
    // A recovery code works, once.
    let recovery = owner.recovery[0].clone();
    let page = client.post(
        "/login/code",
        &[("csrf", &form.csrf()), ("code", &recovery)],
    );
    assert_eq!(page.location.as_deref(), Some("/"), "{}", page.body);
    let mut again = Client::new(&server);
    let form = again.get("/login");
    again.post(
        "/login",
        &[
            ("csrf", &form.csrf()),
            ("login", "owner"),
            ("password", &owner.password),
        ],
    );
    let form = again.get("/login/code");
    let page = again.post(
        "/login/code",
        &[("csrf", &form.csrf()), ("code", &recovery)],
    );
    assert!(page.body.contains(FAILED), "a spent recovery code");

    // A POST without the CSRF token is refused.
    let page = client.get("/owner");
    assert_eq!(page.status, 200);
    let refused = client.post("/logout", &[]);
    assert_eq!(refused.status, 403);
    assert_eq!(client.get("/owner").status, 200, "still signed in");

    // Revoked from the CLI: the next request is sent to sign in.
    server.cli(&["users", "revoke-sessions", "owner"]);
    assert_eq!(client.get("/owner").location.as_deref(), Some("/login"));

    // A disabled user: the session ends at once and signing in fails with the same message.
    let manager = passwords
        .iter()
        .find(|(_, role, _)| role == "manager")
        .expect("a demo manager");
    let mut m = Client::new(&server);
    let mut creds = sign_in(&mut m, &manager.0, &manager.2);
    assert_eq!(m.get("/manager").status, 200);
    server.cli(&["users", "disable", &manager.0]);
    assert_eq!(m.get("/manager").location.as_deref(), Some("/login"));
    let mut m2 = Client::new(&server);
    let form = m2.get("/login");
    let page = m2.post(
        "/login",
        &[
            ("csrf", &form.csrf()),
            ("login", &creds.login),
            ("password", &creds.password),
        ],
    );
    assert!(
        page.body.contains("action=\"/login/code\""),
        "looks like any wrong password"
    );
    let code = creds.fresh_code();
    let page = m2.post("/login/code", &[("csrf", &page.csrf()), ("code", &code)]);
    assert!(page.body.contains(FAILED));

    // Every attempt is in the audit log with the address.
    let entries = sign_in_entries(&server);
    let denied = entries.iter().filter(|e| e.1 == "denied").count();
    let ok = entries.iter().filter(|e| e.1 == "ok").count();
    assert!(denied >= 7 && ok >= 5, "{entries:?}");
    assert!(entries.iter().all(|e| e.3 == "127.0.0.1"), "{entries:?}");
    assert!(entries.iter().any(|e| e.0 == "nobody" && e.1 == "denied"));
    // The catalog's failed-logins metric counts the same failures (per user, address and day).
    let failures: u64 = csv_rows(&server.cli(&["metric", "login_failures", "--format", "csv"]))
        .into_iter()
        .skip(1)
        .map(|r| r[3].parse::<u64>().expect("failures"))
        .sum();
    assert_eq!(
        failures, denied as u64,
        "login_failures = denied web.sign-in entries"
    );
    // No password or code reached it.
    let log =
        std::fs::read_to_string(server.home.path().join("audit").join("audit.jsonl")).expect("log");
    for secret in [
        owner.password.as_str(),
        recovery.as_str(),
        "not the password at all",
    ] {
        assert!(!log.contains(secret), "a secret in the audit log");
    }
}

#[test]
fn an_idle_session_ends_and_the_next_request_signs_in_again() {
    let server = Server::start(
        web_home(),
        "listen = \"127.0.0.1:0\"\nsession_idle_seconds = 5",
    );
    let (login, _, password) = demo_passwords()
        .into_iter()
        .find(|(_, role, _)| role == "analyst")
        .expect("analyst");
    let mut client = Client::new(&server);
    sign_in(&mut client, &login, &password);
    assert_eq!(client.get("/catalog").status, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        client.get("/catalog").status,
        200,
        "a request keeps it alive"
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        client.get("/catalog").location.as_deref(),
        Some("/login"),
        "idle for longer than the limit"
    );
}

#[test]
fn a_source_late_for_its_schedule_is_announced_on_every_page() {
    let home = web_home();
    // The demo source, loaded daily at 03:00 UTC — and its last successful load three days ago.
    let config = home.path().join("kartoteka.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replacen(
        "[sources.demo]\n",
        "[sources.demo]\nschedule = \"0 3 * * *\"\ntime_zone = \"UTC\"\n",
        1,
    );
    std::fs::write(&config, text).expect("config");
    let old = (chrono::Utc::now() - chrono::Duration::days(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let control = home.path().join("control.sqlite");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use sqlx::ConnectOptions;
            let mut db = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&control)
                .connect()
                .await
                .expect("control db");
            sqlx::query("UPDATE ingest_runs SET started_at = ?, ended_at = ?")
                .bind(&old)
                .bind(&old)
                .execute(&mut db)
                .await
                .expect("update");
        });
    let server = Server::start(home, "listen = \"127.0.0.1:0\"");
    let (login, _, password) = demo_passwords()
        .into_iter()
        .find(|(_, role, _)| role == "owner")
        .expect("owner");
    let mut client = Client::new(&server);
    sign_in(&mut client, &login, &password);
    let page = client.get("/owner");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("class=\"banner\"")
            && page.body.contains("Данные источника «demo» устарели"),
        "{}",
        page.body
    );
    let system = client.get("/admin");
    assert!(system.body.contains("устарел"), "{}", system.body);
}

/// Signed-in clients, one per role.
fn clients_by_role(server: &Server) -> Vec<(Role, Client, Credentials)> {
    let passwords = demo_passwords();
    let mut out = Vec::new();
    for role in [
        Role::Owner,
        Role::Manager,
        Role::TeamLead,
        Role::Analyst,
        Role::Admin,
    ] {
        let (login, _, password) = passwords
            .iter()
            .find(|(_, r, _)| r == role.as_str())
            .unwrap_or_else(|| panic!("a demo {}", role.as_str()));
        let mut client = Client::new(server);
        let creds = sign_in(&mut client, login, password);
        out.push((role, client, creds));
    }
    out
}

#[test]
fn every_route_answers_every_role_as_its_rule_says() {
    let server = Server::start(web_home(), "listen = \"127.0.0.1:0\"");
    let mut signed = clients_by_role(&server);
    let mut anonymous = Client::new(&server);
    for route in ROUTES {
        let path = route.path.replace("{name}", "revenue_by_month");
        let path = if path == "/language" {
            "/language?to=ru&back=/".to_string()
        } else {
            path
        };
        // Anonymous.
        let Page {
            status, location, ..
        } = anonymous.request(route.method, &path);
        let want: (u16, Option<&str>) = match (route.access, route.method) {
            (Access::Open, _) if path.starts_with("/language") => (303, Some("/")),
            (Access::Open, _) => (200, None),
            (Access::SignIn, "GET") => (200, None),
            // No pre-sign-in cookie, no token: the CSRF check refuses.
            (Access::SignIn, _) => (403, None),
            (Access::SignInStep | Access::AnySession | Access::Signed(_), _) => {
                (303, Some("/login"))
            }
        };
        assert_eq!(
            (status, location.as_deref()),
            want,
            "anonymous {} {path}",
            route.method
        );
        for (role, client, _) in &mut signed {
            let Page {
                status,
                location,
                body,
                ..
            } = client.request(route.method, &path);
            // A page that opens opens whole: no panel failed.
            assert!(
                !body.contains("class=\"error\""),
                "{} {path}: {body}",
                role.as_str()
            );
            let home = match role {
                Role::Owner => "/owner",
                Role::Manager => "/manager",
                Role::TeamLead => "/team",
                Role::Analyst => "/catalog",
                Role::Admin => "/admin",
            };
            let want: (u16, Option<&str>) = match (route.access, route.method) {
                (Access::Open, _) if path.starts_with("/language") => (303, Some("/")),
                (Access::Open, _) => (200, None),
                (Access::SignIn | Access::SignInStep, _) => (303, Some("/")),
                // Signed in, but no CSRF token in the form.
                (Access::AnySession, _) => (403, None),
                (Access::Signed(_), _) if path == "/" => (303, Some(home)),
                (Access::Signed(roles), _) if roles.contains(role) => (200, None),
                (Access::Signed(_), _) => (403, None),
            };
            assert_eq!(
                (status, location.as_deref()),
                want,
                "{} {} {path}",
                role.as_str(),
                route.method
            );
        }
    }
    // The admin reads no CRM data, not even through a metric's page or its CSV.
    let (_, admin, _) = signed
        .iter_mut()
        .find(|(r, _, _)| *r == Role::Admin)
        .expect("admin");
    assert_eq!(admin.get("/metric/revenue_by_month/csv").status, 403);
    let system = admin.get("/admin");
    assert!(system.body.contains("Цепочка цела"), "{}", system.body);
    // The scheduler's jobs, with their next run: the demo's report specs.
    assert!(
        system.body.contains("report:owner-weekly"),
        "{}",
        system.body
    );
    // No CRM data on it: not one client's name or e-mail, no amount.
    assert!(
        !system.body.contains('₽') && !system.body.contains('@'),
        "{}",
        system.body
    );
    // A metric a role may not run is refused on its page too.
    let (_, manager, _) = signed
        .iter_mut()
        .find(|(r, _, _)| *r == Role::Manager)
        .expect("manager");
    assert_eq!(manager.get("/metric/revenue_by_source").status, 403);
}

/// CSV text as rows of cells.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    reader
        .records()
        .map(|r| r.expect("csv").iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn pages_show_each_viewer_their_own_numbers_and_the_cache_never_mixes_them() {
    let server = Server::start(web_home(), "listen = \"127.0.0.1:0\"");
    let passwords = demo_passwords();
    let managers: Vec<&(String, String, String)> = passwords
        .iter()
        .filter(|(_, role, _)| role == "manager")
        .take(2)
        .collect();
    assert_eq!(managers.len(), 2);
    let mut names = Vec::new();
    let mut units_checked = 0;
    for (login, _, password) in &managers {
        let mut client = Client::new(&server);
        let mut creds = sign_in(&mut client, login, password);
        // The page opens (every panel drawn, none failed).
        let page = client.get("/manager");
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("class=\"error\""), "{}", page.body);
        assert!(page.body.contains("Данные на"), "data as of");
        // Drawn once, served from the drawn-panel cache the second time: the same page. (The second
        // manager's first page comes after the first manager's were kept: the names check below
        // would catch one served to the other.)
        assert_eq!(client.get("/manager").body, page.body);
        // The charts speak the page's language: units in Russian, then in English (for a manager
        // whose funnel has deals; one without gets "no data").
        client.get("/language?to=en&back=/manager");
        let english = client.get("/manager");
        assert!(english.body.contains("My funnel") && english.body.contains("Sign out"));
        if names.is_empty() {
            // The choice is the user's, not the browser's: another browser signs in in English.
            let mut elsewhere = Client::new(&server);
            sign_in_again(&mut elsewhere, &mut creds);
            let page = elsewhere.get("/manager");
            assert!(page.body.contains("My funnel"), "{}", page.body);
        }
        if page.body.contains("сд.") {
            assert!(!english.body.contains("сд."), "{}", english.body);
            units_checked += 1;
        }
        client.get("/language?to=ru&back=/manager");
        // The same metric and parameters for two managers: each gets their own answer, equal to the
        // CLI's for that login (the cache holds both; neither is served the other's).
        for metric in ["stalled_deals", "funnel_conversion", "overdue_tasks"] {
            let csv = client.get(&format!("/metric/{metric}/csv"));
            assert_eq!(csv.status, 200);
            let cli = server.cli(&["metric", metric, "--as", login, "--format", "csv"]);
            assert_eq!(csv_rows(&csv.body), csv_rows(&cli), "{metric} for {login}");
        }
        names.push((login.clone(), page.body.clone()));
    }
    assert!(units_checked >= 1, "a manager with deals on the charts");
    // No manager's page — its tables, and the text of its charts — names another manager: every
    // name on it is one the CLI shows that manager under their own policy.
    let staff = server.cli(&[
        "query",
        "--format",
        "csv",
        "SELECT full_name FROM staff WHERE position = 'manager' ORDER BY full_name",
    ]);
    let all_managers: Vec<String> = csv_rows(&staff)
        .into_iter()
        .skip(1)
        .map(|r| r[0].clone())
        .collect();
    assert!(all_managers.len() > 2);
    for (login, body) in &names {
        // The metrics of the manager's page. (The scorecard, not on it, lists every manager by name:
        // staff names are visible to every role.)
        let mut seen = String::new();
        for metric in [
            "stalled_deals",
            "overdue_tasks",
            "response_time",
            "activity_by_manager",
            "funnel_conversion",
            "plan_vs_actual",
        ] {
            seen.push_str(&server.cli(&["metric", metric, "--as", login, "--format", "csv"]));
        }
        // The charts are inline SVG: their text is in the page.
        let text = body;
        let mut checked = 0;
        for other in all_managers.iter().filter(|n| !seen.contains(n.as_str())) {
            assert!(
                !text.contains(other.as_str()),
                "{login}'s page names {other}"
            );
            checked += 1;
        }
        assert!(
            checked >= 1,
            "other managers were looked for: {all_managers:?} in {seen}"
        );
    }
    // The team lead's page, and their numbers as the CLI gives them to that login.
    let (lead, _, lead_password) = passwords
        .iter()
        .find(|(_, role, _)| role == "team_lead")
        .expect("a team lead");
    let mut client = Client::new(&server);
    sign_in(&mut client, lead, lead_password);
    let page = client.get("/team");
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("class=\"error\""), "{}", page.body);
    for metric in ["revenue_by_manager", "win_rate", "manager_scorecard"] {
        let csv = client.get(&format!("/metric/{metric}/csv"));
        let cli = server.cli(&["metric", metric, "--as", lead, "--format", "csv"]);
        assert_eq!(csv_rows(&csv.body), csv_rows(&cli), "{metric} for {lead}");
    }
    // The owner's first number — this month's revenue — is the CLI's for the snapshot's month.
    let (login, _, password) = passwords
        .iter()
        .find(|(_, role, _)| role == "owner")
        .expect("owner");
    let mut owner = Client::new(&server);
    sign_in(&mut owner, login, password);
    let page = owner.get("/owner");
    let asof = page.body.split("Данные на ").nth(1).expect("data as of");
    // dd.mm.yyyy → yyyy-mm
    let month = format!("{}-{}", &asof[6..10], &asof[3..5]);
    let cli = server.cli(&["metric", "revenue_by_month", "--format", "csv"]);
    let expected = csv_rows(&cli)
        .into_iter()
        .skip(1)
        .find(|r| r[0].starts_with(&month))
        .map(|r| {
            let rubles = r[1].parse::<f64>().expect("revenue").round() as i64;
            let digits = rubles.to_string();
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    grouped.push('\u{a0}');
                }
                grouped.push(c);
            }
            format!("{grouped}\u{a0}₽")
        })
        .unwrap_or_else(|| "—".into());
    let shown = page
        .body
        .split("<div class=\"value\">")
        .nth(1)
        .and_then(|v| v.split('<').next())
        .expect("a KPI value");
    assert_eq!(shown, expected, "this month's revenue ({month})");

    // The export is in the audit log.
    let log =
        std::fs::read_to_string(server.home.path().join("audit").join("audit.jsonl")).expect("log");
    assert!(log.contains("\"web.export\""));
}

/// A number as the Russian page writes it (`1 234,5`, `—` for none).
fn ru_number(text: &str) -> Option<f64> {
    let plain: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}' && *c != '\u{202f}')
        .map(|c| if c == ',' { '.' } else { c })
        .collect();
    plain.parse().ok()
}

/// The cells of the row of the "me and my team" table whose first cell is `label` (a prefix).
fn team_row(body: &str, label: &str) -> Option<(Option<f64>, Option<f64>)> {
    let section = body.split("data-metric=\"team_median\"").nth(1)?;
    let section = section.split("</section>").next()?;
    for row in section.split("<tr").skip(1) {
        let cells: Vec<&str> = row
            .split(['<', '>'])
            .filter(|t| !t.trim().is_empty())
            .filter(|t| !t.starts_with("td") && !t.starts_with("/t") && !t.starts_with("th"))
            .filter(|t| !t.contains("class="))
            .collect();
        if cells.first().is_some_and(|c| c.starts_with(label)) && cells.len() >= 3 {
            return Some((ru_number(cells[1]), ru_number(cells[2])));
        }
    }
    None
}

fn exact_median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n >= 3).then(|| {
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    })
}

#[test]
fn a_manager_sees_their_figures_against_their_teams_median_and_nothing_of_a_colleague() {
    let server = Server::start(web_home(), "listen = \"127.0.0.1:0\"");
    let passwords = demo_passwords();
    let (from, to) = ("2025-06-01", "2025-12-01");
    // The oracle, as the owner from the CLI: each employed manager's outbound activities counted
    // straight from interactions, their median response from the response_time metric, their team
    // from staff — then the median by a sort here.
    let activity = server.cli(&[
        "query",
        "--format",
        "csv",
        &format!(
            "SELECT s.staff_id, s.team, COUNT(i.interaction_id) AS n FROM staff s \
             LEFT JOIN interactions i ON i.staff_id = s.staff_id AND i.direction = 'outbound' \
               AND local(i.occurred_at) >= TIMESTAMP '{from} 00:00:00' \
               AND local(i.occurred_at) < TIMESTAMP '{to} 00:00:00' \
             WHERE s.position IN ('manager', 'team_lead') AND (s.hired_at IS NULL OR s.hired_at < DATE '{to}') \
               AND (s.left_at IS NULL OR s.left_at >= DATE '{from}') \
             GROUP BY s.staff_id, s.team"
        ),
    ]);
    let response = server.cli(&[
        "metric",
        "response_time",
        "--format",
        "csv",
        "-p",
        &format!("from={from}"),
        "-p",
        &format!("to={to}"),
    ]);
    let response: BTreeMap<String, f64> = csv_rows(&response)
        .into_iter()
        .skip(1)
        .filter_map(|r| Some((r[0].clone(), r[2].parse().ok()?)))
        .collect();
    // staff id → (team, activities, median response)
    let managers: BTreeMap<String, (String, f64, Option<f64>)> = csv_rows(&activity)
        .into_iter()
        .skip(1)
        .map(|r| {
            let n: f64 = r[2].parse().expect("count");
            (
                r[0].clone(),
                (r[1].clone(), n, response.get(&r[0]).copied()),
            )
        })
        .collect();
    let users = csv_rows(&server.cli(&["users", "list", "--format", "csv"]));
    let header = &users[0];
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (login_at, staff_at) = (column("login"), column("staff_id"));
    let staff_of = |login: &str| -> String {
        users
            .iter()
            .find(|u| u[login_at] == login)
            .map(|u| u[staff_at].clone())
            .expect("a staff record")
    };
    let close = |shown: Option<f64>, expected: Option<f64>, what: &str| match (shown, expected) {
        (Some(a), Some(b)) => assert!((a - b).abs() < 0.051, "{what}: shown {a}, expected {b}"),
        (a, b) => assert_eq!(a, b, "{what}"),
    };
    let mut checked = 0;
    let two_managers = passwords
        .iter()
        .filter(|(_, role, _)| role == "manager")
        .take(2);
    let a_lead = passwords
        .iter()
        .filter(|(_, role, _)| role == "team_lead")
        .take(1);
    for (login, role, password) in two_managers.chain(a_lead) {
        let me = staff_of(login);
        let (team, mine, my_response) = managers
            .get(&me)
            .cloned()
            .unwrap_or_else(|| panic!("{login} is staff {me}, not among {managers:?}"));
        let team_members: Vec<&(String, f64, Option<f64>)> =
            managers.values().filter(|(t, ..)| *t == team).collect();
        let expected_activity = exact_median(team_members.iter().map(|(_, n, _)| *n).collect());
        let expected_response =
            exact_median(team_members.iter().filter_map(|(.., r)| *r).collect());
        let mut client = Client::new(&server);
        sign_in(&mut client, login, password);
        let path = if role == "manager" {
            "/manager"
        } else {
            "/team"
        };
        let page = client.get(&format!("{path}?from={from}&to={to}"));
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("class=\"error\""), "{}", page.body);
        let (activity, response) = team_row(&page.body, "Вы").expect("my row");
        close(activity, Some(mine), &format!("{login}'s activities"));
        close(response, my_response, &format!("{login}'s response"));
        let (activity, response) = team_row(&page.body, "Медиана группы").expect("median row");
        close(
            activity,
            expected_activity,
            &format!("{team}'s activity median"),
        );
        close(
            response,
            expected_response,
            &format!("{team}'s response median"),
        );
        let rows = page
            .body
            .split("data-metric=\"team_median\"")
            .nth(1)
            .and_then(|s| s.split("</section>").next())
            .map(|s| s.matches("<tr><td>").count())
            .unwrap_or_default();
        if role == "manager" {
            // Their own row only: a colleague's figures never reach a manager.
            assert_eq!(rows, 1, "{}", page.body);
        } else {
            // A team lead: a row per manager of the team employed in the period.
            assert_eq!(rows, team_members.len(), "{}", page.body);
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
    // The wide session's statements are recorded for the manager who asked.
    let log =
        std::fs::read_to_string(server.home.path().join("audit").join("audit.jsonl")).expect("log");
    assert!(log.contains("\"as\":\"team-benchmark\""), "audited");
}
