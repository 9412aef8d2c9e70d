//! A small client of a running `nudge-test-app serve`'s control API
//! (`test-app/src/control.rs`), the mock APNs/FCM the App Server under test
//! pushes to: the kit sets faults on the tokens it registered (503 for a
//! transient failure, 410/UNREGISTERED for a dead token,
//! `test-app/src/faults.rs`) and waits for pushes to arrive. Plain HTTP/1.1
//! on loopback, one request per connection, every step bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a response the client reads.
const MAX_RESPONSE: u64 = 1 << 20;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The URL is not `http://host:port[/]`.
    #[error("not an http://host:port URL: {0}")]
    Url(String),
    /// The connection or the exchange failed.
    #[error("control API: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("control API: no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not HTTP.
    #[error("control API: unreadable answer")]
    BadResponse,
}

/// A fault the kit sets on a token (`test-app/src/faults.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KitFault {
    /// The provider is down (503) for this long.
    DownFor(Duration),
    /// The token is dead (APNs 410 `Unregistered`, FCM 404 `UNREGISTERED`).
    Dead,
}

impl KitFault {
    fn json(self) -> String {
        match self {
            KitFault::DownFor(d) => format!(r#"{{"kind":"fail_for","ms":{}}}"#, d.as_millis()),
            KitFault::Dead => r#"{"kind":"dead"}"#.to_owned(),
        }
    }
}

/// The control API at one base URL.
#[derive(Clone, Debug)]
pub struct Control {
    base: String,
}

impl Control {
    /// The control API at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Control {
        Control {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Sets `fault` on `token`.
    pub async fn set_fault(&self, token: &str, fault: KitFault) -> Result<(), ControlError> {
        let path = format!("/api/faults/{}", encode(token));
        self.call("PUT", &path, Some(&fault.json()), Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// Removes the fault of `token`.
    pub async fn clear_fault(&self, token: &str) -> Result<(), ControlError> {
        let path = format!("/api/faults/{}", encode(token));
        self.call("DELETE", &path, None, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// Whether a push the mock accepted arrives for `token` within
    /// `limit` (`GET /api/wait`, which consumes it).
    pub async fn delivered_within(
        &self,
        token: &str,
        limit: Duration,
    ) -> Result<bool, ControlError> {
        let path = format!(
            "/api/wait?token={}&timeout_ms={}&delivered=true",
            encode(token),
            limit.as_millis()
        );
        let status = self
            .call("GET", &path, None, limit + Duration::from_secs(10))
            .await?;
        Ok(status == 200)
    }

    /// One request; the status code.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        limit: Duration,
    ) -> Result<u16, ControlError> {
        let rest = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| ControlError::Url(self.base.clone()))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(ControlError::Url(self.base.clone()));
        }
        let exchange = async {
            let mut tcp = TcpStream::connect(host).await?;
            let body = body.unwrap_or_default();
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            tcp.take(MAX_RESPONSE).read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ControlError::Timeout(limit))??;
        let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
        head.strip_prefix("HTTP/1.1 ")
            .or_else(|| head.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or(ControlError::BadResponse)
    }
}

/// Percent-encodes a token for a path or query (tokens are hex or
/// base64url-ish; anything else is encoded).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
