//! The committed conformance tables (`docs/conformance/`) against the live
//! captures (`tests/fixtures/captures/`, `component/tests/fixtures/`), and
//! the kit's copies of those fixtures against the originals.
//!
//! The tables are produced by `nudge-test-app conformance server` against
//! the Prosody and ejabberd that `scripts/interop-test` runs, and re-checked
//! by every interop run; the captures were taken earlier, by other means (a
//! recording component and raw-XML clients). Two independent observations
//! of the same servers must agree: each expectation below names the
//! capture's words it rests on, and the test checks that those words are
//! in the capture, so an expectation cannot drift away from its evidence.
//!
//! Rows whose outcome depends on configuration are expected for the
//! configuration `scripts/lib/servers.sh` writes (Prosody:
//! `push_notification_with_body = true`, no sender; ejabberd:
//! `include_body: true`, no sender).

use std::path::{Path, PathBuf};

use nudge_test_app::conformance::xml::{Element, FieldValue, form_field, ns};
use nudge_test_app::conformance::{Mode, Report, Verdict};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn table(server: &str) -> Report {
    let path = root().join(format!("docs/conformance/{server}.json"));
    let report: Report =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(report.mode, Mode::Server, "{}", path.display());
    report
}

fn capture(name: &str) -> String {
    read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/captures")
            .join(name),
    )
}

