//! Delivery of a rendered copy beyond the archive: e-mail through SMTP (lettre) with each panel's
//! picture inline and every file attached, and a JSON webhook. Each is tried up to three times, 1 s
//! and 2 s apart, and every outcome is recorded against the copy. A copy goes only to the address of
//! the user it was rendered for — never to a list the spec could name — so nobody receives numbers
//! rendered under somebody else's policy.

use std::fmt;
use std::time::Duration;

use kartoteka_engine::control::{
    Channel, ControlPlane, DeliveryOutcome, ReportDelivery, ReportRun,
};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::render::Rendered;
use crate::spec::{Format, ReportSpec};
use crate::{Error, Result};

/// Attempts per delivery, and the pause before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// How the SMTP server is reached.
#[derive(Clone)]
pub struct Smtp {
    /// Host name.
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 for plain).
    pub port: u16,
    /// `starttls` (default), `tls`, or `none` (only for a relay on the same machine or network).
    pub security: String,
    /// Sender address.
    pub from: String,
    /// Login and password, when the server wants them.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

impl Smtp {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
        let builder = match self.security.as_str() {
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host)
                .map_err(|e| Error::Delivery(format!("smtp {}: {e}", self.host)))?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host)
                .map_err(|e| Error::Delivery(format!("smtp {}: {e}", self.host)))?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host),
            other => {
                return Err(Error::Delivery(format!(
                    "smtp security {other:?}: starttls, tls or none"
                )));
            }
        };
        let mut builder = builder
            .port(self.port)
            .timeout(Some(Duration::from_secs(20)));
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }
}

/// The e-mail for one copy: an HTML body with each panel's PNG inline (SVG when there is no PNG:
/// many mail programs do not show SVG), and every file attached.
pub fn message(smtp: &Smtp, to: &str, rendered: &Rendered) -> Result<Message> {
    let mailbox = |a: &str| -> Result<Mailbox> {
        a.parse()
            .map_err(|e| Error::Delivery(format!("{a:?} is not an e-mail address: {e}")))
    };
    let mut html = format!(
        "<html><body><h1>{}</h1><p>Снимок данных {} · для {}</p>",
        escape(&rendered.title),
        rendered.snapshot_id,
        escape(&rendered.recipient)
    );
    let mut related = MultiPart::related().build();
    let mut attachments = Vec::new();
    for (i, panel) in rendered.panels.iter().enumerate() {
        let inline = panel
            .files
            .iter()
            .find(|(f, _)| *f == Format::Png)
            .or_else(|| panel.files.first());
        if let Some((format, bytes)) = inline {
            let cid = format!("panel-{}", i + 1);
            html.push_str(&format!(
                "<h2>{}</h2><img src=\"cid:{cid}\" alt=\"{}\">",
                escape(&panel.chart.title),
                escape(&panel.chart.title)
            ));
            related = related.singlepart(
                Attachment::new_inline(cid).body(base64_body(bytes)?, content_type(*format)),
            );
        }
        for (format, bytes) in &panel.files {
            attachments.push(
                Attachment::new(rendered.file_name(i, *format))
                    .body(base64_body(bytes)?, content_type(*format)),
            );
        }
    }
    html.push_str("</body></html>");
    let related = MultiPart::related()
        .singlepart(SinglePart::html(html))
        .multipart(related);
    let mut mixed = MultiPart::mixed().multipart(related);
    for a in attachments {
        mixed = mixed.singlepart(a);
    }
    Message::builder()
        .from(mailbox(&smtp.from)?)
        .to(mailbox(to)?)
        .subject(format!("{} — Kartoteka", rendered.title))
        .multipart(mixed)
        .map_err(|e| Error::Delivery(format!("building the e-mail: {e}")))
}

/// Pictures travel base64-encoded, whatever their bytes (SVG is text, but its lines may be long).
fn base64_body(bytes: &[u8]) -> Result<Body> {
    Body::new_with_encoding(bytes.to_vec(), ContentTransferEncoding::Base64)
        .map_err(|_| Error::Delivery("cannot base64-encode an attachment".into()))
}

