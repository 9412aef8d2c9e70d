//! A Web Push subscription as one device token, and back.
//!
//! A browser's (or a UnifiedPush distributor's) subscription is three
//! things: the endpoint URL of its push service, the user agent's P-256
//! public key (`p256dh`) and the 16-byte authentication secret (`auth`).
//! The registration store keeps one token per device, so the three travel
//! as one string: the endpoint with the keys in its fragment,
//!
//! ```text
//! https://push.example.net/wpush/v2/gAAAA…#p256dh=BNcR…&auth=tBHI…
//! ```
//!
//! A fragment is never sent in an HTTP request, so the token's endpoint
//! part is exactly what the push goes to. The keys are written unpadded
//! base64url, `p256dh` first; reading also takes padded base64url and
//! standard base64, since browsers and client libraries differ.
//!
//! Only `https` endpoints are taken, except `http` to a loopback host
//! (tests, a distributor on the same machine).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push_native::p256;

use crate::{MAX_TOKEN_LEN, check_token_chars};

/// Length of an uncompressed P-256 point (`0x04 || X || Y`).
pub const P256DH_LEN: usize = 65;
/// Length of the authentication secret.
pub const AUTH_LEN: usize = 16;

/// The two keys of a subscription, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName {
    /// The user agent's public key.
    P256dh,
    /// The authentication secret.
    Auth,
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyName::P256dh => "p256dh",
            KeyName::Auth => "auth",
        })
    }
}

/// Why a token or the parts of a subscription were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// Empty, too long, or with whitespace or control characters.
    #[error("{0}")]
    Format(String),
    /// No `#p256dh=…&auth=…` after the endpoint.
    #[error("no keys: the token must be <endpoint>#p256dh=…&auth=…")]
    NoKeys,
    /// The endpoint is not a URL.
    #[error("endpoint is not a URL: {0}")]
    Url(String),
    /// Neither `https` nor `http` to a loopback host.
    #[error("endpoint must be https (http only to a loopback host)")]
    Scheme,
    /// A URL without a host, or with a user name or password in it.
    #[error("endpoint must name a host and no user or password")]
    Host,
    /// An endpoint given on its own carried a fragment.
    #[error("endpoint must not have a fragment")]
    Fragment,
    /// A key is missing from the fragment.
    #[error("{0} key missing")]
    MissingKey(KeyName),
    /// A key appears twice.
    #[error("{0} key given twice")]
    DuplicateKey(KeyName),
    /// Something other than `p256dh=` or `auth=` in the fragment.
    #[error("unknown part {0:?} in the keys")]
    UnknownPart(String),
    /// A key is not base64.
    #[error("{0} key is not base64url")]
    Base64(KeyName),
    /// A key has the wrong length.
    #[error("{key} key has {len} bytes, {want} expected")]
    KeyLength {
        /// Which key.
        key: KeyName,
        /// Its decoded length.
        len: usize,
        /// The length it must have.
        want: usize,
    },
    /// `p256dh` is not a point on P-256.
    #[error("p256dh key is not an uncompressed P-256 point")]
    InvalidPoint,
    /// A loopback, private or link-local endpoint where the backend's
    /// configuration does not allow one.
    #[error("endpoint is a local address (allow_local_endpoints is off)")]
    Local,
    /// The canonical token would be longer than [`MAX_TOKEN_LEN`].
    #[error("subscription token would be {0} bytes, longer than {MAX_TOKEN_LEN}")]
    TooLong(usize),
}

