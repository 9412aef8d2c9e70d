//! The Web Push backend against a push service played by this test on
//! 127.0.0.1 (axum, plain HTTP, which the backend takes for loopback
//! endpoints). The receiver holds each subscription's private key and auth
//! secret, as a browser does: it checks the VAPID token with ring, decrypts
//! the body with web-push-native and compares the plaintext with the
//! payload; and it answers with whatever status a test asks for, so that
//! every status's outcome is seen end to end. A second service speaks TLS
//! (its own throw-away CA, rcgen) to show HTTP/2 and HTTP/1.1 by ALPN.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};
use web_push_native::p256;

use nudge_plugins::webpush::payload;
use nudge_plugins::webpush::{Subscription, WebPushBackend, WebPushConfig, generate_vapid_key};
use nudge_plugins::{
    Device, Notification, Outcome, ProviderConfig, PushBackend, PushOptions, build_backend,
};

/// Every test finishes in this time or fails.
const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test exceeded its time limit")
}

/// One request as the push service saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A push service on 127.0.0.1. Endpoints are
/// `/push/{status}/{retry}/{id}`: it answers `status`, with a
/// `Retry-After` of `retry` (`none`, seconds `s<N>`, or an HTTP date `d<N>`
/// seconds ahead), after holding the request `hold` (`/slow/…`) if asked.
struct PushService {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    Path((status, retry, id)): Path<(u16, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .received
        .lock()
        .unwrap()
        .push(Received { id, headers, body });
    reply(status, &retry)
}

async fn answer_slowly(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(if id == "stall" {
        3000
    } else {
        100
    }))
    .await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    shared
        .received
        .lock()
        .unwrap()
        .push(Received { id, headers, body });
    reply(201, "none")
}

fn reply(status: u16, retry: &str) -> Response {
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    let value = if let Some(secs) = retry.strip_prefix('s') {
        Some(secs.to_owned())
    } else if let Some(ahead) = retry.strip_prefix('d') {
        let at = SystemTime::now() + Duration::from_secs(ahead.parse().unwrap());
        Some(httpdate::fmt_http_date(at))
    } else {
        None
    };
    if let Some(v) = value {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_str(&v).unwrap());
    }
    response
}

impl PushService {
    async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/push/{status}/{retry}/{id}", post(answer))
            .route("/slow/{id}", post(answer_slowly))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, shared }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    fn only(&self, id: &str) -> Received {
        let all: Vec<Received> = self.received().into_iter().filter(|r| r.id == id).collect();
        assert_eq!(all.len(), 1, "one request for {id}");
        all.into_iter().next().unwrap()
    }
}

/// A browser's side of one subscription: its key pair and auth secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let secret = loop {
            let mut scalar = [0u8; 32];
            rng.fill(&mut scalar).unwrap();
            if let Ok(s) = p256::SecretKey::from_slice(&scalar) {
                break s;
            }
        };
        let mut auth = [0u8; 16];
        rng.fill(&mut auth).unwrap();
        Self { secret, auth }
    }

    /// The device token for a subscription at `endpoint`, built from its
    /// parts as a registration command would.
    fn token(&self, endpoint: &str) -> String {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let public = self.secret.public_key().to_encoded_point(false);
        Subscription::from_parts(
            endpoint,
            &URL_SAFE_NO_PAD.encode(public.as_bytes()),
            &URL_SAFE_NO_PAD.encode(self.auth),
        )
        .unwrap()
        .to_token()
    }

    fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        let auth = web_push_native::Auth::from(self.auth);
        web_push_native::decrypt(body.to_vec(), &self.secret, &auth).expect("the push decrypts")
    }
}

/// The VAPID key pair of a test's backend.
struct Keys {
    private: String,
    public: String,
}

fn keys() -> Keys {
    let (private, public) = generate_vapid_key().unwrap();
    Keys { private, public }
}

fn config(keys: &Keys, extra: &str) -> WebPushConfig {
    toml::from_str(&format!(
        "vapid_private_key = {:?}\nvapid_subject = \"mailto:ops@nudge.example\"\n\
         allow_local_endpoints = true\n{extra}",
        keys.private
    ))
    .unwrap()
}

fn device(token: String) -> Device {
    Device {
        token,
        app: "web".into(),
        ..Device::default()
    }
}

