//! The answer table (docs/answers.md): what the App Server answers to each
//! kind of publish, since that answer is what decides, on the user's
//! server, whether push stays on. ejabberd 23.01 deletes a registration on
//! any error but `wait`; Prosody 0.12 counts them. So `item-not-found` only
//! for a node that is gone, `forbidden` only for a bad secret,
//! `bad-request` only for a malformed publish, and `wait` (or `result`
//! once queued) for anything transient.

use std::time::Duration;

use super::Dialect;
use super::dialects::{Registered, register};
use super::row;
use super::session::{Answer, Condition, ErrorType, Outcome, Session};
use super::stanzas::{Capture, Registration, malformed_publish, publish, publish_to};
use super::test_app::{Control, KitFault};
use crate::conformance::Row;

/// How long a provider outage the kit sets lasts at most (it is cleared
/// as soon as the answer is in).
const OUTAGE: Duration = Duration::from_secs(120);

const SPEC_SILENT: &str = "XEP-0357 says nothing about the App Server's errors; this is what keeps push on in Prosody 0.12 and ejabberd 23.01 (docs/answers.md).";

/// The rows of this group, in report order.
const ROWS: [&str; 8] = [
    "publish-unknown-node",
    "publish-wrong-secret",
    "publish-no-secret",
    "publish-malformed",
    "publish-accepted",
    "publish-empty-notification",
    "publish-transient",
    "publish-dead-token",
];

/// Runs the publish rows.
pub async fn check(s: &mut Session, dialects: &[Dialect], control: Option<&Control>) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Err(why) = s.connected().await {
        for id in ROWS {
            rows.push(row(id).skipped(why.clone()));
        }
        return rows;
    }
    let (domain, from) = (s.domain.clone(), s.user_domain.clone());

    // An unknown node.
    let id = s.id("pub");
    let node = format!("kit-unknown-{:016x}", rand::random::<u64>());
    let out = s
        .publish(&publish(
            Capture::Prosody,
            &id,
            &from,
            &domain,
            &node,
            Some("kit-secret"),
        ))
        .await;
    rows.push(
        judge(
            row("publish-unknown-node"),
            &out,
            |a| a.is(ErrorType::Cancel, Condition::ItemNotFound),
            "cancel/item-not-found",
        )
        .with_note(SPEC_SILENT),
    );

    let main = match dialects.first() {
        Some(d) => register(s, d, "kit-main").await.map(|r| (d.clone(), r)),
        None => Err("no --dialect given: the kit cannot register a node".to_owned()),
    };
    let Ok((dialect, main)) = main else {
        let why = main.err().unwrap_or_default();
        // Every row but the first needs a registered node.
        for id in &ROWS[1..] {
            rows.push(row(id).skipped(format!("no registration: {why}")));
        }
        return rows;
    };
    s.probe = Some(main.reg.clone());
    let reg = main.reg.clone();

    // Secrets.
    let secret_rows = [
        ("publish-wrong-secret", Some("kit-wrong-secret")),
        ("publish-no-secret", None),
    ];
    for (rid, secret) in secret_rows {
        if reg.secret.is_none() {
            rows.push(row(rid).skipped(format!("dialect {} hands out no secret", dialect.name())));
            continue;
        }
        let id = s.id("pub");
        let out = s
            .publish(&publish(
                Capture::Prosody,
                &id,
                &from,
                &domain,
                &reg.node,
                secret,
            ))
            .await;
        rows.push(
            judge(
                row(rid),
                &out,
                |a| {
                    a.is(ErrorType::Auth, Condition::Forbidden)
                        || a.is(ErrorType::Auth, Condition::NotAuthorized)
                },
                "auth/forbidden",
            )
            .with_note(SPEC_SILENT),
        );
    }

    // Malformed.
    let id = s.id("pub");
    let out = s
        .publish(&malformed_publish(&id, &from, &domain, &reg))
        .await;
    rows.push(
        judge(
            row("publish-malformed"),
            &out,
            |a| a.is(ErrorType::Modify, Condition::BadRequest),
            "modify/bad-request",
        )
        .with_note(SPEC_SILENT),
    );

    // Accepted, and the push arrives.
    let id = s.id("pub");
    let out = s.publish(&publish_to(&reg, &id, &from, &domain)).await;
    rows.push(accepted(row("publish-accepted"), &out, control, &reg).await);
    let id = s.id("pub");
    let out = s
        .publish(&publish(
            Capture::EjabberdEmpty,
            &id,
            &from,
            &domain,
            &reg.node,
            reg.secret.as_deref(),
        ))
        .await;
    rows.push(accepted(row("publish-empty-notification"), &out, control, &reg).await);

    let Some(control) = control else {
        rows.push(row("publish-transient").skipped("needs --test-app"));
        rows.push(row("publish-dead-token").skipped("needs --test-app"));
        return rows;
    };
    rows.push(transient(s, &dialect, control).await);
    rows.push(dead_token(s, &dialect, control).await);
    rows
}

