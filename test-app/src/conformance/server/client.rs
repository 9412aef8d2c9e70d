//! The kit's own XMPP client (c2s): just enough of RFC 6120 and XEP-0198 to
//! play the device owner and the sender against any server.
//!
//! Server mode cannot lean on a client library: it needs to do what a phone
//! does and no more (log in, enable push, leave a session hibernated by
//! dropping the TCP connection without `</stream:stream>`), and to see
//! every answer as it is. So: TCP, STARTTLS (tokio-rustls), SASL
//! SCRAM-SHA-1 or PLAIN ([`super::sasl`]), resource binding, the optional
//! legacy session, and XEP-0198 `<enable resume='true'/>` with acks. After
//! login a reader task answers the server's pings and `<r/>` requests and
//! hands iq answers to whoever waits for them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::conformance::xml::{
    Element, STREAM_CLOSE, StreamEvent, StreamReader, XmlError, default_reply, error_condition, ns,
    stream_open,
};

use super::sasl::{Mechanism, Scram, ScramError, plain_initial};

/// The largest stanza the kit reads from a server (a drained offline
/// backlog carries bodies of its own making only).
const MAX_STANZA: usize = 1 << 20;
/// Every step of a login, and every iq, waits at most this long.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Anything a stream can run over: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// The transport, boxed so that STARTTLS can swap it.
pub(crate) type BoxIo = Box<dyn Io>;

/// Whether to use STARTTLS on the client connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// STARTTLS when the server offers it, plain text otherwise.
    #[default]
    Auto,
    /// STARTTLS required: fail when the server does not offer it.
    Starttls,
    /// Never: plain text even when offered.
    None,
}

/// How the client connections verify the server's certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// STARTTLS or not.
    pub mode: TlsMode,
    /// Trust this PEM CA bundle instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (test servers with self-signed ones).
    pub insecure: bool,
}

/// A user account the kit logs in as.
#[derive(Clone, Debug)]
pub struct Account {
    /// Bare JID, `user@domain`.
    pub jid: String,
    /// Its password.
    pub password: String,
}

impl Account {
    /// The localpart and domain of the JID.
    pub fn split(&self) -> Result<(&str, &str), ClientError> {
        match self.jid.split_once('@') {
            Some((user, domain)) if !user.is_empty() && !domain.is_empty() => Ok((user, domain)),
            _ => Err(ClientError::BadJid(self.jid.clone())),
        }
    }
}

