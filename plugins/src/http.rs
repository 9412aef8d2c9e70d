//! What the HTTP/2 backends share: the rustls client configuration (ring,
//! the platform's roots plus an optional extra CA, an optional client
//! certificate), the long-lived reqwest clients, and the small parsers for
//! provider answers (`Retry-After`, bounded bodies).
//!
//! Why a hand-built rustls config: reqwest is compiled with
//! `rustls-no-provider`, so it has no crypto provider of its own; building
//! the `ClientConfig` here with ring's provider means the backends work
//! without any process-wide `CryptoProvider::install_default()`, and it is
//! the one place where the extra CA (tests, proxies) and the APNs client
//! certificate can be added. ALPN offers only `h2`: both providers speak
//! HTTP/2, and the clients use prior knowledge so that concurrent first
//! requests wait for one connection instead of racing to open several.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why an HTTP client could not be set up from configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client setup: {0}")]
    Client(#[from] reqwest::Error),
    #[error("invalid URL {url:?}: {why}")]
    Url { url: String, why: String },
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
pub(crate) fn certificates_from_pem(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::Pem {
            path: path.to_owned(),
            what: format!("bad certificate PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SetupError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE section".into(),
        });
    }
    Ok(certs)
}

/// A TLS client certificate and its key (APNs certificate-based auth).
pub(crate) struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// Reads a certificate chain and a private key (PKCS#8, PKCS#1 or SEC1)
    /// from PEM files; both may be the same file, as `openssl pkcs12 -nodes`
    /// writes them.
    pub(crate) fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, SetupError> {
        let chain = certificates_from_pem(cert, &read_file(cert)?)?;
        let key_pem = read_file(key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| SetupError::Pem {
            path: key.to_owned(),
            what: format!("no usable private key: {e}"),
        })?;
        Ok(Self { chain, key })
    }
}

/// Builds the rustls configuration every backend client uses: ring, the
/// platform's trusted roots plus `extra_ca` (a PEM file of CA certificates),
/// an optional client identity, ALPN `h2`.
pub(crate) fn tls_config(
    extra_ca: Option<&Path>,
    identity: Option<ClientIdentity>,
) -> Result<rustls::ClientConfig, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra_roots = match extra_ca {
        Some(path) => certificates_from_pem(path, &read_file(path)?)?,
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        // Not dangerous: the platform verifier checks chains and names as
        // webpki does; rustls only calls any non-default verifier this.
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// One or more long-lived HTTP/2 clients for one app and endpoint. Each
/// reqwest client keeps a single multiplexed connection per host, so
/// `connections` clients give that many connections; pushes are spread
/// over them round-robin.
#[derive(Debug)]
pub(crate) struct Http2Clients {
    clients: Vec<reqwest::Client>,
    next: AtomicUsize,
}

impl Http2Clients {
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        let clients = (0..connections.max(1))
            .map(|_| {
                reqwest::Client::builder()
                    .tls_backend_preconfigured(tls.clone())
                    .http2_prior_knowledge()
                    // The endpoint URL is the proxy when one is wanted;
                    // environment proxies would break prior-knowledge h2.
                    .no_proxy()
                    // Keep the connection forever: providers want long-lived
                    // connections, and reconnecting costs a TLS handshake.
                    .pool_idle_timeout(None)
                    // Pings find a dead connection before a push waits on it.
                    .http2_keep_alive_interval(Some(Duration::from_secs(60)))
                    .http2_keep_alive_timeout(Duration::from_secs(20))
                    .http2_keep_alive_while_idle(true)
                    .connect_timeout(timeout.min(Duration::from_secs(10)))
                    .timeout(timeout)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The client for the next request.
    pub(crate) fn next(&self) -> &reqwest::Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }
}

/// Parses a base URL from configuration: `http` or `https`, no query or
/// fragment; returned without a trailing slash so paths can be appended.
pub(crate) fn base_url(url: &str) -> Result<String, SetupError> {
    let bad = |why: &str| SetupError::Url {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("scheme must be https (or http for h2c)"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Parses a URL built from a [`base_url`] once, at set-up: per request, a
/// clone of it with segments added saves parsing the host each time.
pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, SetupError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| SetupError::Url {
        url: url.to_owned(),
        why: e.to_string(),
    })?;
    if parsed.cannot_be_a_base() {
        return Err(SetupError::Url {
            url: url.to_owned(),
            why: "not a base URL".into(),
        });
    }
    Ok(parsed)
}

/// The longest wait a provider's `Retry-After` is taken at its word for; a
/// larger value is clamped rather than parking pushes for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads `Retry-After` (delay-seconds or an HTTP date) relative to `now`.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Reads at most `cap` bytes of a response body. Provider error bodies are
/// tiny JSON documents; anything longer is someone else's page (a proxy's)
/// and only its start is worth logging. A failure half-way keeps what was
/// read: the status already decided the outcome.
pub(crate) async fn body_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(cap - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// A short printable excerpt of a body for logs and reasons.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Describes a transport failure (connect, TLS, timeout, reset) for a
/// `Transient` outcome.
pub(crate) fn describe_transport_error(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // reqwest's Display hides the cause (h2 reset, TLS alert); walk it.
    let mut text = format!("{kind}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("999999999"));
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("https://api.push.apple.com/").unwrap(),
            "https://api.push.apple.com"
        );
        assert_eq!(
            base_url("https://127.0.0.1:8443/prefix/").unwrap(),
            "https://127.0.0.1:8443/prefix"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://x/?a=b").is_err());
        assert!(base_url("not a url").is_err());
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(b"short"), "short");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), 201);
    }
}
