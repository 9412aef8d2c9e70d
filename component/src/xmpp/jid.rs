//! Just enough JID handling for an App Server: split a JID into its parts
//! and compare bare JIDs and domains. Full RFC 7622 preparation (PRECIS) is
//! not needed: JIDs arrive from the user's server, which has already
//! prepared them; we only lower-case the case-insensitive parts.

use std::fmt;

/// A parsed JID: `[local@]domain[/resource]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    local: Option<String>,
    domain: String,
    resource: Option<String>,
}

/// Why a string is not a JID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JID {0:?}")]
pub struct InvalidJid(pub String);

impl Jid {
    /// Parses a JID; the local part and domain are lower-cased.
    pub fn parse(s: &str) -> Result<Jid, InvalidJid> {
        let invalid = || InvalidJid(s.to_owned());
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) if !r.is_empty() => (b, Some(r.to_owned())),
            Some(_) => return Err(invalid()),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) if !l.is_empty() => (Some(l.to_lowercase()), d),
            Some(_) => return Err(invalid()),
            None => (None, bare),
        };
        let domain = domain.trim_end_matches('.').to_lowercase();
        if domain.is_empty()
            || domain.len() > 1023
            || domain
                .chars()
                .any(|c| c.is_whitespace() || c == '@' || c == '/')
        {
            return Err(invalid());
        }
        Ok(Jid {
            local,
            domain,
            resource,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The bare JID (`local@domain` or `domain`) as a string.
    pub fn bare(&self) -> String {
        match &self.local {
            Some(l) => format!("{l}@{}", self.domain),
            None => self.domain.clone(),
        }
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.local {
            write!(f, "{l}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let j = Jid::parse("Alice@Example.org/phone/x").unwrap();
        assert_eq!(j.local(), Some("alice"));
        assert_eq!(j.domain(), "example.org");
        assert_eq!(j.resource(), Some("phone/x"));
        assert_eq!(j.bare(), "alice@example.org");
        assert_eq!(Jid::parse("localhost").unwrap().bare(), "localhost");
        assert!(Jid::parse("@x").is_err());
        assert!(Jid::parse("a@").is_err());
        assert!(Jid::parse("a@b/").is_err());
        assert!(Jid::parse("").is_err());
    }
}
