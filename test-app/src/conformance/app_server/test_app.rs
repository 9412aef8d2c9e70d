//! A small client of a running `nudge-test-app serve`'s control API
//! (`test-app/src/control.rs`), the mock APNs/FCM the App Server under test
//! pushes to: the kit sets faults on the tokens it registered (503 for a
//! transient failure, 410/UNREGISTERED for a dead token,
//! `test-app/src/faults.rs`) and waits for pushes to arrive. HTTP/1.1 with
//! hyper's client on loopback, one request per connection, every step
//! bounded.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
    /// The HTTP exchange failed.
    #[error("control API: {0}")]
    Http(String),
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
            let tcp = TcpStream::connect(host).await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| ControlError::Http(e.to_string()))?;
            // Drives the connection; it ends with `sender`.
            tokio::spawn(connection);
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, host)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
                .map_err(|e| ControlError::Http(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ControlError::Http(e.to_string()))?;
            Ok::<_, ControlError>(response.status().as_u16())
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ControlError::Timeout(limit))?
    }
}

/// Percent-encodes a token for a path segment or a query value (the
/// kit's tokens are hex; anything but letters, digits and `*-._` is
/// encoded).
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
