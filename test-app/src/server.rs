//! Accept loops: TLS handshakes, protocol checks and hyper connections for
//! the provider endpoints (APNs, FCM, Web Push).
//!
//! The APNs endpoint only speaks HTTP/2, as Apple's does. Its TLS config
//! offers only ALPN `h2`, so a client that offers only `http/1.1` fails the
//! handshake (`no_application_protocol`); a client that offers no ALPN at all
//! gets through TLS, so the first bytes are read and must be the HTTP/2
//! connection preface. Anything else is counted as `apns/not_http2`,
//! answered with a plain HTTP/1.1 `505 HTTP Version Not Supported` (so a
//! human with curl sees why) and closed.
//!
//! Each accept loop owns its connections in a `JoinSet`, so aborting the
//! loop's task (shutdown) ends every connection with it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::Shared;
use crate::apns::ConnInfo;
use crate::stats::inc;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream with some already-read bytes put back in front.
struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts connections until the task is aborted, handing each to `serve`.
async fn accept_loop<F, Fut>(listener: TcpListener, name: &'static str, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // Small requests, latency matters more than batching.
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve(tcp));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(endpoint = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

pub(crate) async fn run_apns(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    accept_loop(listener, "apns", move |tcp| {
        serve_apns(tcp, acceptor.clone(), shared.clone())
    })
    .await
}

async fn serve_apns(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "APNs TLS handshake failed");
            shared.stats.reject("apns/tls_handshake");
            return;
        }
        Err(_) => {
            shared.stats.reject("apns/tls_handshake");
            return;
        }
    };
    inc(&shared.stats.apns_tls_connections);
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    if client_cert {
        inc(&shared.stats.apns_client_cert_connections);
    }

    // Read the HTTP/2 preface ourselves (see the module docs).
    let mut first = vec![0u8; H2_PREFACE.len()];
    let mut got = 0;
    while got < first.len() {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.read(&mut first[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got += n;
                // An HTTP/1 request line is recognisable before 24 bytes.
                if !H2_PREFACE.starts_with(&first[..got]) {
                    break;
                }
            }
        }
    }
    first.truncate(got);
    if first != H2_PREFACE {
        if got > 0 {
            shared.stats.reject("apns/not_http2");
            let body = "{\"reason\":\"APNs requires HTTP/2\"}";
            let answer = format!(
                "HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
        return;
    }

    let conn = Arc::new(ConnInfo { client_cert });
    let io = TokioIo::new(Rewind {
        prefix: first,
        pos: 0,
        inner: tls,
    });
    let service = service_fn(move |req| crate::apns::handle(shared.clone(), conn.clone(), req));
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        // Apple's figure, so that a backend's stream pooling is exercised
        // the way the real service does.
        .max_concurrent_streams(1000)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "APNs connection ended with an error");
    }
}

/// Plain HTTP (1.1 or h2c) on `listener`, each request handled by
/// `handle`; used for the control port.
pub(crate) async fn run_plain<H, Fut, B>(listener: TcpListener, name: &'static str, handle: H)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_loop(listener, name, move |tcp| {
        let handle = handle.clone();
        async move {
            let result = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service_fn(handle))
                .await;
            if let Err(e) = result {
                tracing::debug!(endpoint = name, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

pub(crate) async fn run_fcm(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    accept_loop(listener, "fcm", move |tcp| {
        serve_fcm(tcp, acceptor.clone(), shared.clone())
    })
    .await
}

async fn serve_fcm(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            shared.stats.reject("fcm/tls_handshake");
            return;
        }
    };
    inc(&shared.stats.fcm_tls_connections);
    let service = service_fn(move |req| crate::fcm::handle(shared.clone(), req));
    let result = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "FCM connection ended with an error");
    }
}

pub(crate) async fn run_webpush(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    accept_loop(listener, "webpush", move |tcp| {
        serve_webpush(tcp, acceptor.clone(), shared.clone())
    })
    .await
}

/// One Web Push connection: HTTP/2 or HTTP/1.1, whichever ALPN chose.
async fn serve_webpush(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            shared.stats.reject("webpush/tls_handshake");
            return;
        }
    };
    inc(&shared.stats.webpush_tls_connections);
    let service = service_fn(move |req| crate::webpush::handle(shared.clone(), req));
    let result = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "Web Push connection ended with an error");
    }
}