/// Why a client connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The JID has no `@`.
    #[error("{0:?} is not a bare JID user@domain")]
    BadJid(String),
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The c2s address.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Reading or writing the stream.
    #[error("c2s stream: {0}")]
    Xml(#[from] XmlError),
    /// Writing.
    #[error("c2s write: {0}")]
    Io(#[from] std::io::Error),
    /// A step took too long.
    #[error("no answer within {0:?} while {1}")]
    Timeout(Duration, &'static str),
    /// The server said something the login does not expect.
    #[error("{0}")]
    Protocol(String),
    /// `--tls starttls` but the server does not offer it.
    #[error("the server does not offer STARTTLS (--tls starttls)")]
    NoStarttls,
    /// TLS setup or handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the credentials.
    #[error("authentication of {jid} failed: {condition}")]
    AuthFailed {
        /// Who.
        jid: String,
        /// The SASL failure condition.
        condition: String,
    },
    /// SCRAM exchange.
    #[error("SCRAM: {0}")]
    Scram(#[from] ScramError),
    /// The stream ended.
    #[error("the server closed the stream")]
    Closed,
}

type Pending = Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<Element>>>>;

/// A logged-in client session.
pub struct Client {
    /// The bound full JID.
    pub full_jid: String,
    /// Whether XEP-0198 is enabled with resumption.
    pub sm_enabled: bool,
    writer: Arc<Mutex<WriteHalf<BoxIo>>>,
    pending: Pending,
    /// Stanzas received since SM was enabled (the `h` of XEP-0198 acks).
    received: Arc<AtomicU32>,
    reader: JoinHandle<()>,
    next_id: u32,
}

/// Reads one top-level element with a timeout.
async fn read_stanza<R: AsyncRead + Unpin>(
    reader: &mut StreamReader<R>,
    what: &'static str,
) -> Result<Element, ClientError> {
    match timeout(STEP_TIMEOUT, reader.next()).await {
        Err(_) => Err(ClientError::Timeout(STEP_TIMEOUT, what)),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(StreamEvent::End)) => Err(ClientError::Closed),
        Ok(Ok(StreamEvent::Stanza(el))) if el.is("error", ns::STREAM) => {
            Err(ClientError::Protocol(format!(
                "stream error while {what}: {}",
                error_condition(&el)
            )))
        }
        Ok(Ok(StreamEvent::Stanza(el))) => Ok(el),
    }
}

/// Opens (or restarts) the stream and reads the features.
async fn open(
    reader: &mut StreamReader<ReadHalf<BoxIo>>,
    writer: &mut WriteHalf<BoxIo>,
    domain: &str,
) -> Result<Element, ClientError> {
    let open = stream_open(ns::CLIENT, &[("to", domain), ("version", "1.0")]);
    writer.write_all(open.as_bytes()).await?;
    writer.flush().await?;
    timeout(STEP_TIMEOUT, reader.header())
        .await
        .map_err(|_| ClientError::Timeout(STEP_TIMEOUT, "waiting for the stream header"))??;
    let features = read_stanza(reader, "waiting for stream features").await?;
    if !features.is("features", ns::STREAM) {
        return Err(ClientError::Protocol(format!(
            "expected stream features, got <{}>",
            features.name
        )));
    }
    Ok(features)
}

async fn send(writer: &mut WriteHalf<BoxIo>, el: &Element) -> Result<(), ClientError> {
    writer.write_all(el.to_xml(ns::CLIENT).as_bytes()).await?;
    writer.flush().await?;
    Ok(())
}

fn tls_config(tls: &TlsOptions) -> Result<ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let config = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else if let Some(path) = &tls.ca_file {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder
            .with_platform_verifier()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_no_client_auth()
    };
    Ok(config)
}

/// `--insecure`: any certificate, signatures still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Client {
    /// Connects to `addr`, logs `account` in with `resource`, enables
    /// XEP-0198 with resumption when `sm` and sends initial presence
    /// (which makes the server deliver stored offline messages) when
    /// `presence`.
    pub async fn login(
        addr: &str,
        tls: &TlsOptions,
        account: &Account,
        resource: &str,
        sm: bool,
        presence: bool,
    ) -> Result<Client, ClientError> {
        let (user, domain) = account.split()?;
        let tcp = timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(STEP_TIMEOUT, "connecting"))?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let io: BoxIo = Box::new(tcp);
        let (r, mut writer) = tokio::io::split(io);
        let mut reader = StreamReader::new(r, MAX_STANZA);
        let mut features = open(&mut reader, &mut writer, domain).await?;

        // STARTTLS (RFC 6120 §5).
        let offered = features.child("starttls", ns::TLS).is_some();
        if tls.mode == TlsMode::Starttls && !offered {
            return Err(ClientError::NoStarttls);
        }
        if offered && tls.mode != TlsMode::None {
            send(&mut writer, &Element::new("starttls", ns::TLS)).await?;
            let answer = read_stanza(&mut reader, "waiting for <proceed/>").await?;
            if !answer.is("proceed", ns::TLS) {
                return Err(ClientError::Tls(format!(
                    "server answered <{}>",
                    answer.name
                )));
            }
            let io = reader.into_inner().unsplit(writer);
            let config = tls_config(tls)?;
            let name = ServerName::try_from(domain.to_owned())
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let stream = timeout(STEP_TIMEOUT, connector.connect(name, io))
                .await
                .map_err(|_| ClientError::Timeout(STEP_TIMEOUT, "in the TLS handshake"))?
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let io: BoxIo = Box::new(stream);
            let (r, w) = tokio::io::split(io);
            writer = w;
            reader = StreamReader::new(r, MAX_STANZA);
            features = open(&mut reader, &mut writer, domain).await?;
        }

        // SASL (RFC 6120 §6).
        let mechanisms: Vec<String> = features
            .child("mechanisms", ns::SASL)
            .map(|m| {
                m.children_named("mechanism", ns::SASL)
                    .map(|c| c.text.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mechanism = Mechanism::choose(&mechanisms).ok_or_else(|| {
            ClientError::Protocol(format!(
                "no supported SASL mechanism offered (SCRAM-SHA-1, PLAIN): {mechanisms:?}"
            ))
        })?;
        authenticate(&mut reader, &mut writer, mechanism, account, user).await?;
        let r = reader.into_inner();
        let mut reader = StreamReader::new(r, MAX_STANZA);
        let features = open(&mut reader, &mut writer, domain).await?;

        // Resource binding, and the legacy session where it is required.
        let bind = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "bind")
            .with_child(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("resource", ns::BIND).with_text(resource)),
            );
        send(&mut writer, &bind).await?;
        let answer = read_iq(&mut reader, "bind", "binding a resource").await?;
        let full_jid = answer
            .child("bind", ns::BIND)
            .and_then(|b| b.child("jid", ns::BIND))
            .map(|j| j.text.clone())
            .ok_or_else(|| ClientError::Protocol("bind result without a JID".into()))?;
        if let Some(session) = features.child("session", ns::SESSION)
            && session.child("optional", ns::SESSION).is_none()
        {
            let iq = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", "session")
                .with_child(Element::new("session", ns::SESSION));
            send(&mut writer, &iq).await?;
            read_iq(&mut reader, "session", "establishing the session").await?;
        }

        // XEP-0198 with resumption: what makes a dropped session hibernate.
        let mut sm_enabled = false;
        if sm {
            if features.child("sm", ns::SM).is_none() {
                return Err(ClientError::Protocol(
                    "the server does not offer XEP-0198 stream management".into(),
                ));
            }
            send(
                &mut writer,
                &Element::new("enable", ns::SM).with_attr("resume", "true"),
            )
            .await?;
            let answer = read_stanza(&mut reader, "enabling stream management").await?;
            if !answer.is("enabled", ns::SM) {
                return Err(ClientError::Protocol(format!(
                    "stream management: server answered <{}> ({})",
                    answer.name,
                    error_condition(&answer)
                )));
            }
            sm_enabled = true;
        }
        if presence {
            send(&mut writer, &Element::new("presence", ns::CLIENT)).await?;
        }

        let writer = Arc::new(Mutex::new(writer));
        let pending: Pending = Arc::default();
        let received = Arc::new(AtomicU32::new(0));
        let reader = tokio::spawn(read_loop(
            reader,
            writer.clone(),
            pending.clone(),
            received.clone(),
        ));
        Ok(Client {
            full_jid,
            sm_enabled,
            writer,
            pending,
            received,
            reader,
            next_id: 0,
        })
    }

    /// Sends a stanza.
    pub async fn send(&self, el: &Element) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        send(&mut w, el).await
    }

    /// Sends an iq (its id set here) and waits for its answer, result or
    /// error, for at most [`STEP_TIMEOUT`].
    pub async fn iq(&mut self, mut iq: Element) -> Result<Element, ClientError> {
        self.next_id += 1;
        let id = format!("conf-{}", self.next_id);
        iq.set_attr("id", id.clone());
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.clone(), tx);
        }
        self.send(&iq).await?;
        match timeout(STEP_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(ClientError::Timeout(
                    STEP_TIMEOUT,
                    "waiting for an iq answer",
                ))
            }
        }
    }

    /// Logs out cleanly: `</stream:stream>`, then waits (bounded) for the
    /// server's close so that the session is gone when this returns.
    pub async fn close(self) {
        {
            let mut w = self.writer.lock().await;
            let _ = w.write_all(STREAM_CLOSE.as_bytes()).await;
            let _ = w.flush().await;
        }
        let mut reader = self.reader;
        if timeout(Duration::from_secs(3), &mut reader).await.is_err() {
            reader.abort();
        }
        let mut w = self.writer.lock().await;
        let _ = w.shutdown().await;
    }

    /// Drops the TCP connection without closing the stream, the way a
    /// phone leaves network coverage: with XEP-0198 the server hibernates
    /// the session. Acks everything received first, so the session leaves
    /// nothing unacknowledged to push about.
    pub async fn drop_abruptly(self) {
        if self.sm_enabled {
            let h = self.received.load(Ordering::Relaxed).to_string();
            let _ = self
                .send(&Element::new("a", ns::SM).with_attr("h", h))
                .await;
        }
        self.reader.abort();
        let _ = self.reader.await;
        // The write half is dropped with `self`: the socket closes with no
        // `</stream:stream>`.
    }
}

