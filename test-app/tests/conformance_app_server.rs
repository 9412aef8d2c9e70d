//! The app-server mode of the conformance kit fails, naming the right
//! rows, against deliberately broken components, and passes a correct one.
//! The component here is a small App Server written in the test (raw TCP
//! and the kit's own `conformance::xml`): the Conversations dialect
//! (`register-push-apns`), publishes pushed for real to the in-process
//! test-app's mock APNs (so a 503 or a 410 is the provider's own answer),
//! and one flaw at a time: a wrong handshake digest, `cancel` for a
//! provider failure, two answers to every request, an answer to an error.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nudge_test_app::conformance::app_server::{AppServerOptions, Dialect, Listen, run};
use nudge_test_app::conformance::xml::{
    Element, FieldValue, StreamEvent, StreamReader, form_field, handshake_digest, ns, stream_open,
};
use nudge_test_app::conformance::{Report, Verdict};
use nudge_test_app::{TestApp, TestAppConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "push.example.org";
const SECRET: &str = "kit-test-secret";

/// One flaw the component has (or none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    None,
    /// Sends sha1(id + another secret).
    WrongDigest,
    /// Answers `cancel` when the provider fails for now.
    CancelOnProviderFailure,
    /// Answers every request twice.
    AnswersTwice,
    /// Answers an iq error with an iq error.
    AnswersErrors,
}

#[derive(Clone, Debug)]
struct Reg {
    node: String,
    secret: String,
    token: String,
    device: String,
}

#[derive(Default)]
struct State {
    regs: Vec<Reg>,
    /// Stream errors the kit sent the component.
    stream_errors: Vec<String>,
}

/// The test's App Server.
struct Component {
    flaw: Flaw,
    app: Option<Arc<TestApp>>,
    state: Arc<Mutex<State>>,
}

