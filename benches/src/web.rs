//! `kartoteka-web-bench`: the web door under load, over real TLS on 127.0.0.1 — the demo lake at a
//! scale, the app as `kartoteka serve` builds it (audit log on), users with a TOTP second factor.
//! Measures a whole sign-in (password + code, argon2id m = 19 MiB, t = 2, p = 1), the first (cold)
//! owner page, and dashboard pages with `--sessions` signed-in sessions requesting concurrently in a
//! closed loop; prints one JSON document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kartoteka_dashboards::totp::Totp;
use kartoteka_engine::audit::{AuditConfig, AuditLog};
use kartoteka_engine::control::{ControlPlane, NewUser};
use kartoteka_engine::{Engine, EngineConfig, Lake, LakeStore, MasterKeySource, Role};
use kartoteka_queries::Catalog;
use serde_json::json;

mod demo_lake;

#[derive(Debug, Parser)]
struct Args {
    /// Demo scale (1 ≈ 10 000 clients, 300 000 interactions).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Signed-in sessions requesting pages at once.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Pages each session requests in each phase (after one warming request).
    #[arg(long, default_value_t = 10)]
    pages: usize,
    /// Mean pause of a session between its pages in the paced phase (uniform over 0..2×), like a
    /// person reading; the closed-loop phase pauses not at all.
    #[arg(long, default_value_t = 1000)]
    think_ms: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "p50_ms": percentile(&v, 50.0) * 1e3,
        "p90_ms": percentile(&v, 90.0) * 1e3,
        "p99_ms": percentile(&v, 99.0) * 1e3,
        "max_ms": v.last().copied().unwrap_or(f64::NAN) * 1e3,
    })
}

/// A client of one session: a cookie jar of one cookie and a trust store of the local CA.
struct Client {
    agent: ureq::Agent,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Client {
    fn new(ca: &[u8], port: u16) -> Client {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            })
            .collect();
        let agent = ureq::Agent::config_builder()
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
            .new_agent();
        Client {
            agent,
            base: format!("https://localhost:{port}"),
            cookies: Vec::new(),
        }
    }

    fn remember(&mut self, response: &ureq::http::Response<ureq::Body>) {
        for c in response.headers().get_all("set-cookie") {
            let Ok(c) = c.to_str() else { continue };
            let pair = c.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() && !c.contains("Max-Age=0") {
                self.cookies.push((name.into(), value.into()));
            }
        }
    }

    fn cookie(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&mut self, path: &str) -> Result<(u16, String)> {
        let mut r = self.agent.get(&format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            r = r.header("cookie", &self.cookie());
        }
        let response = r.call()?;
        self.remember(&response);
        let status = response.status().as_u16();
        Ok((status, response.into_body().read_to_string()?))
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Result<u16> {
        let mut r = self.agent.post(&format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            r = r.header("cookie", &self.cookie());
        }
        let response = r.send_form(form.iter().copied())?;
        self.remember(&response);
        Ok(response.status().as_u16())
    }
}