async fn authenticate(
    reader: &mut StreamReader<ReadHalf<BoxIo>>,
    writer: &mut WriteHalf<BoxIo>,
    mechanism: Mechanism,
    account: &Account,
    user: &str,
) -> Result<(), ClientError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let failed = |el: &Element| ClientError::AuthFailed {
        jid: account.jid.clone(),
        condition: el
            .children
            .iter()
            .find(|c| c.name != "text")
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "failure".into()),
    };
    match mechanism {
        Mechanism::Plain => {
            let auth = Element::new("auth", ns::SASL)
                .with_attr("mechanism", "PLAIN")
                .with_text(b64.encode(plain_initial(user, &account.password)));
            send(writer, &auth).await?;
            let answer = read_stanza(reader, "authenticating").await?;
            if answer.is("success", ns::SASL) {
                Ok(())
            } else {
                Err(failed(&answer))
            }
        }
        Mechanism::ScramSha1 => {
            let mut scram = Scram::new(user, &account.password);
            let auth = Element::new("auth", ns::SASL)
                .with_attr("mechanism", "SCRAM-SHA-1")
                .with_text(b64.encode(scram.client_first()));
            send(writer, &auth).await?;
            let challenge = read_stanza(reader, "authenticating").await?;
            if !challenge.is("challenge", ns::SASL) {
                return Err(failed(&challenge));
            }
            let server_first = b64
                .decode(challenge.text.trim())
                .map_err(|_| ScramError::Malformed("challenge is not base64"))?;
            let client_final = scram.client_final(&server_first)?;
            let response = Element::new("response", ns::SASL).with_text(b64.encode(client_final));
            send(writer, &response).await?;
            let answer = read_stanza(reader, "authenticating").await?;
            if !answer.is("success", ns::SASL) {
                return Err(failed(&answer));
            }
            let server_final = b64
                .decode(answer.text.trim())
                .map_err(|_| ScramError::Malformed("success is not base64"))?;
            scram.verify_server_final(&server_final)?;
            Ok(())
        }
    }
}