/// A message for a person, as Prosody summarises it.
fn important() -> Notification {
    Notification {
        message_count: Some(2),
        last_message_sender: Some("juliet@capulet.example/balcony".into()),
        last_message_body: Some("Wherefore art thou?".into()),
        fields: vec![
            ("message-count".into(), "2".into()),
            (
                "last-message-sender".into(),
                "juliet@capulet.example/balcony".into(),
            ),
            ("last-message-body".into(), "Wherefore art thou?".into()),
        ],
        ..Notification::default()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks `vapid t=<jwt>, k=<key>` with ring against `public` and answers
/// the claims.
fn verify_vapid(header: &HeaderValue, public: &str) -> Value {
    let text = header.to_str().unwrap();
    let (jwt, k) = text
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .unwrap_or_else(|| panic!("not a VAPID header: {text}"));
    assert_eq!(k, public, "k is the configured public key");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, URL_SAFE_NO_PAD.decode(k).unwrap())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the VAPID signature verifies");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[tokio::test]
async fn a_push_decrypts_to_the_payload_and_carries_a_valid_vapid_token() {
    bounded(async {
        let service = PushService::start().await;
        let keys = keys();
        // Built as the component builds it, from an [apps.NAME] table.
        let table: ProviderConfig = toml::from_str(&format!(
            "provider = \"webpush\"\nvapid_private_key = {:?}\n\
             vapid_subject = \"mailto:ops@nudge.example\"\nallow_local_endpoints = \"true\"",
            keys.private
        ))
        .unwrap();
        let backend = build_backend("web", &table).await.unwrap();
        assert_eq!(backend.provider(), "webpush");
        let browser = Browser::new();
        let token = browser.token(&format!("{}/push/201/none/a", service.origin()));
        backend.validate_token(&token).unwrap();
        let n = important();
        assert_eq!(backend.send(&device(token), &n).await, Outcome::Delivered);

        let r = service.only("a");
        let plaintext = browser.decrypt(&r.body);
        assert_eq!(plaintext, payload::build(&n).unwrap());
        assert_eq!(
            serde_json::from_slice::<Value>(&plaintext).unwrap(),
            json!({
                "message-count": 2,
                "last-message-sender": "juliet@capulet.example/balcony",
                "last-message-body": "Wherefore art thou?",
            })
        );
        let h = &r.headers;
        assert_eq!(h["content-encoding"], "aes128gcm");
        assert_eq!(h["content-type"], "application/octet-stream");
        assert_eq!(h["ttl"], "86400");
        assert_eq!(h["urgency"], "high");
        let topic = h["topic"].to_str().unwrap();
        assert!(
            topic.len() <= 32
                && topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{topic}"
        );
        let claims = verify_vapid(&h["authorization"], &keys.public);
        assert_eq!(claims["aud"], service.origin());
        assert_eq!(claims["sub"], "mailto:ops@nudge.example");
        let exp = claims["exp"].as_u64().unwrap();
        let now = now_secs();
        assert!(
            exp > now && exp <= now + 12 * 3600 + 60,
            "exp {exp}, now {now}"
        );
    })
    .await
}

#[tokio::test]
async fn silent_pushes_are_normal_urgency_and_options_are_honoured() {
    bounded(async {
        let service = PushService::start().await;
        let keys = keys();
        let backend = WebPushBackend::new("web", &config(&keys, "ttl_secs = 600")).unwrap();
        let browser = Browser::new();

        let wake = device(browser.token(&format!("{}/push/201/none/wake", service.origin())));
        assert_eq!(
            backend.send(&wake, &Notification::default()).await,
            Outcome::Delivered
        );
        let r = service.only("wake");
        assert_eq!(r.headers["urgency"], "normal");
        assert_eq!(r.headers["ttl"], "600");
        assert_eq!(browser.decrypt(&r.body), b"{}");

        // A publish's own choices and the registration's collapse id.
        let chosen = Device {
            collapse_id: Some("room-garden".into()),
            options: PushOptions {
                ttl_secs: Some(30),
                high_priority: Some(true),
                ..PushOptions::default()
            },
            ..device(browser.token(&format!("{}/push/201/none/chosen", service.origin())))
        };
        assert_eq!(
            backend.send(&chosen, &Notification::default()).await,
            Outcome::Delivered
        );
        let r = service.only("chosen");
        assert_eq!(r.headers["urgency"], "high");
        assert_eq!(r.headers["ttl"], "30");
        assert_eq!(r.headers["topic"], "room-garden");

        // One registration keeps one topic; another gets its own.
        let again = device(browser.token(&format!("{}/push/201/none/wake", service.origin())));
        assert_eq!(backend.send(&again, &important()).await, Outcome::Delivered);
        let both: Vec<Received> = service
            .received()
            .into_iter()
            .filter(|r| r.id == "wake")
            .collect();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].headers["topic"], both[1].headers["topic"]);
        let other = Browser::new();
        let third = device(other.token(&format!("{}/push/201/none/other", service.origin())));
        assert_eq!(backend.send(&third, &important()).await, Outcome::Delivered);
        assert_ne!(
            service.only("other").headers["topic"],
            both[0].headers["topic"]
        );
        // Each push has its own encryption: the same summary twice gives
        // two different bodies, both readable.
        assert_ne!(both[0].body, both[1].body);
        assert_eq!(
            other.decrypt(&service.only("other").body),
            payload::build(&important()).unwrap()
        );
    })
    .await
}

