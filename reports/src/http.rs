//! Kartoteka's one HTTP client, for report webhooks and the audit log's remote checkpoint sinks:
//! ureq over rustls (webpki roots), `http://` and `https://`, a timeout on every request, no
//! redirects (a webhook that redirects is a misconfiguration, not something to follow blindly).
//! The engine speaks no HTTP: the composition root hands the audit log a [`WebhookSink`].

use std::time::Duration;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// POST `body` as JSON to `url`; anything but a 2xx answer is an error naming the status.
pub fn post_json(url: &str, body: &str) -> std::io::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .max_redirects(0)
        .build()
        .into();
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(std::io::Error::other(format!(
            "{url} answered {}",
            response.status()
        ))),
        Err(ureq::Error::StatusCode(code)) => {
            Err(std::io::Error::other(format!("{url} answered {code}")))
        }
        Err(e) => Err(std::io::Error::other(format!("{url}: {e}"))),
    }
}

/// Is `url` an address this client posts to?
pub fn is_webhook_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    })
}

/// An audit checkpoint sink that POSTs each checkpoint to a webhook out of the administrator's reach.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    url: String,
}

impl WebhookSink {
    /// A sink posting to `url` (`http://` or `https://`).
    pub fn new(url: &str) -> Option<WebhookSink> {
        is_webhook_url(url).then(|| WebhookSink { url: url.into() })
    }
}

impl kartoteka_engine::audit::CheckpointShipper for WebhookSink {
    fn ship(&self, line: &str) -> std::io::Result<()> {
        post_json(&self.url, line)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A one-request HTTP collector on loopback: returns the body it received.
    fn collector(status: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            assert!(request_line.starts_with("POST /hook "), "{request_line}");
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().expect("length");
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).expect("body");
            let mut stream = stream;
            write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").expect("respond");
            String::from_utf8(body).expect("utf-8")
        });
        (url, handle)
    }

    #[test]
    fn a_post_arrives_whole_and_a_refusal_is_an_error_naming_the_status() {
        let (url, handle) = collector("200 OK");
        post_json(&url, r#"{"seq":3}"#).expect("posted");
        assert_eq!(handle.join().expect("collector"), r#"{"seq":3}"#);

        let (url, handle) = collector("500 Internal Server Error");
        let e = post_json(&url, "{}").expect_err("refused");
        handle.join().expect("collector");
        assert!(e.to_string().contains("500"), "{e}");

        // Nobody listening: an error, within the timeout.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(post_json(&format!("http://127.0.0.1:{port}/x"), "{}").is_err());
        assert!(WebhookSink::new("ftp://x").is_none());
        assert!(WebhookSink::new("https://collector.example/k").is_some());
    }
}
