//! XMPP as an external component speaks it: the XEP-0114 stream, the
//! streaming stanza reader, JIDs, stanza errors, data forms and disco.
//! Nothing here knows about push.

pub mod dataform;
pub mod disco;
pub mod element;
pub mod jid;
pub mod limits;
pub mod reader;
pub mod stanza;
pub mod stream;

pub use element::Element;

/// Namespaces used across the crate.
pub mod ns {
    pub const COMPONENT: &str = "jabber:component:accept";
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
    pub const DATA_FORMS: &str = "jabber:x:data";
    pub const PING: &str = "urn:xmpp:ping";
    pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    pub const PUSH: &str = "urn:xmpp:push:0";
    pub const PUSH_SUMMARY: &str = "urn:xmpp:push:summary";
    /// Tigase's encrypted notification payload (`tests/fixtures/tigase-*.xml`).
    pub const PUSH_ENCRYPT: &str = "tigase:push:encrypt:0";
    /// Tigase's encryption algorithm feature.
    pub const PUSH_ENCRYPT_AES_128_GCM: &str = "tigase:push:encrypt:aes-128-gcm";
    /// Tigase's call signal in a notification.
    pub const PUSH_JINGLE: &str = "tigase:push:jingle:0";
    pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
}