fn content_type(format: Format) -> ContentType {
    match format {
        Format::Png => ContentType::parse("image/png").expect("a valid media type"),
        Format::Svg => ContentType::parse("image/svg+xml").expect("a valid media type"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The webhook's JSON for one copy: what was rendered, for whom, from which snapshot — no data.
pub fn webhook_body(rendered: &Rendered, run: &ReportRun) -> serde_json::Value {
    serde_json::json!({
        "report": rendered.report,
        "title": rendered.title,
        "recipient": rendered.recipient,
        "run": run.id,
        "snapshot": rendered.snapshot_id,
        "content_hash": rendered.content_hash,
        "rendered_at": run.ended_at,
        "panels": rendered.panels.iter().enumerate().map(|(i, p)| serde_json::json!({
            "title": p.chart.title,
            "metric": p.panel.metric,
            "rows": p.rows,
            "files": p.files.iter().map(|(f, _)| rendered.file_name(i, *f)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

async fn with_retries<F, Fut>(mut attempt: F) -> (i64, std::result::Result<(), String>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(()) => return (tries, Ok(())),
            Err(e) if (tries as usize) > BACKOFF.len() => return (tries, Err(e)),
            Err(e) => {
                tracing::warn!(attempt = tries, error = %e, "delivery failed; retrying");
                tokio::time::sleep(BACKOFF[tries as usize - 1]).await;
            }
        }
    }
}

/// Deliver copy `run` (`rendered`) as `spec` says: e-mail to `email` (the recipient's own address)
/// through `smtp`, and the webhook. Every attempt's outcome is recorded; returns the deliveries.
pub async fn deliver(
    control: &ControlPlane,
    spec: &ReportSpec,
    smtp: Option<&Smtp>,
    email: Option<&str>,
    rendered: &Rendered,
    run: &ReportRun,
) -> Result<Vec<ReportDelivery>> {
    let mut out = Vec::new();
    if spec.delivery.email {
        let d = match (smtp, email) {
            (None, _) => skipped(
                run,
                Channel::Email,
                "",
                "no [reports.smtp] server is configured",
            ),
            (Some(_), None) => skipped(
                run,
                Channel::Email,
                "",
                &format!(
                    "{} has no e-mail address (`kartoteka users set-email`)",
                    rendered.recipient
                ),
            ),
            (Some(smtp), Some(to)) => {
                let message = message(smtp, to, rendered)?;
                let transport = smtp.transport()?;
                let (attempts, result) = with_retries(|| {
                    let (transport, message) = (&transport, message.clone());
                    async move {
                        transport
                            .send(message)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                })
                .await;
                done(run, Channel::Email, to, attempts, result)
            }
        };
        out.push(d);
    }
    if let Some(url) = &spec.delivery.webhook {
        let body = webhook_body(rendered, run).to_string();
        let (attempts, result) = with_retries(|| {
            let (url, body) = (url.clone(), body.clone());
            async move {
                tokio::task::spawn_blocking(move || crate::http::post_json(&url, &body))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        out.push(done(run, Channel::Webhook, url, attempts, result));
    }
    for d in &out {
        control
            .add_report_delivery(d)
            .await
            .map_err(|e| Error::Delivery(e.to_string()))?;
    }
    Ok(out)
}

fn skipped(run: &ReportRun, channel: Channel, target: &str, why: &str) -> ReportDelivery {
    ReportDelivery {
        run_id: run.id,
        channel,
        target: target.into(),
        attempts: 0,
        outcome: DeliveryOutcome::Skipped,
        error: Some(why.into()),
    }
}

fn done(
    run: &ReportRun,
    channel: Channel,
    target: &str,
    attempts: i64,
    result: std::result::Result<(), String>,
) -> ReportDelivery {
    ReportDelivery {
        run_id: run.id,
        channel,
        target: target.into(),
        attempts,
        outcome: if result.is_ok() {
            DeliveryOutcome::Ok
        } else {
            DeliveryOutcome::Failed
        },
        error: result.err(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::chart::{Chart, ChartData};
    use crate::render::RenderedPanel;
    use crate::spec::{ChartKind, Context};

    #[tokio::test]
    async fn a_webhook_that_never_answers_is_retried_and_recorded_as_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = ControlPlane::open(&dir.path().join("control.sqlite"), None)
            .await
            .expect("control");
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let catalog = kartoteka_queries::Catalog::builtin().expect("catalog");
        let users = BTreeMap::from([("owner".to_string(), kartoteka_engine::Role::Owner)]);
        let spec = ReportSpec::parse(
            &format!(
                "id = \"r\"\ntitle = \"R\"\nschedule = \"0 8 * * *\"\n[audience]\nusers = [\"owner\"]\n\
                 [delivery]\nemail = true\nwebhook = \"http://127.0.0.1:{port}/x\"\n\
                 [[panels]]\nmetric = \"avg_deal_size\"\n"
            ),
            Path::new("r.toml"),
            &Context {
                catalog: &catalog,
                users: &users,
                default_zone: "UTC",
            },
        )
        .expect("spec");
        let panel = spec.panels[0].clone();
        let rendered = Rendered {
            report: "r".into(),
            title: "R".into(),
            recipient: "owner".into(),
            snapshot_id: 1,
            panels: vec![RenderedPanel {
                chart: Chart {
                    kind: ChartKind::Kpi,
                    title: "t".into(),
                    x_caption: String::new(),
                    y_caption: String::new(),
                    unit: String::new(),
                    data: ChartData::Kpi {
                        value: Some(1.0),
                        previous: None,
                    },
                    english: false,
                },
                panel,
                rows: 1,
                result: crate::render::no_answer(),
                files: vec![(Format::Svg, b"<svg/>".to_vec())],
            }],
            content_hash: "00".repeat(32),
            seconds: 0.1,
        };
        let run = ReportRun {
            id: 42,
            report: "r".into(),
            recipient: "owner".into(),
            trigger: "manual".into(),
            started_at: String::new(),
            ended_at: String::new(),
            outcome: kartoteka_engine::control::RunOutcome::Ok,
            snapshot_id: Some(1),
            params: serde_json::Value::Null,
            content_hash: None,
            files: vec![],
            error: None,
            seconds: 0.1,
        };
        let started = std::time::Instant::now();
        let got = deliver(&control, &spec, None, None, &rendered, &run)
            .await
            .expect("recorded");
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "backed off 1 s and 2 s"
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].channel.as_str(), got[0].outcome.as_str()),
            ("email", "skipped"),
            "no SMTP server configured"
        );
        assert_eq!(
            (
                got[1].channel.as_str(),
                got[1].outcome.as_str(),
                got[1].attempts
            ),
            ("webhook", "failed", 3)
        );
        assert!(got[1].error.as_deref().is_some_and(|e| !e.is_empty()));
        assert_eq!(control.report_deliveries(42).await.expect("rows"), got);
    }
}
