//! Counters about how clients used the mocks: connections, distinct
//! credentials, and rejections by kind. The push record answers "what
//! arrived"; these answer "how": whether a backend reuses its HTTP/2
//! connection, caches its JWT and its OAuth token, and why requests that
//! name no device were refused.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of the counters since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// TLS handshakes completed on the APNs endpoint.
    pub apns_tls_connections: u64,
    /// Of those, how many presented a client certificate.
    pub apns_client_cert_connections: u64,
    /// HTTP/2 requests received by the APNs endpoint.
    pub apns_requests: u64,
    /// Distinct provider tokens (JWT strings) that verified.
    pub apns_jwts_seen: u64,
    /// TLS handshakes completed on the FCM endpoint.
    pub fcm_tls_connections: u64,
    /// Requests received by the FCM endpoint (token endpoint excluded).
    pub fcm_requests: u64,
    /// Access tokens the OAuth endpoint issued.
    pub oauth_tokens_issued: u64,
    /// TLS handshakes completed on the Web Push endpoint.
    pub webpush_tls_connections: u64,
    /// Requests received by the Web Push endpoint.
    pub webpush_requests: u64,
    /// Pushes answered with 2xx, every provider.
    pub accepted: u64,
    /// Rejections by kind: `apns/<reason>`, `fcm/<errorCode or status>`,
    /// `webpush/<reason>`, `oauth/<error>`, plus connection-level ones:
    /// `apns/tls_handshake`, `apns/not_http2`, `fcm/tls_handshake`,
    /// `webpush/tls_handshake`.
    pub rejected: BTreeMap<String, u64>,
}

impl Stats {
    /// Rejections of one kind (0 when none).
    pub fn rejected(&self, kind: &str) -> u64 {
        self.rejected.get(kind).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub apns_tls_connections: AtomicU64,
    pub apns_client_cert_connections: AtomicU64,
    pub apns_requests: AtomicU64,
    pub fcm_tls_connections: AtomicU64,
    pub fcm_requests: AtomicU64,
    pub oauth_tokens_issued: AtomicU64,
    pub webpush_tls_connections: AtomicU64,
    pub webpush_requests: AtomicU64,
    pub accepted: AtomicU64,
    jwts: Mutex<HashSet<String>>,
    rejected: Mutex<BTreeMap<String, u64>>,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn reject(&self, kind: impl Into<String>) {
        let mut map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(kind.into()).or_insert(0) += 1;
    }

    /// Notes a verified JWT; true when it had not been seen before.
    pub fn jwt_seen(&self, jwt: &str) -> bool {
        let mut set = self.jwts.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(jwt) {
            false
        } else {
            set.insert(jwt.to_owned());
            true
        }
    }

    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            apns_tls_connections: get(&self.apns_tls_connections),
            apns_client_cert_connections: get(&self.apns_client_cert_connections),
            apns_requests: get(&self.apns_requests),
            apns_jwts_seen: self.jwts.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            fcm_tls_connections: get(&self.fcm_tls_connections),
            fcm_requests: get(&self.fcm_requests),
            oauth_tokens_issued: get(&self.oauth_tokens_issued),
            webpush_tls_connections: get(&self.webpush_tls_connections),
            webpush_requests: get(&self.webpush_requests),
            accepted: get(&self.accepted),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.apns_tls_connections,
            &self.apns_client_cert_connections,
            &self.apns_requests,
            &self.fcm_tls_connections,
            &self.fcm_requests,
            &self.oauth_tokens_issued,
            &self.webpush_tls_connections,
            &self.webpush_requests,
            &self.accepted,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.jwts.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
