//! XEP-0050 ad-hoc commands: reading a `<command/>` request and building
//! the responses. Registration is a single-stage command (the client submits
//! the whole form at once, as Conversations does); a client that executes
//! the command without a form, as generic clients do, first gets the empty
//! form to fill in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::xmpp::Element;
use crate::xmpp::dataform::DataForm;
use crate::xmpp::ns;

/// The action a requester asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Execute,
    Complete,
    Next,
    Prev,
    Cancel,
}

/// A command request.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub node: String,
    pub action: Action,
    pub session_id: Option<String>,
    /// The first data form in the command, if any.
    pub form: Option<DataForm>,
}

impl CommandRequest {
    /// Reads a `<command xmlns='http://jabber.org/protocol/commands'/>`.
    pub fn from_element(el: &Element) -> Result<CommandRequest, &'static str> {
        let node = el
            .get_attr("node")
            .filter(|n| !n.is_empty())
            .ok_or("command without node")?
            .to_owned();
        let action = match el.get_attr("action") {
            None | Some("execute") => Action::Execute,
            Some("complete") => Action::Complete,
            Some("next") => Action::Next,
            Some("prev") => Action::Prev,
            Some("cancel") => Action::Cancel,
            Some(_) => return Err("unknown command action"),
        };
        Ok(CommandRequest {
            node,
            action,
            session_id: el.get_attr("sessionid").map(str::to_owned),
            form: el.children.iter().find_map(DataForm::from_element),
        })
    }

    fn session(&self) -> String {
        self.session_id.clone().unwrap_or_else(|| {
            let mut b = [0u8; 9];
            rand::rng().fill_bytes(&mut b);
            URL_SAFE_NO_PAD.encode(b)
        })
    }

    /// The final answer, optionally carrying a result form.
    pub fn completed(&self, form: Option<DataForm>) -> Element {
        let mut el = self.response("completed");
        if let Some(f) = form {
            el.children.push(f.to_element());
        }
        el
    }

    /// A form for the requester to fill in and submit.
    pub fn executing(&self, form: DataForm) -> Element {
        self.response("executing")
            .child(
                Element::new("actions", ns::COMMANDS)
                    .attr("execute", "complete")
                    .child(Element::new("complete", ns::COMMANDS)),
            )
            .child(form.to_element())
    }

    pub fn canceled(&self) -> Element {
        self.response("canceled")
    }

    fn response(&self, status: &str) -> Element {
        Element::new("command", ns::COMMANDS)
            .attr("node", self.node.clone())
            .attr("sessionid", self.session())
            .attr("status", status)
    }
}
