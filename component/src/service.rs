//! The App Server's stanza router: every stanza the component receives
//! comes here and gets exactly the answer the protocols require.
//!
//! - iq get disco#info / disco#items / ping: answered at once;
//! - iq set pubsub publish (XEP-0357) and ad-hoc commands (XEP-0050): need
//!   the database or a provider, so each runs in a task of its own, bounded
//!   by `max_in_flight` (beyond it the reader waits, which pushes back on
//!   the server through TCP);
//! - any other iq get/set: `service-unavailable`; malformed ones:
//!   `bad-request`;
//! - iq results and errors, messages and presence: never answered, so that
//!   two entities can never loop on each other's errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

use crate::config::DialectsConfig;
use crate::dispatch::{Admission, Dispatcher, Verdict};
use crate::push::stateless::StatelessPublish;
use crate::push::{self, PublishRequest};
use crate::register::adhoc::CommandRequest;
use crate::register::{self, Command};
use crate::store::{NodeForLog, Registration, RegistrationStore};
use crate::xmpp::disco::{self, DiscoInfo, DiscoItem, Identity};
use crate::xmpp::jid::Jid;
use crate::xmpp::stanza::{Iq, IqParseError, IqType, StanzaError};
use crate::xmpp::stream::{Outbound, StanzaHandler};
use crate::xmpp::{Element, ns};

/// Everything a stanza may need.
pub struct Service {
    domain: String,
    store: RegistrationStore,
    dispatcher: Arc<Dispatcher>,
    outbound: Outbound,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    /// Longest a publish waits for its answer (`dispatch.answer_deadline_secs`).
    answer_deadline: Duration,
    /// The registration dialects' settings.
    dialects: DialectsConfig,
}