/// Reads until the iq with `id` (skipping anything else the server sends
/// first) and returns it when it is a result.
async fn read_iq(
    reader: &mut StreamReader<ReadHalf<BoxIo>>,
    id: &str,
    what: &'static str,
) -> Result<Element, ClientError> {
    for _ in 0..64 {
        let el = read_stanza(reader, what).await?;
        if el.is("iq", ns::CLIENT) && el.attr("id") == Some(id) {
            return match el.attr("type") {
                Some("result") => Ok(el),
                _ => Err(ClientError::Protocol(format!(
                    "{what}: error {}",
                    el.child("error", ns::CLIENT)
                        .map(error_condition)
                        .unwrap_or_default()
                ))),
            };
        }
    }
    Err(ClientError::Protocol(format!("{what}: no answer")))
}

async fn read_loop(
    mut reader: StreamReader<ReadHalf<BoxIo>>,
    writer: Arc<Mutex<WriteHalf<BoxIo>>>,
    pending: Pending,
    received: Arc<AtomicU32>,
) {
    while let Ok(StreamEvent::Stanza(el)) = reader.next().await {
        if el.ns == ns::SM {
            if el.name == "r" {
                let h = received.load(Ordering::Relaxed).to_string();
                let mut w = writer.lock().await;
                let _ = send(&mut w, &Element::new("a", ns::SM).with_attr("h", h)).await;
            }
            continue;
        }
        if el.ns != ns::CLIENT {
            // A stream error ends the loop with the stream.
            if el.is("error", ns::STREAM) {
                break;
            }
            continue;
        }
        received.fetch_add(1, Ordering::Relaxed);
        match (el.name.as_str(), el.attr("type")) {
            ("iq", Some("result" | "error")) => {
                let waiter = el
                    .attr("id")
                    .and_then(|id| pending.lock().ok().and_then(|mut p| p.remove(id)));
                if let Some(tx) = waiter {
                    let _ = tx.send(el);
                }
            }
            ("iq", Some("get" | "set")) => {
                let answer = default_reply(&el, ns::CLIENT);
                let mut w = writer.lock().await;
                let _ = send(&mut w, &answer).await;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// How the fake server's stream ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Ending {
        /// `</stream:stream>`.
        Closed,
        /// The TCP connection went away without it.
        Dropped,
    }

    /// A one-connection c2s server offering PLAIN only, bind and XEP-0198;
    /// answers iq gets with a result; reports how the stream ended.
    async fn fake_c2s(password: &'static str) -> (String, oneshot::Receiver<Ending>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (r, mut w) = tcp.into_split();
            let mut reader = StreamReader::new(r, 1 << 16);
            let open = |features: &str| {
                format!(
                    "{}<stream:features>{features}</stream:features>",
                    stream_open(
                        ns::CLIENT,
                        &[("from", "localhost"), ("id", "c1"), ("version", "1.0")]
                    )
                )
            };
            reader.header().await.unwrap();
            let plain = format!(
                "<mechanisms xmlns='{}'><mechanism>PLAIN</mechanism></mechanisms>",
                ns::SASL
            );
            w.write_all(open(&plain).as_bytes()).await.unwrap();
            let Ok(StreamEvent::Stanza(auth)) = reader.next().await else {
                return;
            };
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{password}"));
            if auth.text != expected {
                let failure = format!("<failure xmlns='{}'><not-authorized/></failure>", ns::SASL);
                w.write_all(failure.as_bytes()).await.unwrap();
                return;
            }
            w.write_all(format!("<success xmlns='{}'/>", ns::SASL).as_bytes())
                .await
                .unwrap();
            let mut reader = StreamReader::new(reader.into_inner(), 1 << 16);
            reader.header().await.unwrap();
            let features = format!("<bind xmlns='{}'/><sm xmlns='{}'/>", ns::BIND, ns::SM);
            w.write_all(open(&features).as_bytes()).await.unwrap();
            let ending = loop {
                let el = match reader.next().await {
                    Ok(StreamEvent::Stanza(el)) => el,
                    Ok(StreamEvent::End) => break Ending::Closed,
                    Err(_) => break Ending::Dropped,
                };
                let reply = if el.child("bind", ns::BIND).is_some() {
                    format!(
                        "<iq type='result' id='{}'><bind xmlns='{}'><jid>alice@localhost/r</jid></bind></iq>",
                        el.attr("id").unwrap_or(""),
                        ns::BIND
                    )
                } else if el.is("enable", ns::SM) {
                    format!("<enabled xmlns='{}' resume='true' id='sm1'/>", ns::SM)
                } else if el.is("iq", ns::CLIENT) && el.attr("type") == Some("get") {
                    format!("<iq type='result' id='{}'/>", el.attr("id").unwrap_or(""))
                } else {
                    continue;
                };
                let _ = w.write_all(reply.as_bytes()).await;
            };
            if ending == Ending::Closed {
                let _ = w.write_all(STREAM_CLOSE.as_bytes()).await;
            }
            let _ = tx.send(ending);
        });
        (addr, rx)
    }

    fn alice(password: &str) -> Account {
        Account {
            jid: "alice@localhost".into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn plain_login_bind_sm_iq_and_a_clean_close() {
        let (addr, ended) = fake_c2s("pw").await;
        let mut client = Client::login(
            &addr,
            &TlsOptions::default(),
            &alice("pw"),
            "r",
            true,
            false,
        )
        .await
        .unwrap();
        assert_eq!(client.full_jid, "alice@localhost/r");
        assert!(client.sm_enabled);
        let answer = client
            .iq(Element::new("iq", ns::CLIENT).with_attr("type", "get"))
            .await
            .unwrap();
        assert_eq!(answer.attr("type"), Some("result"));
        client.close().await;
        assert_eq!(ended.await.unwrap(), Ending::Closed);
    }

    #[tokio::test]
    async fn an_abrupt_drop_sends_no_stream_close() {
        let (addr, ended) = fake_c2s("pw").await;
        let client = Client::login(
            &addr,
            &TlsOptions::default(),
            &alice("pw"),
            "r",
            true,
            false,
        )
        .await
        .unwrap();
        client.drop_abruptly().await;
        assert_eq!(ended.await.unwrap(), Ending::Dropped);
    }

    #[tokio::test]
    async fn a_wrong_password_is_an_auth_failure() {
        let (addr, _ended) = fake_c2s("pw").await;
        let err = Client::login(
            &addr,
            &TlsOptions::default(),
            &alice("nope"),
            "r",
            false,
            false,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(&err, ClientError::AuthFailed { condition, .. } if condition == "not-authorized"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn starttls_required_but_not_offered() {
        let (addr, _ended) = fake_c2s("pw").await;
        let tls = TlsOptions {
            mode: TlsMode::Starttls,
            ..TlsOptions::default()
        };
        let err = Client::login(&addr, &tls, &alice("pw"), "r", false, false)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ClientError::NoStarttls), "{err}");
    }
}