fn fixture(name: &str) -> Element {
    let path = root().join("component/tests/fixtures").join(name);
    Element::parse(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One expectation: the row's value, and the words of the capture that
/// show it.
struct Expect {
    row: &'static str,
    value: Value,
    evidence: &'static str,
}

fn expect(row: &'static str, value: Value, evidence: &'static str) -> Expect {
    Expect {
        row,
        value,
        evidence,
    }
}

/// What both captures show alike.
fn common() -> Vec<Expect> {
    vec![
        expect("component-handshake", json!(true), "<handshake/>"),
        expect(
            "component-wrong-secret",
            json!("not-authorized"),
            "not-authorized",
        ),
        expect("enable", json!("result"), "type='result'"),
        expect(
            "enable-silent",
            json!(0),
            "sent to the App Server on enable",
        ),
        expect("publish-to", json!(true), "`to` = the"),
        expect("publish-node", json!(true), "<publish node="),
        expect("publish-from", json!("domain"), "server domain"),
        expect(
            "publish-options",
            json!("verbatim"),
            "the client's enable form",
        ),
        expect("summary-form", json!("present"), "urn:xmpp:push:summary"),
        expect("publish-hibernated", json!(true), "Hibernated"),
        expect("publish-burst", json!(10), "publishes"),
        expect("answer-result", json!("kept"), "result"),
        expect("away-resent", json!(false), "re-sent"),
    ]
}

fn prosody() -> Vec<Expect> {
    vec![
        expect(
            "publish-offline",
            json!(true),
            "**Offline:** one publish per message",
        ),
        expect("publish-item-id", json!("absent"), "`<item>` has no id"),
        expect(
            "summary-last-message-body",
            json!("body"),
            "body = real body (escaped)",
        ),
        expect(
            "disable",
            json!("result"),
            "`disable` (with node) → `type='result'`",
        ),
        expect(
            "answer-wait",
            json!("kept"),
            "| error `wait` `resource-constraint` | not counted",
        ),
        expect(
            "summary-form-type",
            json!("form"),
            "<x type='form' xmlns='jabber:x:data'>",
        ),
        expect(
            "summary-message-count",
            json!("1"),
            "`message-count` was `1` in every publish observed",
        ),
        expect(
            "summary-unset-fields",
            json!("empty"),
            "fields without value are empty elements",
        ),
        expect(
            "summary-last-message-sender",
            json!("empty"),
            "body `New Message!`, sender empty",
        ),
        expect(
            "publish-no-body",
            json!("published"),
            "| chat state only (`<active/>`, no body) | **published**",
        ),
        expect(
            "answer-cancel",
            json!("disabled-after-16"),
            "the 16th cancel disabled it",
        ),
        expect(
            "answer-auth",
            json!("disabled-after-16"),
            "| error `auth` `forbidden` | count +1",
        ),
        expect(
            "answer-modify",
            json!("disabled-after-16"),
            "| error `modify` `bad-request` | count +1",
        ),
        expect(
            "answer-none",
            json!("kept"),
            "| no answer | nothing: no timeout",
        ),
        expect(
            "away",
            json!("kept"),
            "never counts (4 bounces, registration kept)",
        ),
        expect(
            "second-connection",
            json!("refused:conflict"),
            "Second connection while one is up: `<stream:error><conflict/>",
        ),
    ]
}

fn ejabberd() -> Vec<Expect> {
    vec![
        expect(
            "publish-offline",
            json!(true),
            "**Fully offline**: one publish per message",
        ),
        expect("publish-item-id", json!("absent"), "`<item>` has **no id**"),
        expect(
            "summary-last-message-body",
            json!("body"),
            "FORM_TYPE + sender + body (real text)",
        ),
        expect(
            "disable",
            json!("result"),
            "no node = all nodes of that JID) → `result`",
        ),
        expect(
            "answer-wait",
            json!("kept"),
            "| error `wait` / `resource-constraint` | kept",
        ),
        expect(
            "summary-form-type",
            json!("submit"),
            "<x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary",
        ),
        expect(
            "summary-message-count",
            json!("absent"),
            "Field order: FORM_TYPE, sender, body.",
        ),
        expect(
            "summary-unset-fields",
            json!("absent"),
            "| false | true | chat + body | FORM_TYPE + sender only |",
        ),
        expect(
            "summary-last-message-sender",
            json!("absent"),
            "`include_sender` default false",
        ),
        expect(
            "publish-no-body",
            json!("not-published"),
            "chat-state only (no hint), or type=headline | not stored offline → **no push**",
        ),
        expect(
            "answer-cancel",
            json!("disabled"),
            "| error `cancel` / `item-not-found` | **deleted at once**",
        ),
        expect(
            "answer-auth",
            json!("disabled"),
            "| error `auth` / `forbidden` | deleted at once",
        ),
        expect(
            "answer-modify",
            json!("disabled"),
            "| error `modify` / `bad-request` | deleted at once",
        ),
        expect(
            "answer-bare-error",
            json!("disabled"),
            "| `<iq type='error'/>` without `<error/>` | deleted at once",
        ),
        expect(
            "answer-none",
            json!("kept"),
            "| no answer | kept; after exactly 32.0 s",
        ),
        expect(
            "away",
            json!("disabled"),
            "every registration that gets a publish while the component is down is deleted at once",
        ),
        expect(
            "second-connection",
            json!("accepted"),
            "Two connections for the same domain at the same time were **both accepted**",
        ),
    ]
}

fn check(server: &str, capture_file: &str, specific: Vec<Expect>) {
    let report = table(server);
    let evidence = capture(capture_file);
    let mut wrong = Vec::new();
    for e in common().into_iter().chain(specific) {
        if !evidence.contains(e.evidence) {
            wrong.push(format!(
                "{}: the evidence {:?} is not in {capture_file}",
                e.row, e.evidence
            ));
            continue;
        }
        match report.row(e.row) {
            None => wrong.push(format!("{}: missing from the table", e.row)),
            Some(row) if row.verdict == Verdict::Skipped => {
                wrong.push(format!("{}: skipped ({})", e.row, row.observed))
            }
            Some(row) if row.value != e.value => wrong.push(format!(
                "{}: the table says {}, the capture shows {} ({:?})",
                e.row, row.value, e.value, e.evidence
            )),
            Some(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/conformance/{server}.json disagrees with {capture_file}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn prosody_table_matches_the_capture() {
    check("prosody", "prosody-0.12.md", prosody());
}

#[test]
fn ejabberd_table_matches_the_capture() {
    check("ejabberd", "ejabberd-23.01.md", ejabberd());
}

/// The summary rows against the captured publish stanzas themselves: the
/// shape the table reports is the shape on the wire.
#[test]
fn summary_rows_match_the_captured_stanzas() {
    let summary = |publish: &Element| -> Option<Element> {
        publish
            .child("pubsub", ns::PUBSUB)?
            .child("publish", ns::PUBSUB)?
            .child("item", ns::PUBSUB)?
            .child("notification", ns::PUSH)?
            .child("x", ns::DATA_FORMS)
            .cloned()
    };
    let prosody = fixture("prosody-publish-important.xml");
    let form = summary(&prosody).expect("Prosody's summary form");
    let prosody_table = table("prosody");
    assert_eq!(prosody.attr("from"), Some("localhost"));
    assert_eq!(
        prosody_table.row("publish-from").map(|r| &r.value),
        Some(&json!("domain"))
    );
    assert_eq!(form.attr("type"), Some("form"));
    assert_eq!(
        prosody_table.row("summary-form-type").map(|r| &r.value),
        Some(&json!("form"))
    );
    assert_eq!(
        form_field(&form, "pending-subscription-count"),
        Some(FieldValue::Empty)
    );
    assert_eq!(
        prosody_table.row("summary-unset-fields").map(|r| &r.value),
        Some(&json!("empty"))
    );
    assert_eq!(
        form_field(&form, "message-count"),
        Some(FieldValue::Value("1"))
    );

    let ejabberd = fixture("ejabberd-publish-summary.xml");
    let form = summary(&ejabberd).expect("ejabberd's summary form");
    let ejabberd_table = table("ejabberd");
    assert_eq!(ejabberd.attr("from"), Some("localhost"));
    assert_eq!(form.attr("type"), Some("submit"));
    assert_eq!(form_field(&form, "message-count"), None);
    assert_eq!(form_field(&form, "pending-subscription-count"), None);
    assert_eq!(
        ejabberd_table.row("summary-unset-fields").map(|r| &r.value),
        Some(&json!("absent"))
    );
    assert_eq!(
        ejabberd_table
            .row("summary-message-count")
            .map(|r| &r.value),
        Some(&json!("absent"))
    );
    let empty = fixture("ejabberd-publish-empty.xml");
    assert!(summary(&empty).is_none(), "ejabberd's empty notification");
}

/// Every row the committed tables hold is one the kit still produces, in
/// the same order, with the same requirement: a renamed row or a changed
/// requirement must be re-recorded, not silently compared to stale data.
#[test]
fn tables_list_the_same_rows() {
    let prosody = table("prosody");
    let ejabberd = table("ejabberd");
    let ids = |r: &Report| {
        r.rows
            .iter()
            .map(|r| (r.id.clone(), r.requirement))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&prosody), ids(&ejabberd));
    assert!(prosody.rows.len() >= 25, "{} rows", prosody.rows.len());
}

/// The app-server mode's publishes (`src/conformance/app_server/captures/`,
/// compiled into the binary) are the same captures Nudge's own tests use
/// (`component/tests/fixtures/`): a fixture fixed in one place must be
/// fixed in the other.
#[test]
fn the_kit_sends_the_component_fixtures() {
    for name in [
        "prosody-publish-body-sender.xml",
        "ejabberd-publish-empty.xml",
    ] {
        let kit = read(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/conformance/app_server/captures")
                .join(name),
        );
        let component = read(&root().join("component/tests/fixtures").join(name));
        assert_eq!(kit, component, "{name}");
    }
}
