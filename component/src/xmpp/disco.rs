//! XEP-0030 service discovery replies. Clients (Siskin, Conversations) and
//! operators find the App Server through them: identity `pubsub/push` and
//! feature `urn:xmpp:push:0` say what it is, the commands node lists the
//! registration commands.

use super::element::Element;
use super::ns;

/// One `<identity/>`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub category: &'static str,
    pub kind: &'static str,
    pub name: String,
}

/// A disco#info answer.
#[derive(Debug, Clone, Default)]
pub struct DiscoInfo {
    pub node: Option<String>,
    pub identities: Vec<Identity>,
    pub features: Vec<&'static str>,
}

impl DiscoInfo {
    pub fn to_element(&self) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        if let Some(n) = &self.node {
            q.attrs.push(("node".into(), n.clone()));
        }
        for i in &self.identities {
            q.children.push(
                Element::new("identity", ns::DISCO_INFO)
                    .attr("category", i.category)
                    .attr("type", i.kind)
                    .attr("name", i.name.clone()),
            );
        }
        for f in &self.features {
            q.children
                .push(Element::new("feature", ns::DISCO_INFO).attr("var", *f));
        }
        q
    }
}

/// One `<item/>` of a disco#items answer.
#[derive(Debug, Clone)]
pub struct DiscoItem {
    pub jid: String,
    pub node: Option<String>,
    pub name: Option<String>,
}

/// A disco#items answer.
pub fn items_element(node: Option<&str>, items: &[DiscoItem]) -> Element {
    let mut q = Element::new("query", ns::DISCO_ITEMS);
    if let Some(n) = node {
        q.attrs.push(("node".into(), n.into()));
    }
    for i in items {
        let mut item = Element::new("item", ns::DISCO_ITEMS).attr("jid", i.jid.clone());
        if let Some(n) = &i.node {
            item.attrs.push(("node".into(), n.clone()));
        }
        if let Some(n) = &i.name {
            item.attrs.push(("name".into(), n.clone()));
        }
        q.children.push(item);
    }
    q
}
