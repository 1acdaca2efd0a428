//! A real browser against the web door: headless Chromium (Debian's `chromium`) driven through
//! ChromeDriver's W3C WebDriver protocol by a small client on ureq (no browser-automation crate: the
//! protocol is a handful of JSON requests). `.ci/run` installs both packages when missing and sets
//! `KARTOTEKA_TEST_BROWSER`, so there the browser tests run or fail; elsewhere, without `chromedriver`,
//! they print why they skip. Screenshots go to `target/screenshots/` for a person to look at.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kartoteka_dashboards::totp::{Totp, base32_decode};
use serde_json::{Value, json};

use crate::web::{Credentials, Server, demo_passwords};

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
        self.try_post(path, body)
            .unwrap_or_else(|message| panic!("{}{path}: {message}", self.base))
    }

    /// A WebDriver command: its value, or the driver's error message.
    fn try_post(&self, path: &str, body: Value) -> Result<Value, String> {
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
        if response.status().is_success() {
            Ok(value["value"].clone())
        } else {
            Err(value["value"]["message"].to_string())
        }
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
        self.element_text("body")
    }

    /// The first element matching `css`: its WebDriver id.
    fn element(&self, css: &str) -> String {
        // A page still loading after a form was sent has no elements yet: a few seconds' grace.
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            match self.try_post(
                &format!("/session/{}/element", self.session),
                json!({ "using": "css selector", "value": css }),
            ) {
                Ok(found) => break found,
                Err(message)
                    if Instant::now() < deadline && message.contains("no such element") =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(message) => panic!("no element {css} on {}: {message}", self.url()),
            }
        };
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    /// Type `text` into the field `css`.
    pub(crate) fn fill(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.post(
            &format!("/session/{}/element/{id}/clear", self.session),
            json!({}),
        );
        self.post(
            &format!("/session/{}/element/{id}/value", self.session),
            json!({ "text": text }),
        );
    }

    /// Click `css` and wait for the page it leads to (every click in these tests sends a form or
    /// follows a link): until the document's root element is a new one.
    pub(crate) fn click(&self, css: &str) {
        let before = self.element("html");
        let id = self.element(css);
        self.post(
            &format!("/session/{}/element/{id}/click", self.session),
            json!({}),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = self.try_post(
                &format!("/session/{}/element", self.session),
                json!({ "using": "css selector", "value": "html" }),
            );
            if let Ok(found) = now
                && found
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(Value::as_str)
                    != Some(before.as_str())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("clicking {css} led nowhere in 10 s");
    }

    /// The text of the element `css`.
    pub(crate) fn element_text(&self, css: &str) -> String {
        let id = self.element(css);
        self.get(&format!("/session/{}/element/{id}/text", self.session))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The address of the page shown.
    pub(crate) fn url(&self) -> String {
        self.get(&format!("/session/{}/url", self.session))
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

/// Sign in through the browser's own form: login and password, a new password when asked, the
/// authenticator's code (enrolling from the key the page prints when it is the first time).
fn browser_sign_in(browser: &Browser, server: &Server, creds: &mut Credentials) {
    browser.open(&server.url("/login"));
    browser.fill("input[name=login]", &creds.login);
    browser.fill("input[name=password]", &creds.password);
    browser.click("button[type=submit]");
    for _ in 0..4 {
        let url = browser.url();
        if url.ends_with("/login/password") {
            let new = format!("{} выбирает длинную фразу", creds.login.replace('-', " "))
                .replace(&creds.login, "");
            browser.fill("input[name=new]", &new);
            browser.fill("input[name=again]", &new);
            browser.click("button[type=submit]");
            creds.password = new;
        } else if url.ends_with("/login/enrol") {
            browser.screenshot(&format!("enrol-{}", creds.login));
            let key: String = browser
                .element_text("code.secret")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            creds.totp = Some(Totp::from_secret(&base32_decode(&key).expect("base32")));
            let code = creds.fresh_code();
            browser.fill("input[name=code]", &code);
            browser.click("button[type=submit]");
            assert!(browser.text().contains("Коды восстановления"));
            browser.click("a.button");
        } else if url.ends_with("/login/code") {
            let code = creds.fresh_code();
            browser.fill("input[name=code]", &code);
            browser.click("button[type=submit]");
        } else {
            return;
        }
    }
}

#[test]
fn owner_manager_and_analyst_sign_in_in_a_real_browser_and_see_their_pages() {
    let server = Server::start(crate::web::web_home(), "listen = \"127.0.0.1:0\"");
    let Some(browser) = Browser::start() else {
        return;
    };
    browser.open(&server.url("/health"));
    assert_eq!(browser.text().trim(), "ok");
    browser.open(&server.url("/nowhere"));
    assert!(
        browser.text().contains("Страница не найдена"),
        "the 404 page"
    );
    let passwords = demo_passwords();
    for role in ["owner", "manager", "analyst"] {
        let (login, _, password) = passwords
            .iter()
            .find(|(_, r, _)| r == role)
            .expect("a demo user");
        browser.open(&server.url("/login"));
        browser.screenshot("login");
        let mut creds = Credentials {
            login: login.clone(),
            password: password.clone(),
            totp: None,
            last_step: 0,
            recovery: Vec::new(),
        };
        browser_sign_in(&browser, &server, &mut creds);
        let text = browser.text();
        browser.screenshot(&format!("home-{role}"));
        match role {
            "owner" => {
                assert!(browser.url().ends_with("/owner"));
                assert!(text.contains("Данные на"), "{text}");
                assert!(text.contains("План месяца") && text.contains("Выручка по месяцам"));
                browser.open(&server.url("/metric/revenue_by_month"));
                browser.screenshot("metric-revenue_by_month");
                assert!(browser.text().contains("Скачать CSV"));
                browser.open(&server.url("/admin"));
                assert!(browser.text().contains("Цепочка цела"));
                browser.screenshot("admin");
            }
            "manager" => {
                assert!(browser.url().ends_with("/manager"));
                assert!(
                    text.contains("Данные на") && text.contains("Моя воронка"),
                    "{text}"
                );
            }
            _ => {
                assert!(browser.url().ends_with("/catalog"));
                assert!(text.contains("Каталог метрик"));
                browser.open(&server.url("/metric/funnel_conversion"));
                assert!(browser.text().contains("Данные на"));
                browser.screenshot("metric-analyst-funnel");
            }
        }
        // English on request, for every page after.
        browser.click("header .who a");
        assert!(browser.text().contains("Sign out"), "English header");
        browser.screenshot(&format!("home-{role}-en"));
        browser.click("header .who a");
        browser.click("header .who button");
        assert!(browser.url().ends_with("/login"));
    }
}
