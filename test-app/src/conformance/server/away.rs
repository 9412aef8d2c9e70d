//! The App Server away: its component connection closed while a message
//! arrives, then back. Servers bounce the publish; what the bounce does to
//! the registration decides whether a restart of the App Server costs its
//! users their push (docs/answers.md).

use std::time::Duration;

use super::{Ctx, PUBLISH_WAIT, QUIET, Row, ServerError, judge};

/// away, away-resent.
pub(super) async fn run(ctx: &mut Ctx) -> Result<Vec<Row>, ServerError> {
    let reg = ctx.fresh_registration().await?;
    ctx.component.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.send_message(true).await?;
    // Time for the server to try, bounce and react.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctx.reconnect().await?;
    let resent = ctx.component.next_publish(&reg.node, QUIET).await.is_some();
    let kept = ctx.probe(&reg.node, PUBLISH_WAIT).await?.is_some();
    Ok(vec![
        judge(
            "away",
            true,
            if kept {
                "after the App Server came back, the next message was published"
            } else {
                "after the App Server came back, the next message was not published: the registration is gone"
            },
            if kept { "kept" } else { "disabled" },
        )
        .with_note(if kept {
            "The bounce while away did not disable the registration."
        } else {
            "A publish bounced while the App Server is away disables the registration: keep the App Server connected (several connections, or a handover), or users lose push until their client enables again."
        }),
        judge(
            "away-resent",
            true,
            if resent {
                "the publish missed while away arrived on reconnect"
            } else {
                "the publish missed while away was not re-sent"
            },
            resent,
        )
        .with_note(if resent {
            ""
        } else {
            "A message that arrives while the App Server is away is never pushed."
        }),
    ])
}
