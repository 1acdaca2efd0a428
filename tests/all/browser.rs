//! A real browser against the web door: headless Chromium (Debian's `chromium`) driven through
//! ChromeDriver's W3C WebDriver protocol by a small client on ureq (no browser-automation crate: the
//! protocol is a handful of JSON requests). `.ci/run` installs both packages when missing and sets
//! `KARTOTEKA_TEST_BROWSER`, so there the browser tests run or fail; elsewhere, without `chromedriver`,
//! they print why they skip. Screenshots go to `target/screenshots/` for a person to look at.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A ChromeDriver process and one browser session in it; both end on drop.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium; `None` (with the reason printed) when ChromeDriver
    /// is not installed.
    pub(crate) fn start() -> Option<Browser> {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(chromedriver) = chromedriver else {
            // CI installs it and says so: there a missing driver is a failure, not a skip.
            assert!(
                std::env::var_os("KARTOTEKA_TEST_BROWSER").is_none(),
                "KARTOTEKA_TEST_BROWSER is set but there is no chromedriver"
            );
            eprintln!(
                "SKIPPED: no chromedriver (install Debian's chromium and chromium-driver; .ci/run does)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer in 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
        };
        let created = browser.post(
            "/session",
            json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                // The server's certificate is from a local CA this throwaway profile does not hold;
                // TLS itself is checked by web.rs with a client that trusts only that CA.
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                             "--lang=ru-RU"]
                }
            }}}),
        );
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Some(browser)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let value: Value =
            serde_json::from_str(&response.body_mut().read_to_string().expect("body"))
                .expect("JSON");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            value["value"]["message"]
        );
        value["value"].clone()
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let text = ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .expect("body");
        let value: Value = serde_json::from_str(&text).expect("JSON");
        value["value"].clone()
    }

    /// Open `url`.
    pub(crate) fn open(&self, url: &str) {
        self.post(
            &format!("/session/{}/url", self.session),
            json!({ "url": url }),
        );
    }

    /// The text the page shows.
    pub(crate) fn text(&self) -> String {
        let body = self.post(
            &format!("/session/{}/element", self.session),
            json!({ "using": "css selector", "value": "body" }),
        );
        let id = body
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element id")
            .to_string();
        self.get(&format!("/session/{}/element/{id}/text", self.session))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Save a screenshot as `target/screenshots/NAME.png`; its path.
    pub(crate) fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let png = self.get(&format!("/session/{}/screenshot", self.session));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("PNG bytes");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &bytes).expect("screenshot");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn a_real_browser_reaches_the_server_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = vec!["localhost".to_string()];
    let cert = kartoteka_dashboards::load_or_generate(dir.path(), None, None, &names)
        .expect("certificate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kartoteka_dashboards::serve(
        listener,
        Some(cert.config),
        kartoteka_dashboards::router(),
        async {
            let _ = stopped.await;
        },
    ));
    let outcome = tokio::task::spawn_blocking(move || {
        let Some(browser) = Browser::start() else {
            return;
        };
        browser.open(&format!("https://localhost:{port}/health"));
        assert_eq!(browser.text().trim(), "ok");
        let shot = browser.screenshot("health");
        assert!(shot.exists());
        browser.open(&format!("https://localhost:{port}/nowhere"));
        assert!(
            browser.text().contains("Страница не найдена"),
            "the 404 page"
        );
    })
    .await;
    let _ = stop.send(());
    outcome.expect("browser checks");
}