/// A Web Push subscription: where to push and how to encrypt for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The push service's endpoint for this subscription (no fragment).
    pub endpoint: reqwest::Url,
    /// The user agent's public key, a valid P-256 point.
    pub p256dh: p256::PublicKey,
    /// The authentication secret.
    pub auth: [u8; AUTH_LEN],
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The auth secret stays out of logs.
        f.debug_struct("Subscription")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Reads a device token `<endpoint>#p256dh=<key>&auth=<key>` (the keys
    /// in either order).
    pub fn parse(token: &str) -> Result<Self, SubscriptionError> {
        check_token_chars(token).map_err(|e| SubscriptionError::Format(e.0))?;
        let (endpoint, keys) = token.split_once('#').ok_or(SubscriptionError::NoKeys)?;
        let mut p256dh = None;
        let mut auth = None;
        for part in keys.split('&') {
            let (slot, name, value) = if let Some(v) = part.strip_prefix("p256dh=") {
                (&mut p256dh, KeyName::P256dh, v)
            } else if let Some(v) = part.strip_prefix("auth=") {
                (&mut auth, KeyName::Auth, v)
            } else {
                let shown: String = part.chars().take(32).collect();
                return Err(SubscriptionError::UnknownPart(shown));
            };
            if slot.replace(value).is_some() {
                return Err(SubscriptionError::DuplicateKey(name));
            }
        }
        let p256dh = p256dh.ok_or(SubscriptionError::MissingKey(KeyName::P256dh))?;
        let auth = auth.ok_or(SubscriptionError::MissingKey(KeyName::Auth))?;
        Self::from_parts(endpoint, p256dh, auth)
    }

    /// Builds a subscription from its three parts as a registration command
    /// or a browser's `PushSubscription.toJSON()` gives them: the endpoint
    /// URL and the two keys in base64 (url-safe or standard, padded or
    /// not).
    pub fn from_parts(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, SubscriptionError> {
        let endpoint = parse_endpoint(endpoint)?;
        let point = decode_key(KeyName::P256dh, p256dh, P256DH_LEN)?;
        // from_sec1_bytes also takes compressed points; the length check
        // above keeps to the uncompressed form Web Push uses.
        if point[0] != 0x04 {
            return Err(SubscriptionError::InvalidPoint);
        }
        let p256dh = p256::PublicKey::from_sec1_bytes(&point)
            .map_err(|_| SubscriptionError::InvalidPoint)?;
        let auth_bytes = decode_key(KeyName::Auth, auth, AUTH_LEN)?;
        let mut auth = [0u8; AUTH_LEN];
        auth.copy_from_slice(&auth_bytes);
        let subscription = Subscription {
            endpoint,
            p256dh,
            auth,
        };
        let len = subscription.to_token().len();
        if len > MAX_TOKEN_LEN {
            return Err(SubscriptionError::TooLong(len));
        }
        Ok(subscription)
    }

    /// The canonical token: the endpoint, `#p256dh=`, `&auth=`, keys
    /// unpadded base64url.
    pub fn to_token(&self) -> String {
        format!(
            "{}#p256dh={}&auth={}",
            self.endpoint,
            URL_SAFE_NO_PAD.encode(self.p256dh_bytes()),
            URL_SAFE_NO_PAD.encode(self.auth)
        )
    }

    /// The public key as its 65-byte uncompressed encoding.
    pub fn p256dh_bytes(&self) -> [u8; P256DH_LEN] {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = self.p256dh.to_encoded_point(false);
        let mut out = [0u8; P256DH_LEN];
        // An uncompressed encoding is always 65 bytes.
        if point.as_bytes().len() == P256DH_LEN {
            out.copy_from_slice(point.as_bytes());
        }
        out
    }

    /// The endpoint's origin, `scheme://host[:port]` (the default port
    /// left out): the VAPID audience and the unit of per-service limits.
    pub fn origin(&self) -> String {
        self.endpoint.origin().ascii_serialization()
    }
}

/// Parses and checks an endpoint URL.
fn parse_endpoint(text: &str) -> Result<reqwest::Url, SubscriptionError> {
    let url = reqwest::Url::parse(text).map_err(|e| SubscriptionError::Url(e.to_string()))?;
    if url.fragment().is_some() {
        return Err(SubscriptionError::Fragment);
    }
    let Some(host) = url.host_str() else {
        return Err(SubscriptionError::Host);
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SubscriptionError::Host);
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(host) => {}
        _ => return Err(SubscriptionError::Scheme),
    }
    Ok(url)
}

/// `localhost`, `127.0.0.0/8` or `::1`, as the URL parser writes hosts
/// (lower case, IPv6 in brackets, IPv4 in dotted quads).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host_ip(host).is_some_and(|ip| ip.is_loopback())
}

