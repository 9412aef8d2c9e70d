//! The registration's life cycle as the spec defines it: the component's
//! handshake (XEP-0114), `<enable/>` (XEP-0357 §5) and `<disable/>`
//! (XEP-0357 §6).

use std::time::Duration;

use serde_json::json;

use super::component::{Component, ComponentError, Event};
use super::{Ctx, QUIET, Row, ServerError, judge};

/// component-wrong-secret: a second connection with a wrong secret must be
/// refused with a stream error.
pub(super) async fn wrong_secret(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let wrong = format!("{}-wrong", ctx.opts.secret);
    let attempt = Component::connect(&ctx.opts.component, &ctx.opts.domain, &wrong).await;
    Ok(vec![wrong_secret_row(attempt).await])
}

/// The row for a handshake attempt with a wrong secret.
async fn wrong_secret_row(attempt: Result<Component, ComponentError>) -> Row {
    match attempt {
        Err(ComponentError::Refused(condition)) => judge(
            "component-wrong-secret",
            true,
            format!("refused: stream error {condition}"),
            condition,
        ),
        Err(ComponentError::Closed) => judge(
            "component-wrong-secret",
            false,
            "the connection was closed without a stream error",
            "closed",
        ),
        Err(e) => judge(
            "component-wrong-secret",
            false,
            format!("no stream error: {e}"),
            "error",
        ),
        Ok(mut c) => {
            c.close().await;
            judge(
                "component-wrong-secret",
                false,
                "the handshake with a wrong secret was accepted",
                "accepted",
            )
        }
    }
}

/// enable, enable-silent.
pub(super) async fn enable(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let mut owner = ctx.owner_login(false).await?;
    ctx.disable(&mut owner, None).await?;
    // Whatever the clean-up caused has arrived before the watch starts.
    let _ = ctx.component.events_for(Duration::from_millis(300)).await;
    let (_reg, outcome) = ctx.enable(&mut owner).await?;
    let seen = ctx.component.events_for(Duration::from_secs(1)).await;
    owner.close().await;
    let names: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Publish(_) => Some("publish".to_owned()),
            Event::Other(el) => Some(el.name.clone()),
            _ => None,
        })
        .collect();
    Ok(vec![
        judge(
            "enable",
            outcome == "result",
            format!("<enable/> answered {outcome}"),
            outcome,
        ),
        judge(
            "enable-silent",
            true,
            if names.is_empty() {
                "nothing reached the App Server".to_owned()
            } else {
                format!("the App Server got: {}", names.join(", "))
            },
            json!(names.len()),
        ),
    ])
}

/// disable: `<disable jid node/>` answered result, and no publish after.
pub(super) async fn disable(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let reg = ctx.fresh_registration().await?;
    // The registration works before it is disabled.
    let before = ctx.probe(&reg.node, super::PUBLISH_WAIT).await?;
    let mut owner = ctx.owner_login(false).await?;
    let outcome = ctx.disable(&mut owner, Some(&reg.node)).await?;
    owner.close().await;
    let after = ctx.probe(&reg.node, QUIET).await?;
    let row = match (before.is_some(), outcome.as_str(), after.is_some()) {
        (false, _, _) => {
            return Err(ServerError::Step(
                "no publish for the registration before <disable/>".into(),
            ));
        }
        (true, "result", false) => judge(
            "disable",
            true,
            "<disable/> answered result; the next message was not published",
            outcome,
        ),
        (true, "result", true) => judge(
            "disable",
            false,
            "<disable/> answered result, but the next message was still published",
            outcome,
        ),
        (true, _, published) => judge(
            "disable",
            false,
            format!(
                "<disable/> answered {outcome}; the next message was {}published",
                if published { "" } else { "not " }
            ),
            outcome,
        ),
    };
    Ok(vec![row])
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::conformance::Verdict;
    use crate::conformance::xml::{
        Element, StreamEvent, StreamReader, handshake_digest, ns, stream_open,
    };

    /// A one-connection XEP-0114 server that checks the digest against
    /// `secret`, or accepts any when `lax`.
    async fn fake_server(secret: &'static str, lax: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (r, mut w) = tcp.into_split();
            let mut reader = StreamReader::new(r, 1 << 16);
            reader.header().await.unwrap();
            let open = stream_open(ns::COMPONENT, &[("from", "push.localhost"), ("id", "s1")]);
            w.write_all(open.as_bytes()).await.unwrap();
            let Ok(StreamEvent::Stanza(handshake)) = reader.next().await else {
                return;
            };
            let reply = if lax || handshake.text == handshake_digest("s1", secret) {
                "<handshake/>".to_owned()
            } else {
                Element::new("error", ns::STREAM)
                    .with_child(Element::new("not-authorized", ns::STREAM_ERRORS))
                    .to_xml(ns::COMPONENT)
            };
            w.write_all(reply.as_bytes()).await.unwrap();
            // Hold the connection until the client closes it.
            let _ = reader.next().await;
        });
        addr
    }

    #[tokio::test]
    async fn a_refused_wrong_secret_passes() {
        let addr = fake_server("right", false).await;
        let attempt = Component::connect(&addr, "push.localhost", "wrong").await;
        let row = wrong_secret_row(attempt).await;
        assert_eq!(row.id, "component-wrong-secret");
        assert_eq!(row.verdict, Verdict::Pass);
        assert_eq!(row.value, "not-authorized");
    }

    #[tokio::test]
    async fn an_accepted_wrong_secret_fails_its_row() {
        let addr = fake_server("right", true).await;
        let attempt = Component::connect(&addr, "push.localhost", "wrong").await;
        let row = wrong_secret_row(attempt).await;
        assert_eq!(row.id, "component-wrong-secret");
        assert_eq!(row.verdict, Verdict::Fail);
        assert_eq!(row.value, "accepted");
    }

    #[tokio::test]
    async fn the_right_secret_connects() {
        let addr = fake_server("right", false).await;
        let mut c = Component::connect(&addr, "push.localhost", "right")
            .await
            .unwrap();
        assert!(c.is_open());
        c.close().await;
    }
}