fn csrf(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    body.find(marker)
        .map(|i| {
            let rest = &body[i + marker.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sign in with password and code; the seconds it took.
fn sign_in(client: &mut Client, login: &str, password: &str, totp: &Totp) -> Result<f64> {
    let started = Instant::now();
    let (_, form) = client.get("/login")?;
    let status = client.post(
        "/login",
        &[
            ("csrf", &csrf(&form)),
            ("login", login),
            ("password", password),
        ],
    )?;
    if status != 303 {
        bail!("{login}: the password step answered {status}");
    }
    let (_, form) = client.get("/login/code")?;
    let code = totp.code_at(unix_now());
    let status = client.post("/login/code", &[("csrf", &csrf(&form)), ("code", &code)])?;
    if status != 303 {
        bail!("{login}: the code step answered {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Every session requests its page `pages` times at once, pausing uniformly over 0..2×`think_ms`
/// between pages: latencies per page kind, errors, pages per second. The clients come back for the
/// next phase.
fn load(
    clients: Vec<(Client, &'static str)>,
    pages: usize,
    think_ms: u64,
) -> (Vec<(Client, &'static str)>, serde_json::Value) {
    use rand::Rng;
    let started = Instant::now();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|(mut client, path)| {
            std::thread::spawn(move || {
                let mut rng = rand::rng();
                let mut times = Vec::new();
                let mut errors = 0usize;
                for _ in 0..pages {
                    if think_ms > 0 {
                        std::thread::sleep(Duration::from_millis(
                            rng.random_range(0..2 * think_ms),
                        ));
                    }
                    let t = Instant::now();
                    match client.get(path) {
                        Ok((200, body)) if !body.contains("class=\"error\"") => {
                            times.push(t.elapsed().as_secs_f64())
                        }
                        _ => errors += 1,
                    }
                }
                (client, path, times, errors)
            })
        })
        .collect();
    let mut back = Vec::new();
    let (mut all, mut owner, mut manager, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for t in threads {
        let Ok((client, path, times, e)) = t.join() else {
            errors += pages;
            continue;
        };
        errors += e;
        if path == "/owner" {
            owner.extend(times.iter().copied());
        } else {
            manager.extend(times.iter().copied());
        }
        all.extend(times);
        back.push((client, path));
    }
    let wall = started.elapsed().as_secs_f64();
    let n = all.len();
    (
        back,
        json!({
            "think_ms": think_ms,
            "all": summary(all),
            "owner": summary(owner),
            "manager": summary(manager),
            "errors": errors,
            "pages_per_second": n as f64 / wall,
        }),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = demo_lake::generate(dir.path(), args.scale).await?;
    let audit = Arc::new(AuditLog::open(
        &dir.path().join("audit"),
        AuditConfig::default(),
    )?);
    let control = Arc::new(
        ControlPlane::open(&dir.path().join("control.sqlite"), Some(audit.clone())).await?,
    );
    let key = MasterKeySource::create_key_file(&dir.path().join("master.key"))?;
    let lake = Arc::new(
        Lake::open_or_create(LakeStore::local(&dir.path().join("lake"))?, &key)
            .await?
            .with_ledger(control.clone()),
    );
    let engine = Arc::new(Engine::new(lake.clone(), EngineConfig::default())?.with_audit(audit));
    demo_lake::ingest(&engine, &db).await?;

    // The users: every demo manager (their own page), the rest owners; each with a password of
    // their own and an enrolled authenticator.
    let session = engine
        .session(&kartoteka_engine::Principal::local_owner())
        .await?;
    let staff = session
        .sql("SELECT staff_id FROM staff WHERE position = 'manager' ORDER BY staff_id")
        .await?;
    let mut manager_ids = Vec::new();
    for b in &staff.batches {
        let ids = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .context("staff id")?;
        manager_ids.extend(ids.values().iter().copied());
    }
    let mut users = Vec::new();
    for i in 0..args.sessions {
        let (login, role, staff_id) = match manager_ids.get(i) {
            Some(id) => (format!("manager-{id}"), Role::Manager, Some(*id)),
            None => (format!("owner-{i}"), Role::Owner, None),
        };
        control
            .add_user(
                NewUser {
                    login: login.clone(),
                    role,
                    staff_id,
                    team: None,
                },
                "bench",
            )
            .await?;
        let password = format!("длинная фраза для входа номер {}", users.len() + 1);
        control
            .set_password(&login, &password, true)
            .await?
            .map_err(|w| anyhow::anyhow!("{}", w.en()))?;
        let totp = Totp::generate();
        let sealed = lake
            .seal_user_secret(
                &kartoteka_engine::second_factor::totp_aad(&login),
                totp.secret(),
            )
            .await;
        control.set_totp_secret(&login, &sealed, "bench").await?;
        // Enrolled long ago: a step far behind the clock.
        control.accept_totp_step(&login, 1).await?;
        users.push((login, role, password, totp));
    }

    let names = vec!["localhost".to_string()];
    let cert = kartoteka_dashboards::load_or_generate(dir.path(), None, None, &names)?;
    let ca = std::fs::read(cert.ca_path.as_ref().context("a generated CA")?)?;
    let app = Arc::new(kartoteka_dashboards::App::new(
        engine.clone(),
        control.clone(),
        Arc::new(Catalog::builtin()?),
        kartoteka_dashboards::Settings::default(),
        Vec::new(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kartoteka_dashboards::serve(
        listener,
        Some(cert.config),
        kartoteka_dashboards::router(app),
        async {
            let _ = stopped.await;
        },
    ));

    let sessions = args.sessions;
    let pages = args.pages;
    let think_ms = args.think_ms;
    let report = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
        // Sign-in, one at a time.
        let mut clients = Vec::new();
        let mut sign_ins = Vec::new();
        for (login, role, password, totp) in &users {
            let mut client = Client::new(&ca, port);
            sign_ins.push(sign_in(&mut client, login, password, totp)?);
            let path = if *role == Role::Manager { "/manager" } else { "/owner" };
            clients.push((client, path));
        }
        // The first owner page: nothing cached.
        let owner = clients
            .iter_mut()
            .find(|(_, p)| *p == "/owner")
            .context("an owner session (use --sessions above the demo's managers)")?;
        let t = Instant::now();
        let (status, body) = owner.0.get("/owner")?;
        let cold = t.elapsed().as_secs_f64();
        if status != 200 || body.contains("class=\"error\"") {
            bail!("the owner page failed ({status})");
        }
        // Every session opens its page once (warming), then all request together.
        for (client, path) in &mut clients {
            client.get(path)?;
        }
        let clients: Vec<(Client, &'static str)> = clients;
        let (clients, paced) = load(clients, pages, think_ms);
        let (_, closed) = load(clients, pages, 0);
        Ok(json!({
            "sign_in": { "argon2id": { "m_kib": 19456, "t": 2, "p": 1 }, "latency": summary(sign_ins) },
            "cold_owner_page_ms": cold * 1e3,
            "warm_pages": {
                "sessions": sessions,
                "pages_per_session": pages,
                "paced": paced,
                "closed_loop": closed,
            },
        }))
    })
    .await??;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let out = json!({ "bench": "web", "scale": args.scale, "results": report });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
