//! Test clients for the mocks: an HTTP/2-over-TLS client that trusts the
//! test-app's CA (optionally with the APNs client identity), a raw TLS
//! connector for protocol tests, a plain HTTP/1.1 client for the
//! control API, and what a Web Push sender needs (a VAPID key signing with
//! ring, RFC 8291 encryption). Each test binary uses a subset.
#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nudge_test_app::WebPushSubscription;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use web_push_native::p256;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nudge_test_app::{ApnsClientIdentity, TestApp};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Every test operation is bounded by this, so a broken mock fails a test
/// instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test step timed out")
}

/// A client TLS config trusting `ca_pem`, with the given ALPN protocols and
/// an optional client identity.
pub fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: Option<(&str, &str)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn addr(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// Opens a TLS connection to `url` (https://host:port).
pub async fn tls_connect(
    url: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr(url)).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A response: status, headers, body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    /// APNs' `reason`.
    pub fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap().to_owned()
    }
    /// FCM's `errorCode` (or `status` when there is none).
    pub fn fcm_error(&self) -> String {
        let j = self.json();
        j["error"]["details"][0]["errorCode"]
            .as_str()
            .or(j["error"]["status"].as_str())
            .unwrap()
            .to_owned()
    }
}

/// An HTTP/2 connection over TLS; clones share the connection (one stream
/// per request).
#[derive(Clone)]
pub struct H2 {
    sender: http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    pub async fn connect(url: &str, ca_pem: &str, identity: Option<&ApnsClientIdentity>) -> H2 {
        let config = client_config(
            ca_pem,
            &[b"h2"],
            identity.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())),
        );
        let tls = bounded(tls_connect(url, config)).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) = bounded(http2::handshake(TokioExecutor::new(), TokioIo::new(tls)))
            .await
            .unwrap();
        tokio::spawn(conn);
        H2 { sender }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        bounded(async { read_response(self.sender.send_request(req).await.unwrap()).await }).await
    }

    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        self.request("POST", path, headers, body).await
    }
}

/// Status, headers and the whole body of a response.
async fn read_response(resp: hyper::Response<hyper::body::Incoming>) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// One plain HTTP/1.1 request (a new connection each time).
pub async fn http(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Resp {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let host = host.to_owned();
    let body = body.into();
    bounded(async move {
        let tcp = TcpStream::connect(&host).await.unwrap();
        let (mut sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host.as_str());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = sender
            .send_request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        read_response(resp).await
    })
    .await
}

pub async fn get(url: &str) -> Resp {
    http("GET", url, None, Bytes::new()).await
}

pub async fn send_json(method: &str, url: &str, body: &Value) -> Resp {
    http(method, url, Some("application/json"), body.to_string()).await
}

/// A fresh, valid APNs provider token for `app`.
pub fn apns_jwt(app: &TestApp) -> String {
    app.apns_credentials().provider_token(now()).unwrap()
}

/// Headers for a plain alert push with a bearer token.
pub fn alert_headers(jwt: &str) -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("bearer {jwt}")),
        ("apns-topic".into(), "org.example.app".into()),
        ("apns-push-type".into(), "alert".into()),
        ("apns-priority".into(), "10".into()),
    ]
}

pub fn as_refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// One APNs alert to `token` with a fresh provider token; the response.
pub async fn apns_alert(c: &mut H2, app: &TestApp, token: &str) -> Resp {
    let jwt = apns_jwt(app);
    c.post(
        &format!("/3/device/{token}"),
        &as_refs(&alert_headers(&jwt)),
        ALERT,
    )
    .await
}

pub const ALERT: &str = r#"{"aps":{"alert":{"title":"Alice","body":"Hello"},"sound":"default"}}"#;

/// An access token from the mock's plain-HTTP token endpoint, made with a
/// correctly signed assertion.
pub async fn oauth_token(app: &TestApp) -> String {
    let resp = token_request(app, &assertion_claims(app), None).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    resp.json()["access_token"].as_str().unwrap().to_owned()
}

/// Claims gcp_auth would send.
pub fn assertion_claims(app: &TestApp) -> Value {
    let sa: Value = serde_json::from_str(&app.fcm_service_account_json()).unwrap();
    let iat = now();
    serde_json::json!({
        "iss": sa["client_email"],
        "aud": app.oauth_token_url(),
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "iat": iat,
        "exp": iat + 3600,
    })
}

/// Posts a JWT-bearer grant with `claims`, signed with the service
/// account's key, or with `key_pem` when given.
pub async fn token_request(app: &TestApp, claims: &Value, key_pem: Option<&str>) -> Resp {
    let sa: Value = serde_json::from_str(&app.fcm_service_account_json()).unwrap();
    let key = key_pem.unwrap_or_else(|| sa["private_key"].as_str().unwrap());
    let assertion = nudge_test_app::jwt::sign_rs256(key, None, claims).unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    http(
        "POST",
        &app.oauth_token_url(),
        Some("application/x-www-form-urlencoded"),
        body,
    )
    .await
}

/// A path for the FCM send endpoint of `app`'s project.
pub fn fcm_path(app: &TestApp) -> String {
    format!("/v1/projects/{}/messages:send", app.fcm_project_id())
}

/// An application server's VAPID key pair, signing with ring as Nudge does.
pub struct Vapid {
    pub key: EcdsaKeyPair,
    /// The public key as the `k` parameter carries it.
    pub k: String,
}

impl Vapid {
    pub fn new() -> Vapid {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let k = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        Vapid { key, k }
    }

    /// An ES256 JWT with `claims`.
    pub fn jwt(&self, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// `vapid t=…, k=…` for `claims`, with this key as `k`.
    pub fn header(&self, claims: &Value) -> String {
        format!("vapid t={}, k={}", self.jwt(claims), self.k)
    }
}

/// The claims a correct sender puts in for `app`'s endpoints.
pub fn webpush_claims(app: &TestApp) -> Value {
    serde_json::json!({
        "aud": app.webpush_url(),
        "exp": now() + 12 * 3600,
        "sub": "mailto:ops@example.org",
    })
}

/// `plaintext` encrypted for `sub` (RFC 8291), from its p256dh and auth.
pub fn webpush_encrypt(sub: &WebPushSubscription, plaintext: &[u8]) -> Vec<u8> {
    let public = URL_SAFE_NO_PAD.decode(&sub.p256dh).unwrap();
    let auth = URL_SAFE_NO_PAD.decode(&sub.auth).unwrap();
    web_push_native::encrypt(
        plaintext.to_vec(),
        &p256::PublicKey::from_sec1_bytes(&public).unwrap(),
        &web_push_native::Auth::from(<[u8; 16]>::try_from(auth.as_slice()).unwrap()),
    )
    .unwrap()
}

/// Headers of a correct push from `vapid` to an endpoint of `app`.
pub fn webpush_headers(app: &TestApp, vapid: &Vapid) -> Vec<(String, String)> {
    vec![
        ("ttl".into(), "60".into()),
        ("content-encoding".into(), "aes128gcm".into()),
        ("authorization".into(), vapid.header(&webpush_claims(app))),
    ]
}