/// Pass when the answer satisfies `ok`.
fn judge(r: Row, out: &Outcome, ok: impl Fn(&Answer) -> bool, wanted: &str) -> Row {
    let holds = out.answer().is_some_and(ok);
    let observed = if holds {
        out.describe()
    } else {
        format!("{}; expected {wanted}", out.describe())
    };
    r.judged(holds, observed, out.value())
}

/// `result`, and (with the test-app) the push reaches the mock.
async fn accepted(r: Row, out: &Outcome, control: Option<&Control>, reg: &Registration) -> Row {
    if !matches!(out.answer(), Some(Answer::Result(_))) {
        return r.fail(format!("{}; expected result", out.describe()), out.value());
    }
    let Some(control) = control else {
        return r
            .pass(out.describe(), "result")
            .with_note("without --test-app the push itself is not checked");
    };
    match control
        .delivered_within(&reg.token, Duration::from_secs(30))
        .await
    {
        Ok(true) => r.pass(
            format!("{}; the push reached the mock provider", out.describe()),
            "result",
        ),
        Ok(false) => r.fail(
            format!(
                "{}, but no push reached the mock provider within 30 s",
                out.describe()
            ),
            "result-no-push",
        ),
        Err(e) => r.fail(format!("{}; {e}", out.describe()), "result"),
    }
}

async fn fresh(s: &mut Session, dialect: &Dialect, user: &str) -> Result<Registered, String> {
    register(s, dialect, user).await
}

/// A provider outage: `wait`, or `result` and the push arrives once the
/// outage ends. Any other error turns push off on ejabberd at once.
async fn transient(s: &mut Session, dialect: &Dialect, control: &Control) -> Row {
    let r = row("publish-transient").with_note(
        "Must for us: XEP-0357 is silent, but ejabberd 23.01 deletes the registration on any error other than wait, and Prosody 0.12 counts it toward disabling push (docs/answers.md); a passing outage must not cost the user push.",
    );
    let reg = match fresh(s, dialect, "kit-transient").await {
        Ok(x) => x.reg,
        Err(why) => return r.skipped(format!("no registration: {why}")),
    };
    if let Err(e) = control
        .set_fault(&reg.token, KitFault::DownFor(OUTAGE))
        .await
    {
        return r.skipped(format!("could not set the fault: {e}"));
    }
    let (domain, from) = (s.domain.clone(), s.user_domain.clone());
    let id = s.id("pub");
    let out = s.publish(&publish_to(&reg, &id, &from, &domain)).await;
    let cleared = control.clear_fault(&reg.token).await;
    match out.answer() {
        Some(a) if a.is_error(ErrorType::Wait) => r.pass(out.describe(), out.value()),
        Some(Answer::Result(_)) => {
            if let Err(e) = cleared {
                return r.fail(
                    format!("result, then clearing the fault failed: {e}"),
                    "result",
                );
            }
            let limit = s.wait.min(Duration::from_secs(60));
            match control.delivered_within(&reg.token, limit).await {
                Ok(true) => r.pass(
                    "result; the push was delivered once the provider recovered",
                    "result",
                ),
                Ok(false) => r.fail(
                    format!(
                        "result, but the push never arrived within {} s of the provider's recovery",
                        limit.as_secs()
                    ),
                    "result-lost",
                ),
                Err(e) => r.fail(format!("result; {e}"), "result"),
            }
        }
        _ => r.fail(
            format!(
                "{}; expected wait (or result and a later delivery)",
                out.describe()
            ),
            out.value(),
        ),
    }
}

/// A dead token: `item-not-found`, and the registration is gone.
async fn dead_token(s: &mut Session, dialect: &Dialect, control: &Control) -> Row {
    let r = row("publish-dead-token").with_note(SPEC_SILENT);
    let reg = match fresh(s, dialect, "kit-dead").await {
        Ok(x) => x.reg,
        Err(why) => return r.skipped(format!("no registration: {why}")),
    };
    if let Err(e) = control.set_fault(&reg.token, KitFault::Dead).await {
        return r.skipped(format!("could not set the fault: {e}"));
    }
    let (domain, from) = (s.domain.clone(), s.user_domain.clone());
    let id = s.id("pub");
    let first = s.publish(&publish_to(&reg, &id, &from, &domain)).await;
    // The token works again for the second publish: an App Server that
    // kept the registration would push and answer result.
    if let Err(e) = control.clear_fault(&reg.token).await {
        return r.skipped(format!("could not clear the fault: {e}"));
    }
    let id = s.id("pub");
    let second = s.publish(&publish_to(&reg, &id, &from, &domain)).await;
    let gone = |o: &Outcome| {
        o.answer()
            .is_some_and(|a| a.is(ErrorType::Cancel, Condition::ItemNotFound))
    };
    let observed = format!("first: {}; next: {}", first.describe(), second.describe());
    let value = serde_json::json!({"first": first.value(), "next": second.value()});
    if gone(&first) && gone(&second) {
        r.pass(observed, value)
    } else {
        r.fail(
            format!("{observed}; expected cancel/item-not-found both times"),
            value,
        )
    }
}