impl Service {
    pub fn new(
        domain: String,
        store: RegistrationStore,
        dispatcher: Arc<Dispatcher>,
        outbound: Outbound,
        max_in_flight: usize,
        answer_deadline: Duration,
        dialects: DialectsConfig,
    ) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS) as u32;
        Service {
            domain,
            store,
            dispatcher,
            outbound,
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            answer_deadline,
            dialects,
        }
    }

    async fn route(self: &Arc<Self>, stanza: Element) {
        let iq = match Iq::from_element(stanza) {
            None => return, // message, presence or anything else: never answered
            Some(Ok(iq)) => iq,
            Some(Err((IqParseError::BadType(t), el))) => {
                // Unknown type: answerable when we know whom and which id.
                if let (Some(id), Some(from)) = (el.get_attr("id"), el.get_attr("from")) {
                    let iq = Iq {
                        id: id.into(),
                        from: from.into(),
                        to: el.get_attr("to").unwrap_or("").into(),
                        kind: IqType::Get,
                        payload: None,
                    };
                    self.answer(
                        iq.error(&StanzaError::bad_request(format!("unknown iq type {t:?}"))),
                    )
                    .await;
                }
                return;
            }
            Some(Err((e, _))) => {
                warn!(error = %e, "dropping an iq that cannot be answered");
                return;
            }
        };
        match iq.kind {
            IqType::Result | IqType::Error => {
                debug!(id = %iq.id, from = %iq.from, "ignoring iq {:?}", iq.kind);
            }
            IqType::Get | IqType::Set => self.request(iq).await,
        }
    }

    /// A stanza over `component.max_stanza_size`: its text was cut, so a
    /// publish in it becomes a plain wake-up (no summary) when its node and
    /// secret check out; any other iq, or a publish that does not check
    /// out, gets a `wait` error, so that no registration is disabled for
    /// it. Results, errors, messages and presence: never answered.
    async fn route_oversize(self: &Arc<Self>, stanza: Element) {
        let Some(Ok(iq)) = Iq::from_element(stanza) else {
            return;
        };
        if matches!(iq.kind, IqType::Result | IqType::Error) {
            return;
        }
        let publish = match (iq.kind, &iq.payload) {
            (IqType::Set, Some(p)) if p.is("pubsub", ns::PUBSUB) => PublishRequest::from_pubsub(p),
            _ => None,
        };
        let read_at = Instant::now();
        match publish {
            Some(Ok(mut request)) => {
                request.notification = nudge_plugins::Notification::default();
                let admission = self.dispatcher.admit(&request.node, false);
                let job = Job::Publish {
                    request,
                    admission,
                    oversize: true,
                    read_at,
                };
                self.spawn(iq, job).await
            }
            // Counted as a publish only when it is one: any other oversize
            // iq gets the same `wait`.
            Some(Err(_)) => self.answer_publish(&iq, Verdict::Oversize, read_at).await,
            None => {
                self.answer(iq.reply(Verdict::Oversize.answer(), None))
                    .await
            }
        }
    }

    async fn request(self: &Arc<Self>, iq: Iq) {
        let Some(payload) = &iq.payload else {
            self.answer(iq.error(&StanzaError::bad_request("iq without payload")))
                .await;
            return;
        };
        match (iq.kind, &*payload.name, &*payload.ns) {
            (IqType::Get, "query", ns::DISCO_INFO) => {
                let reply = match self.disco_info(payload.get_attr("node")) {
                    Some(info) => iq.result(Some(info.to_element())),
                    None => iq.error(&StanzaError::item_not_found()),
                };
                self.answer(reply).await;
            }
            (IqType::Get, "query", ns::DISCO_ITEMS) => {
                let node = payload.get_attr("node");
                let reply = match node {
                    None => iq.result(Some(disco::items_element(None, &[]))),
                    Some(ns::COMMANDS) => iq.result(Some(disco::items_element(
                        Some(ns::COMMANDS),
                        &self.command_items(),
                    ))),
                    Some(_) => iq.error(&StanzaError::item_not_found()),
                };
                self.answer(reply).await;
            }
            (IqType::Get, "ping", ns::PING) => self.answer(iq.result(None)).await,
            (IqType::Set, "pubsub", ns::PUBSUB) => match PublishRequest::from_pubsub(payload) {
                Some(Ok(request)) => {
                    let read_at = Instant::now();
                    let admission = self
                        .dispatcher
                        .admit(&request.node, request.notification.is_important());
                    let job = Job::Publish {
                        request,
                        admission,
                        oversize: false,
                        read_at,
                    };
                    self.spawn(iq, job).await
                }
                Some(Err(e)) => {
                    let verdict = Verdict::Malformed(e.to_string());
                    self.answer_publish(&iq, verdict, Instant::now()).await
                }
                None => {
                    self.answer(iq.error(&StanzaError::feature_not_implemented()))
                        .await
                }
            },
            (IqType::Set, "command", ns::COMMANDS) => match CommandRequest::from_element(payload)
                .map(|request| {
                    Command::from_request(request, self.dispatcher.backends(), &self.dialects)
                }) {
                Ok(Ok(cmd)) => self.spawn(iq, Job::Command(cmd)).await,
                Ok(Err(_)) => self.answer(iq.error(&StanzaError::item_not_found())).await,
                Err(e) => self.answer(iq.error(&StanzaError::bad_request(e))).await,
            },
            _ => {
                self.answer(iq.error(&StanzaError::service_unavailable()))
                    .await
            }
        }
    }

    /// Runs a job that needs the database or a provider in its own task.
    async fn spawn(self: &Arc<Self>, mut iq: Iq, job: Job) {
        // A publish's request holds what it needs of the payload: the
        // parsed tree would only add to what every push in flight holds.
        if matches!(job, Job::Publish { .. }) {
            iq.payload = None;
        }
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return; // closed semaphore: shutting down
        };
        let this = self.clone();
        tokio::spawn(async move {
            let reply = match job {
                Job::Publish {
                    request,
                    admission,
                    oversize,
                    read_at,
                } => {
                    // Whatever hangs (a database, a lock), the publish is
                    // answered before the server gives up on it.
                    let verdict = tokio::time::timeout(
                        this.answer_deadline,
                        this.publish(&iq, request, admission),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        error!(deadline = ?this.answer_deadline, "no decision on a publish in time; answering wait");
                        Verdict::Overdue
                    });
                    // An oversize stanza whose publish does not check out
                    // gets `wait`: its content cannot be trusted to tell.
                    let verdict = match verdict {
                        Verdict::Delivered | Verdict::Queued => verdict,
                        _ if oversize => Verdict::Oversize,
                        _ => verdict,
                    };
                    this.answer_publish(&iq, verdict, read_at).await;
                    drop(permit);
                    return;
                }
                Job::Command(cmd) => match this.command(&iq, cmd).await {
                    Ok(payload) => iq.result(Some(payload)),
                    Err(e) => iq.error(&e),
                },
            };
            this.answer(reply).await;
            drop(permit);
        });
    }

    /// What becomes of a publish: the registration is looked up and
    /// checked, then the dispatcher pushes. A node without a registration
    /// may be a stateless mode's (`push/stateless/`), when enabled: then
    /// the publish itself names the device.
    async fn publish(&self, iq: &Iq, request: PublishRequest, admission: Admission) -> Verdict {
        let Ok(from) = Jid::parse(&iq.from) else {
            return Verdict::Malformed("invalid from".into());
        };
        let reg = match self.store.find(&request.node).await {
            Ok(Some(reg)) => reg,
            Ok(None) => match self.stateless(&request, from.domain()) {
                Ok(reg) => reg,
                Err(verdict) => return verdict,
            },
            Err(e) => {
                error!(error = %e, "registration lookup failed");
                return Verdict::StorageDown;
            }
        };
        if let Err(verdict) = push::authorize(&request, &from, &reg) {
            return verdict;
        }
        self.dispatcher
            .publish(admission, reg, request.notification, from.domain())
            .await
    }

    /// The device a publish for an unregistered node names, if it is in a
    /// stateless mode's shape and that mode is enabled for its app;
    /// otherwise what the publish comes to (`item-not-found` for an
    /// unknown node).
    fn stateless(
        &self,
        request: &PublishRequest,
        domain: &str,
    ) -> Result<Arc<Registration>, Verdict> {
        let backends = self.dispatcher.backends();
        let built = StatelessPublish::from_request(request, &self.dialects).and_then(|publish| {
            publish
                .map(|p| p.registration(&request.node, domain, &self.dialects, backends))
                .transpose()
        });
        match built {
            Ok(Some(reg)) => Ok(Arc::new(reg)),
            Ok(None) => Err(Verdict::UnknownNode),
            Err(e) => {
                let node = NodeForLog(&request.node);
                debug!(%node, %domain, error = %e, "stateless publish refused");
                Err(e.verdict())
            }
        }
    }

    async fn command(&self, iq: &Iq, cmd: Command) -> Result<Element, StanzaError> {
        let from = Jid::parse(&iq.from).map_err(|_| StanzaError::bad_request("invalid from"))?;
        let ctx = register::Context {
            from: &from,
            component_jid: &self.domain,
            backends: self.dispatcher.backends(),
            store: &self.store,
            dialects: &self.dialects,
        };
        cmd.apply(&ctx).await
    }

    async fn answer(&self, reply: Element) {
        self.outbound.send(&reply).await;
    }

    /// Answers a publish read at `read_at`: the one place every publish's
    /// answer is decided from its verdict, and counted (`metrics.rs`).
    async fn answer_publish(&self, iq: &Iq, verdict: Verdict, read_at: Instant) {
        let answer = verdict.answer();
        let answered = self.dispatcher.metrics.publish_answer(&answer);
        self.answer(iq.reply(answer, None)).await;
        answered.record(read_at.elapsed());
    }

    fn command_items(&self) -> Vec<DiscoItem> {
        register::command_items(self.dispatcher.backends(), &self.dialects)
            .into_iter()
            .map(|item| DiscoItem {
                jid: self.domain.clone(),
                node: Some(item.node),
                name: Some(item.name),
            })
            .collect()
    }

    fn disco_info(&self, node: Option<&str>) -> Option<DiscoInfo> {
        match node {
            None => Some(DiscoInfo {
                node: None,
                // Siskin finds the App Server by this identity
                // (`docs/interop.md`, "Siskin / Tigase dialect").
                identities: vec![Identity {
                    category: "pubsub",
                    kind: "push",
                    name: "Nudge push notifications".into(),
                }],
                features: [
                    ns::DISCO_INFO,
                    ns::DISCO_ITEMS,
                    ns::COMMANDS,
                    ns::PUSH,
                    ns::PING,
                ]
                .into_iter()
                // The Tigase extensions forwarded, while their dialect is on.
                .chain(
                    self.dialects
                        .siskin
                        .is_some()
                        .then_some(register::siskin::FEATURES)
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            }),
            Some(ns::COMMANDS) => Some(DiscoInfo {
                node: Some(ns::COMMANDS.into()),
                identities: vec![Identity {
                    category: "automation",
                    kind: "command-list",
                    name: "Registration commands".into(),
                }],
                features: vec![ns::DISCO_INFO, ns::DISCO_ITEMS],
            }),
            Some(n)
                if self
                    .command_items()
                    .iter()
                    .any(|i| i.node.as_deref() == Some(n)) =>
            {
                Some(DiscoInfo {
                    node: Some(n.into()),
                    identities: vec![Identity {
                        category: "automation",
                        kind: "command-node",
                        name: n.into(),
                    }],
                    features: vec![ns::COMMANDS, ns::DATA_FORMS],
                })
            }
            Some(_) => None,
        }
    }
}

/// Work that runs in its own task.
enum Job {
    /// A publish, admitted in stream order; `oversize` when it came in a
    /// stanza over the size cap (its summary dropped: a plain wake-up).
    Publish {
        request: PublishRequest,
        admission: Admission,
        oversize: bool,
        /// When the publish was read, for `nudge_dispatch_duration_seconds`.
        read_at: Instant,
    },
    Command(Command),
}

impl StanzaHandler for Service {
    async fn handle(self: &Arc<Self>, stanza: Element) {
        self.route(stanza).await
    }

    async fn handle_oversize(self: &Arc<Self>, stanza: Element) {
        self.route_oversize(stanza).await
    }

    async fn drained(&self) {
        // Holding every permit means no job is running.
        if let Ok(all) = self.in_flight.acquire_many(self.max_in_flight).await {
            drop(all);
        }
    }
}
