//! A phone's usual state: its XEP-0198 session hibernated (the TCP
//! connection gone without `</stream:stream>`), push enabled in that very
//! session. A message to it should be pushed, or the phone never wakes up.

use std::time::{Duration, Instant};

use super::{Ctx, PUBLISH_WAIT, Row, ServerError, judge};

/// publish-hibernated.
pub(super) async fn run(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    // The login's presence drains the offline backlog before the disable
    // is answered; the drop acknowledges it, so the hibernating session
    // leaves nothing unacknowledged behind.
    let mut owner = ctx.owner_login(true).await?;
    ctx.disable(&mut owner, None).await?;
    let (reg, outcome) = ctx.enable(&mut owner).await?;
    if outcome != "result" {
        owner.close().await;
        return Err(ServerError::Step(format!("<enable/> answered {outcome}")));
    }
    owner.drop_abruptly().await;
    // Publishes the hibernation itself causes (unacknowledged stanzas) are
    // not what this row is about.
    let early = ctx
        .component
        .publishes_until_quiet(&reg.node, Duration::from_secs(1), Duration::from_secs(5))
        .await;
    let sent = Instant::now();
    ctx.send_message(true).await?;
    let row = match ctx.component.next_publish(&reg.node, PUBLISH_WAIT).await {
        Some(p) => {
            let ms = p.at.duration_since(sent).as_millis();
            judge(
                "publish-hibernated",
                true,
                format!("published {ms} ms after the message"),
                true,
            )
            .with_note(format!(
                "delay {ms} ms; {} publish(es) when the session hibernated",
                early.len()
            ))
        }
        None => judge(
            "publish-hibernated",
            false,
            format!(
                "no publish within {} s for a message to the hibernated session",
                PUBLISH_WAIT.as_secs()
            ),
            false,
        ),
    };
    Ok(vec![row])
}