impl Component {
    /// Connects to `port` again and again (the kit breaks streams on
    /// purpose) until the task is aborted.
    fn spawn(self, port: u16) -> tokio::task::JoinHandle<()> {
        let me = Arc::new(self);
        tokio::spawn(async move {
            for _ in 0..500 {
                if let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                    me.serve(tcp).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    async fn serve(&self, tcp: TcpStream) {
        let (r, mut w) = tcp.into_split();
        let mut reader = StreamReader::new(r, 8 << 20);
        let open = stream_open(ns::COMPONENT, &[("to", DOMAIN)]);
        if w.write_all(open.as_bytes()).await.is_err() {
            return;
        }
        let Ok(Ok(header)) = tokio::time::timeout(Duration::from_secs(5), reader.header()).await
        else {
            return;
        };
        let id = header.attr("id").unwrap_or_default().to_owned();
        let secret = if self.flaw == Flaw::WrongDigest {
            "not-the-secret"
        } else {
            SECRET
        };
        let hs = format!("<handshake>{}</handshake>", handshake_digest(&id, secret));
        if w.write_all(hs.as_bytes()).await.is_err() {
            return;
        }
        loop {
            let el = match reader.next().await {
                Ok(StreamEvent::Stanza(el)) => el,
                _ => return,
            };
            if el.is("error", ns::STREAM) {
                if let Some(c) = el.children.first() {
                    self.state
                        .lock()
                        .unwrap()
                        .stream_errors
                        .push(c.name.clone());
                }
                return;
            }
            if el.name == "handshake" {
                continue;
            }
            if let Some(answer) = self.handle(&el).await {
                let xml = answer.to_xml(ns::COMPONENT);
                let times = if self.flaw == Flaw::AnswersTwice {
                    2
                } else {
                    1
                };
                for _ in 0..times {
                    if w.write_all(xml.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn handle(&self, el: &Element) -> Option<Element> {
        if el.name != "iq" {
            return None;
        }
        match el.attr("type") {
            Some("get") => Some(match el.child("query", ns::DISCO_INFO) {
                Some(_) => result(el).with_child(
                    Element::new("query", ns::DISCO_INFO)
                        .with_child(
                            Element::new("identity", ns::DISCO_INFO)
                                .with_attr("category", "pubsub")
                                .with_attr("type", "push"),
                        )
                        .with_child(
                            Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::PUSH),
                        ),
                ),
                None => error(el, "cancel", "service-unavailable"),
            }),
            Some("set") => Some(if let Some(cmd) = el.child("command", ns::COMMANDS) {
                self.command(el, cmd)
            } else if let Some(pubsub) = el.child("pubsub", ns::PUBSUB) {
                self.publish(el, pubsub).await
            } else {
                error(el, "cancel", "service-unavailable")
            }),
            Some("error") if self.flaw == Flaw::AnswersErrors => {
                Some(error(el, "cancel", "bad-request"))
            }
            _ => None,
        }
    }

    fn command(&self, el: &Element, cmd: &Element) -> Element {
        let form = cmd.child("x", ns::DATA_FORMS);
        let field = |var: &str| match form.and_then(|f| form_field(f, var)) {
            Some(FieldValue::Value(v)) => v.to_owned(),
            _ => String::new(),
        };
        let mut state = self.state.lock().unwrap();
        match cmd.attr("node") {
            Some("register-push-apns") => {
                let reg = Reg {
                    node: format!("n{:016x}", rand::random::<u64>()),
                    secret: format!("s{:016x}", rand::random::<u64>()),
                    token: field("token"),
                    device: field("android-id"),
                };
                state.regs.push(reg.clone());
                let f = |var: &str, v: &str| {
                    Element::new("field", ns::DATA_FORMS)
                        .with_attr("var", var)
                        .with_child(Element::new("value", ns::DATA_FORMS).with_text(v))
                };
                result(el).with_child(
                    Element::new("command", ns::COMMANDS)
                        .with_attr("node", "register-push-apns")
                        .with_attr("status", "completed")
                        .with_child(
                            Element::new("x", ns::DATA_FORMS)
                                .with_attr("type", "result")
                                .with_child(f("jid", DOMAIN))
                                .with_child(f("node", &reg.node))
                                .with_child(f("secret", &reg.secret)),
                        ),
                )
            }
            Some("unregister-push-apns") => {
                let device = field("android-id");
                state.regs.retain(|r| r.device != device);
                result(el).with_child(
                    Element::new("command", ns::COMMANDS)
                        .with_attr("node", "unregister-push-apns")
                        .with_attr("status", "completed"),
                )
            }
            _ => error(el, "cancel", "item-not-found"),
        }
    }

    async fn publish(&self, el: &Element, pubsub: &Element) -> Element {
        let Some(publish) = pubsub.child("publish", ns::PUBSUB) else {
            return error(el, "modify", "bad-request");
        };
        let node = publish.attr("node").unwrap_or_default();
        let Some(reg) = self
            .state
            .lock()
            .unwrap()
            .regs
            .iter()
            .find(|r| r.node == node)
            .cloned()
        else {
            return error(el, "cancel", "item-not-found");
        };
        let secret = pubsub
            .child("publish-options", ns::PUBSUB)
            .and_then(|o| o.child("x", ns::DATA_FORMS))
            .and_then(|f| form_field(f, "secret"));
        if secret != Some(FieldValue::Value(reg.secret.as_str())) {
            return error(el, "auth", "forbidden");
        }
        let notification = publish
            .child("item", ns::PUBSUB)
            .and_then(|i| i.child("notification", ns::PUSH));
        if notification.is_none() {
            return error(el, "modify", "bad-request");
        }
        let Some(app) = &self.app else {
            return result(el);
        };
        let mut h2 = common::H2::connect(&app.apns_url(), &app.ca_cert_pem(), None).await;
        let resp = common::apns_alert(&mut h2, app, &reg.token).await;
        match resp.status {
            200 => result(el),
            410 => {
                self.state
                    .lock()
                    .unwrap()
                    .regs
                    .retain(|r| r.node != reg.node);
                error(el, "cancel", "item-not-found")
            }
            _ if self.flaw == Flaw::CancelOnProviderFailure => {
                error(el, "cancel", "internal-server-error")
            }
            _ => error(el, "wait", "remote-server-timeout"),
        }
    }
}

fn result(req: &Element) -> Element {
    let mut el = Element::new("iq", ns::COMPONENT)
        .with_attr("type", "result")
        .with_attr("id", req.attr("id").unwrap_or_default())
        .with_attr("from", DOMAIN);
    if let Some(to) = req.attr("from") {
        el = el.with_attr("to", to);
    }
    el
}

fn error(req: &Element, kind: &str, condition: &str) -> Element {
    let mut el = result(req).with_child(
        Element::new("error", ns::COMPONENT)
            .with_attr("type", kind)
            .with_child(Element::new(condition, ns::STANZAS)),
    );
    el.set_attr("type", "error");
    el
}

/// The test's component, still running after the kit returns: the kit may
/// have written its last words (a stream error) that the component has not
/// read yet. Dropping it stops the component.
struct RunningComponent {
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<State>>,
}

impl RunningComponent {
    /// Waits (at most 10 s) until the component has read a stream error,
    /// and returns the conditions it read.
    async fn stream_errors(&self) -> Vec<String> {
        for _ in 0..100 {
            let errors = self.state.lock().unwrap().stream_errors.clone();
            if !errors.is_empty() {
                return errors;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Vec::new()
    }
}

impl Drop for RunningComponent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the kit against a component with `flaw`; with the in-process
/// test-app when `with_app`.
async fn kit_against(flaw: Flaw, with_app: bool) -> (Report, RunningComponent) {
    let app = if with_app {
        Some(Arc::new(
            nudge_test_app::start(TestAppConfig::default())
                .await
                .unwrap(),
        ))
    } else {
        None
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(State::default()));
    let task = Component {
        flaw,
        app: app.clone(),
        state: state.clone(),
    }
    .spawn(port);
    let mut opts = AppServerOptions::new(Listen::Listener(listener), DOMAIN, SECRET);
    opts.dialects = vec!["conversations:apns".parse::<Dialect>().unwrap()];
    opts.test_app = app.as_ref().map(|a| a.control_url());
    opts.wait = Duration::from_secs(10);
    let report = tokio::time::timeout(Duration::from_secs(240), run(opts))
        .await
        .expect("the kit finished in time")
        .expect("the kit ran");
    println!("{}", report.to_table());
    // The test-app stops when the component's clone and this one are
    // dropped (`TestApp`'s `Drop` aborts its tasks).
    (report, RunningComponent { task, state })
}

fn ids(report: &Report, verdict: Verdict) -> Vec<&str> {
    report
        .rows
        .iter()
        .filter(|r| r.verdict == verdict)
        .map(|r| r.id.as_str())
        .collect()
}

const NEED_TEST_APP: &[&str] = &["publish-transient", "publish-dead-token"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_component_passes_every_row() {
    let (report, _) = kit_against(Flaw::None, true).await;
    assert_eq!(ids(&report, Verdict::Fail), Vec::<&str>::new());
    assert_eq!(ids(&report, Verdict::Skipped), Vec::<&str>::new());
    assert!(report.row("dialect-conversations-apns").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_handshake_digest_fails_the_handshake_row() {
    let (report, component) = kit_against(Flaw::WrongDigest, false).await;
    assert_eq!(ids(&report, Verdict::Fail), vec!["handshake"]);
    let row = report.row("handshake").unwrap();
    assert_eq!(row.value, "wrong-digest");
    // Nothing else can be checked without a stream.
    assert_eq!(
        ids(&report, Verdict::Pass),
        Vec::<&str>::new(),
        "{}",
        report.to_table()
    );
    let errors = component.stream_errors().await;
    assert_eq!(errors, vec!["not-authorized"], "the kit's stream error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_for_a_provider_outage_fails_publish_transient() {
    let (report, _) = kit_against(Flaw::CancelOnProviderFailure, true).await;
    assert_eq!(ids(&report, Verdict::Fail), vec!["publish-transient"]);
    assert_eq!(ids(&report, Verdict::Skipped), Vec::<&str>::new());
    let row = report.row("publish-transient").unwrap();
    assert_eq!(row.value, "cancel/internal-server-error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_answers_to_one_iq_fail_one_answer_per_iq() {
    let (report, _) = kit_against(Flaw::AnswersTwice, false).await;
    assert_eq!(ids(&report, Verdict::Fail), vec!["one-answer-per-iq"]);
    assert_eq!(ids(&report, Verdict::Skipped), NEED_TEST_APP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_an_error_fails_silent_to_error() {
    let (report, _) = kit_against(Flaw::AnswersErrors, false).await;
    assert_eq!(ids(&report, Verdict::Fail), vec!["silent-to-error"]);
    assert_eq!(ids(&report, Verdict::Skipped), NEED_TEST_APP);
}

#[tokio::test]
async fn dialect_names_parse_and_make_row_ids() {
    let d: Dialect = "siskin:tigase:messenger:apns:1".parse().unwrap();
    assert_eq!(d.row_id(), "dialect-siskin-tigase-messenger-apns-1");
    assert_eq!(
        "conversations:fcm".parse::<Dialect>().unwrap().row_id(),
        "dialect-conversations-fcm"
    );
    assert!("gajim:x".parse::<Dialect>().is_err());
    assert!("siskin:".parse::<Dialect>().is_err());
}
