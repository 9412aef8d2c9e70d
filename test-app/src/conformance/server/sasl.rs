//! SASL for the kit's client: SCRAM-SHA-1 (RFC 5802) when the server offers
//! it, PLAIN (RFC 4616) otherwise.
//!
//! Kept apart from the stream code so that the encodings can be checked
//! against the RFC's published test vector without a server.

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};

/// A mechanism the kit speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 5802, without channel binding.
    ScramSha1,
    /// RFC 4616.
    Plain,
}

impl Mechanism {
    /// The best of what the server offers: SCRAM-SHA-1, then PLAIN.
    pub fn choose(offered: &[String]) -> Option<Mechanism> {
        if offered.iter().any(|m| m == "SCRAM-SHA-1") {
            Some(Mechanism::ScramSha1)
        } else if offered.iter().any(|m| m == "PLAIN") {
            Some(Mechanism::Plain)
        } else {
            None
        }
    }
}

/// PLAIN's message: no authorization identity, `\0user\0password`.
pub fn plain_initial(user: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(user.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The server's message does not parse.
    #[error("malformed server message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("the server nonce does not start with the client nonce")]
    Nonce,
    /// The server's signature is wrong: it does not know the password.
    #[error("the server signature does not verify")]
    ServerSignature,
}

/// One SCRAM-SHA-1 exchange.
pub struct Scram {
    password: String,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

/// `=` and `,` escaped in a SCRAM username (RFC 5802 §5.1).
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn attribute(message: &str, key: char) -> Option<&str> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(key).and_then(|p| p.strip_prefix('=')))
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

impl Scram {
    /// An exchange with a fresh random nonce.
    pub fn new(user: &str, password: &str) -> Scram {
        let nonce: [u8; 18] = rand::random();
        Scram::with_nonce(
            user,
            password,
            &base64::engine::general_purpose::STANDARD.encode(nonce),
        )
    }

    /// An exchange with a given nonce (tests).
    pub fn with_nonce(user: &str, password: &str, nonce: &str) -> Scram {
        Scram {
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!("n={},r={nonce}", saslname(user)),
            server_signature: None,
        }
    }

    /// The client-first message: `n,,n=user,r=nonce`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message, from the server-first one.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let nonce = attribute(server_first, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = attribute(server_first, 's')
            .and_then(|s| b64.decode(s).ok())
            .ok_or(ScramError::Malformed("no salt"))?;
        let iterations = attribute(server_first, 'i')
            .and_then(|i| i.parse::<u32>().ok())
            .and_then(std::num::NonZeroU32::new)
            .ok_or(ScramError::Malformed("no iteration count"))?;
        if iterations.get() > 1_000_000 {
            return Err(ScramError::Malformed("iteration count above 1000000"));
        }
        let mut salted = [0u8; 20];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA1,
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha1(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac_sha1(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_sha1(&salted, b"Server Key");
        self.server_signature = Some(hmac_sha1(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", b64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message's `v=` signature.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = attribute(text, 'v')
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        match &self.server_signature {
            Some(expected) if *expected == v => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_nul_user_nul_password() {
        assert_eq!(plain_initial("alice", "pw"), b"\0alice\0pw");
    }

    #[test]
    fn scram_prefers_scram_then_plain() {
        let offered = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Mechanism::choose(&offered(&["PLAIN", "SCRAM-SHA-1"])),
            Some(Mechanism::ScramSha1)
        );
        assert_eq!(
            Mechanism::choose(&offered(&["PLAIN"])),
            Some(Mechanism::Plain)
        );
        assert_eq!(Mechanism::choose(&offered(&["X-OAUTH2"])), None);
    }

    /// RFC 5802 §5's example exchange.
    #[test]
    fn scram_sha1_matches_the_rfc_example() {
        let mut scram = Scram::with_nonce("user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(
            scram.client_first(),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL".to_vec()
        );
        let server_first =
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let client_final = scram.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(
            scram
                .verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
                .is_ok()
        );
        assert!(matches!(
            scram.verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::ServerSignature)
        ));
    }

    #[test]
    fn scram_refuses_a_nonce_that_does_not_extend_ours() {
        let mut scram = Scram::with_nonce("user", "pencil", "abc");
        assert!(matches!(
            scram.client_final(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(ScramError::Nonce)
        ));
    }
}