#[tokio::test]
async fn every_status_has_its_outcome() {
    bounded(async {
        let service = PushService::start().await;
        let backend = WebPushBackend::new("web", &config(&keys(), "")).unwrap();
        let browser = Browser::new();
        let send = |status: u16, retry: &str| {
            let token = browser.token(&format!(
                "{}/push/{status}/{retry}/s{status}{retry}",
                service.origin()
            ));
            let backend = backend.clone();
            async move { backend.send(&device(token), &important()).await }
        };
        assert_eq!(send(201, "none").await, Outcome::Delivered);
        assert_eq!(send(202, "none").await, Outcome::Delivered);
        for status in [404, 410] {
            let o = send(status, "none").await;
            assert!(
                matches!(&o, Outcome::InvalidToken { reason } if reason.starts_with(&status.to_string())),
                "{status}: {o:?}"
            );
        }
        assert_eq!(
            send(429, "s7").await,
            Outcome::Throttled {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        match send(429, "d30").await {
            Outcome::Throttled {
                retry_after: Some(d),
            } => assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(20), "{d:?}"),
            o => panic!("429 with a date: {o:?}"),
        }
        assert_eq!(send(429, "none").await, Outcome::Throttled { retry_after: None });
        for (status, retry, want) in [
            (500, "none", None),
            (503, "s120", Some(Duration::from_secs(120))),
            (502, "none", None),
        ] {
            let o = send(status, retry).await;
            assert!(
                matches!(&o, Outcome::Transient { retry_after, .. } if *retry_after == want),
                "{status}: {o:?}"
            );
        }
        for status in [400, 401, 403, 405, 413] {
            let o = send(status, "none").await;
            assert!(matches!(o, Outcome::Rejected { .. }), "{status}: {o:?}");
        }
        // A redirect is not followed: the push must reach its endpoint.
        let o = send(307, "none").await;
        assert!(matches!(o, Outcome::Rejected { .. }), "307: {o:?}");
    })
    .await
}

#[tokio::test]
async fn vapid_tokens_are_reused_per_origin() {
    bounded(async {
        let one = PushService::start().await;
        let two = PushService::start().await;
        let keys = keys();
        let backend = WebPushBackend::new("web", &config(&keys, "")).unwrap();
        assert_eq!(backend.vapid_public_key(), keys.public);
        let browser = Browser::new();
        for (service, id) in [(&one, "x"), (&one, "y"), (&two, "z")] {
            let token = browser.token(&format!("{}/push/201/none/{id}", service.origin()));
            assert_eq!(
                backend.send(&device(token), &important()).await,
                Outcome::Delivered
            );
        }
        let (x, y, z) = (one.only("x"), one.only("y"), two.only("z"));
        assert_eq!(x.headers["authorization"], y.headers["authorization"]);
        assert_ne!(x.headers["authorization"], z.headers["authorization"]);
        assert_eq!(
            verify_vapid(&z.headers["authorization"], &keys.public)["aud"],
            two.origin()
        );
    })
    .await
}

#[tokio::test]
async fn pushes_in_flight_to_one_origin_are_bounded() {
    bounded(async {
        let service = PushService::start().await;
        let backend =
            WebPushBackend::new("web", &config(&keys(), "max_concurrent_per_origin = 2")).unwrap();
        let browser = Browser::new();
        let mut pushes = tokio::task::JoinSet::new();
        for i in 0..10 {
            let backend = backend.clone();
            let token = browser.token(&format!("{}/slow/p{i}", service.origin()));
            pushes.spawn(async move { backend.send(&device(token), &important()).await });
        }
        while let Some(outcome) = pushes.join_next().await {
            assert_eq!(outcome.unwrap(), Outcome::Delivered);
        }
        assert_eq!(service.received().len(), 10);
        let max = service.shared.max_in_flight.load(Ordering::SeqCst);
        assert!((1..=2).contains(&max), "{max} in flight at once");
    })
    .await
}

#[tokio::test]
async fn network_failures_are_transient() {
    bounded(async {
        let keys = keys();
        let backend = WebPushBackend::new("web", &config(&keys, "timeout_secs = 1")).unwrap();
        let browser = Browser::new();
        // Nobody listens on a port just released.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let token = browser.token(&format!("http://{closed}/push"));
        let o = backend.send(&device(token), &important()).await;
        assert!(
            matches!(&o, Outcome::Transient { reason, .. } if reason.starts_with("connect")),
            "{o:?}"
        );
        // A push service slower than the timeout.
        let service = PushService::start().await;
        let token = browser.token(&format!("{}/slow/stall", service.origin()));
        let o = backend.send(&device(token), &important()).await;
        assert!(
            matches!(&o, Outcome::Transient { reason, .. } if reason.starts_with("timeout")),
            "{o:?}"
        );
    })
    .await
}

#[tokio::test]
async fn bad_and_local_tokens_are_refused() {
    bounded(async {
        let service = PushService::start().await;
        let keys = keys();
        let mut c = config(&keys, "");
        c.allow_local_endpoints = false;
        let strict = WebPushBackend::new("web", &c).unwrap();
        let browser = Browser::new();
        let local = browser.token(&format!("{}/push/201/none/local", service.origin()));
        assert!(strict.validate_token(&local).is_err());
        // Registered while allowed: refused now, but not blamed on the
        // registration.
        let o = strict.send(&device(local), &important()).await;
        assert!(matches!(o, Outcome::Rejected { .. }), "{o:?}");
        assert!(
            service.received().is_empty(),
            "nothing sent to a local address"
        );
        // A token that is no subscription can never be pushed to.
        let o = strict
            .send(&device("https://push.example/no-keys".into()), &important())
            .await;
        assert!(matches!(o, Outcome::InvalidToken { .. }), "{o:?}");
    })
    .await
}

/// The HTTP version and body of each push a TLS service received.
type Seen = Arc<Mutex<Vec<(hyper::Version, Vec<u8>)>>>;

/// A push service over TLS on 127.0.0.1, offering `alpn`; it records the
/// HTTP version of each push and counts connections.
struct TlsPushService {
    addr: SocketAddr,
    ca_file: tempfile::NamedTempFile,
    versions: Seen,
    connections: Arc<AtomicUsize>,
}

impl TlsPushService {
    async fn start(alpn: &[&[u8]]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca_cert.pem().as_bytes()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let versions: Seen = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (v, c) = (versions.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (acceptor, v) = (acceptor.clone(), v.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let v = v.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let version = req.version();
                                let body = req.into_body().collect().await?.to_bytes();
                                v.lock().unwrap().push((version, body.to_vec()));
                                let mut response =
                                    hyper::Response::new(http_body_util::Empty::<Bytes>::new());
                                *response.status_mut() = hyper::StatusCode::CREATED;
                                Ok::<_, hyper::Error>(response)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            versions,
            connections,
        }
    }
}

/// HTTP/2 where the push service offers it by ALPN, HTTP/1.1 where it
/// does not; one connection carries a run of pushes either way.
#[tokio::test]
async fn http2_where_offered_http1_otherwise() {
    bounded(async {
        for (alpn, want) in [
            (&[&b"h2"[..], b"http/1.1"][..], hyper::Version::HTTP_2),
            (&[&b"http/1.1"[..]][..], hyper::Version::HTTP_11),
        ] {
            let service = TlsPushService::start(alpn).await;
            let mut c = config(&keys(), "");
            c.ca_file = Some(service.ca_file.path().to_owned());
            let backend = WebPushBackend::new("web", &c).unwrap();
            let browser = Browser::new();
            let token = browser.token(&format!("https://{}/push/1", service.addr));
            for _ in 0..5 {
                assert_eq!(
                    backend.send(&device(token.clone()), &important()).await,
                    Outcome::Delivered
                );
            }
            let seen = service.versions.lock().unwrap().clone();
            assert_eq!(seen.len(), 5);
            for (version, body) in &seen {
                assert_eq!(*version, want);
                assert_eq!(browser.decrypt(body), payload::build(&important()).unwrap());
            }
            assert_eq!(service.connections.load(Ordering::SeqCst), 1, "{want:?}");
        }
    })
    .await
}