/// The address of a host written as an IP literal.
pub(crate) fn host_ip(host: &str) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Decodes a key written in any of base64's usual forms and checks its
/// length.
fn decode_key(name: KeyName, text: &str, want: usize) -> Result<Vec<u8>, SubscriptionError> {
    let bytes = decode_base64_any(text).ok_or(SubscriptionError::Base64(name))?;
    if bytes.len() != want {
        return Err(SubscriptionError::KeyLength {
            key: name,
            len: bytes.len(),
            want,
        });
    }
    Ok(bytes)
}

/// Decodes base64url or standard base64, padded or not.
pub(crate) fn decode_base64_any(text: &str) -> Option<Vec<u8>> {
    let unpadded = text.trim_end_matches('=');
    // Standard base64 differs from base64url only in two characters.
    let url_safe: String = unpadded
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(url_safe).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    /// A P-256 public key, uncompressed (a browser's `p256dh`).
    pub(crate) const P256DH: &str =
        "BJl4N79VIYdY6HXJlSGa485lnoWerGQUN9dCbcXimqQDDwBiVYhBcUB7zLof492qZ274loXqijjxe9KqlHkXNqs";
    pub(crate) const AUTH: &str = "hUo9H3i9y795CHHV5VQLrA";

    const CHROME: &str = "https://fcm.googleapis.com/fcm/send/dGx0ZXN0OjE2:APA91bHPdHWfJb6OoRk7bQ1GRe7z3zN0pVxM0dLTq8mK4b3sA1VGfVQ2f4vLHcqYhJ9CH8uLzK5QnX2kNZjyHGGgVe9nLq3D0yHk2J6T0dU3z_n7wQ8XgYkAe";
    const MOZILLA: &str = "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABnQ2x9u1mK8dNbQ4uVbZ3yqTGfjK9wZq5rAxLzP3n2Qe0BvWcR7s_d9YhL4kTmN6oXpJf2gH8iUeV1aC5sD3bF0";
    const NTFY: &str = "https://ntfy.sh/upAbCdEfGhIjKl?up=1";

    fn token(endpoint: &str) -> String {
        format!("{endpoint}#p256dh={P256DH}&auth={AUTH}")
    }

    #[test]
    fn browser_subscriptions_round_trip() {
        for endpoint in [CHROME, MOZILLA, NTFY] {
            let t = token(endpoint);
            let s = Subscription::parse(&t).unwrap();
            assert_eq!(s.endpoint.as_str(), endpoint);
            assert_eq!(s.endpoint.fragment(), None, "the keys stay out of the URL");
            assert_eq!(URL_SAFE_NO_PAD.encode(s.p256dh_bytes()), P256DH);
            assert_eq!(URL_SAFE_NO_PAD.encode(s.auth), AUTH);
            assert_eq!(s.to_token(), t);
            assert_eq!(Subscription::parse(&s.to_token()).unwrap(), s);
        }
        let s = Subscription::parse(&token(MOZILLA)).unwrap();
        assert_eq!(s.origin(), "https://updates.push.services.mozilla.com");
        let s = Subscription::parse(&token("https://push.example:8443/a")).unwrap();
        assert_eq!(s.origin(), "https://push.example:8443");
    }

    #[test]
    fn keys_in_any_base64_form_and_order() {
        let p = URL_SAFE_NO_PAD.decode(P256DH).unwrap();
        let a = URL_SAFE_NO_PAD.decode(AUTH).unwrap();
        let canonical = Subscription::parse(&token(MOZILLA)).unwrap();
        for (pk, auth) in [
            (URL_SAFE.encode(&p), URL_SAFE.encode(&a)),
            (STANDARD.encode(&p), STANDARD.encode(&a)),
            (
                STANDARD.encode(&p).trim_end_matches('=').to_owned(),
                AUTH.to_owned(),
            ),
        ] {
            let t = format!("{MOZILLA}#p256dh={pk}&auth={auth}");
            assert_eq!(Subscription::parse(&t).unwrap(), canonical, "{t}");
            assert_eq!(
                Subscription::from_parts(MOZILLA, &pk, &auth).unwrap(),
                canonical
            );
        }
        let reversed = format!("{MOZILLA}#auth={AUTH}&p256dh={P256DH}");
        let s = Subscription::parse(&reversed).unwrap();
        assert_eq!(s, canonical);
        assert_eq!(s.to_token(), token(MOZILLA), "written p256dh first");
    }

    #[test]
    fn loopback_may_be_plain_http() {
        for endpoint in [
            "http://127.0.0.1:8080/push/1",
            "http://127.8.9.10/push",
            "http://[::1]:9000/p",
            "http://localhost:1234/x",
            "http://LOCALHOST/x",
        ] {
            assert!(Subscription::parse(&token(endpoint)).is_ok(), "{endpoint}");
        }
        for endpoint in [
            "http://push.example/x",
            "http://10.0.0.1/x",
            "http://[::2]/x",
            "http://localhost.example/x",
            "ftp://127.0.0.1/x",
            "ws://127.0.0.1/x",
        ] {
            assert_eq!(
                Subscription::parse(&token(endpoint)),
                Err(SubscriptionError::Scheme),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn bad_tokens_are_refused() {
        use SubscriptionError as E;
        let short_auth = URL_SAFE_NO_PAD.encode([7u8; 12]);
        let long_key = URL_SAFE_NO_PAD.encode([4u8; 66]);
        // 0x04 followed by coordinates that are not on the curve.
        let off_curve = URL_SAFE_NO_PAD.encode([4u8; 65]);
        // A compressed point of the right total length does not exist, but
        // a 65-byte string starting 0x02 must be refused as well.
        let mut compressed = URL_SAFE_NO_PAD.decode(P256DH).unwrap();
        compressed[0] = 0x02;
        let compressed = URL_SAFE_NO_PAD.encode(compressed);
        let cases: Vec<(String, SubscriptionError)> = vec![
            (MOZILLA.into(), E::NoKeys),
            (
                format!("{MOZILLA}#auth={AUTH}"),
                E::MissingKey(KeyName::P256dh),
            ),
            (
                format!("{MOZILLA}#p256dh={P256DH}"),
                E::MissingKey(KeyName::Auth),
            ),
            (
                format!("{MOZILLA}#p256dh={P256DH}&auth={AUTH}&auth={AUTH}"),
                E::DuplicateKey(KeyName::Auth),
            ),
            (
                format!("{MOZILLA}#p256dh={P256DH}&auth={AUTH}&x=1"),
                E::UnknownPart("x=1".into()),
            ),
            (
                format!("{MOZILLA}#p256dh={P256DH}&auth=!!!"),
                E::Base64(KeyName::Auth),
            ),
            (
                format!("{MOZILLA}#p256dh={P256DH}&auth={short_auth}"),
                E::KeyLength {
                    key: KeyName::Auth,
                    len: 12,
                    want: 16,
                },
            ),
            (
                format!("{MOZILLA}#p256dh={long_key}&auth={AUTH}"),
                E::KeyLength {
                    key: KeyName::P256dh,
                    len: 66,
                    want: 65,
                },
            ),
            (
                format!("{MOZILLA}#p256dh={off_curve}&auth={AUTH}"),
                E::InvalidPoint,
            ),
            (
                format!("{MOZILLA}#p256dh={compressed}&auth={AUTH}"),
                E::InvalidPoint,
            ),
            (token("https://user:pw@push.example/x"), E::Host),
            (token("http://"), E::Url("empty host".into())),
        ];
        for (t, want) in cases {
            assert_eq!(Subscription::parse(&t), Err(want), "{t}");
        }
        assert!(matches!(
            Subscription::parse(&token("not a url")),
            Err(E::Format(_))
        ));
        assert!(matches!(
            Subscription::parse(&token("mailto:a@b")),
            Err(E::Host)
        ));
        assert!(matches!(Subscription::parse(""), Err(E::Format(_))));
        let huge = token(&format!("https://push.example/{}", "a".repeat(4000)));
        assert!(matches!(Subscription::parse(&huge), Err(E::Format(_))));
        assert_eq!(
            Subscription::from_parts(&format!("{MOZILLA}#x"), P256DH, AUTH),
            Err(E::Fragment)
        );
        // An endpoint that fits alone but not with its keys.
        let long = format!("https://push.example/{}", "a".repeat(4000));
        assert!(matches!(
            Subscription::from_parts(&long, P256DH, AUTH),
            Err(E::TooLong(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = Subscription::parse(&token(MOZILLA)).unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains(AUTH) && shown.contains("mozilla"),
            "{shown}"
        );
    }
}
