//! A TCP relay between a backend and a mock, on 127.0.0.1, that can cut
//! every connection at once: a network failure the backend must survive.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
    relays: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// Relays to the host and port of `upstream_url` (`https://IP:PORT`).
    pub async fn start(upstream_url: &str) -> Proxy {
        let upstream = upstream_url
            .rsplit("//")
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relays: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let relays = relays.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    relays.lock().unwrap().push(relay.abort_handle());
                }
            })
        };
        Proxy {
            port,
            accept,
            relays,
        }
    }

    /// The proxy's URL; the mock's certificate is valid for 127.0.0.1.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Drops every relayed connection (both sockets close).
    pub fn cut(&self) {
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
