//! Start-up and shutdown: builds the backends from the configured apps,
//! opens and migrates the store, connects the component link and runs it
//! until a stop is asked for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::dispatch::{Backends, Dispatcher};
use crate::register::limits::RegisterLimits;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::store::{ChangeListener, RegistrationStore, StoreError};
use crate::xmpp::stream::{Link, LinkState, StopReason};

/// Why Nudge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] nudge_plugins::BackendConfigError),
}

/// Builds one backend per configured app.
pub async fn build_backends(config: &Config) -> Result<Backends, StartError> {
    let mut backends = Backends::new();
    for (app, provider) in &config.apps {
        backends.insert(
            app.clone(),
            nudge_plugins::build_backend(app, provider).await?,
        );
    }
    Ok(backends)
}

/// A running instance.
pub struct Running {
    /// The component link's state.
    pub state: watch::Receiver<LinkState>,
    /// The registration store the instance uses.
    pub store: RegistrationStore,
    shutdown: Shutdown,
    task: JoinHandle<StopReason>,
    /// The outbox's retry worker; stopped with the instance (what it had
    /// claimed is retried after the claim time by the next start).
    retrying: JoinHandle<()>,
    dispatcher: Arc<Dispatcher>,
    /// Hears about other writers' registration changes (PostgreSQL).
    changes: Option<ChangeListener>,
    /// How long a stop waits for pushes still out in the background.
    settle_within: Duration,
    /// The link's transitions, for `/status`.
    link_history: Arc<crate::http::status::LinkHistory>,
}

impl Running {
    /// Stops gracefully: stanzas already read are answered, then the stream
    /// is closed.
    pub async fn stop(self) -> StopReason {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the instance stops by itself (replaced) or is stopped.
    /// Every publish read has been answered by then; pushes still out in
    /// the background (their publishes answered, their rows in the outbox)
    /// get `dispatch.answer_within_ms` more to finish, so that a restart
    /// sends fewer of them twice. Not longer: the stream is closed already,
    /// and while this process lingers a plain restart cannot connect the
    /// next one (ejabberd deletes registrations whose publishes bounce in
    /// that gap, `docs/answers.md`); what is still out is in the outbox.
    pub async fn wait(self) -> StopReason {
        let reason = self.task.await.unwrap_or(StopReason::Shutdown);
        self.retrying.abort();
        if !self.dispatcher.background_idle(self.settle_within).await {
            warn!("pushes still out at stop; the outbox sends them again after a restart");
        }
        if let Some(changes) = self.changes {
            changes.stop().await;
        }
        self.store.close().await;
        reason
    }

    /// A handle that can ask for a stop while someone else waits.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// What the HTTP routes read of this instance (`http/`).
    pub fn http_state(&self, config: &Config) -> crate::http::HttpState {
        crate::http::HttpState {
            config: Arc::new(config.clone()),
            store: self.store.clone(),
            dispatcher: self.dispatcher.clone(),
            link: self.state.clone(),
            api_keys: Arc::new(crate::http::registrations::ApiKeys::from_config(
                &config.http,
            )),
            link_history: self.link_history.clone(),
            scrape: Arc::default(),
        }
    }

    /// Waits until the link reaches `want`, up to `limit`.
    pub async fn wait_for_state(&mut self, want: LinkState, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.state.wait_for(|s| *s == want))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Opens the store (migrating it) and starts the component with the given
/// backends.
pub async fn start(config: &Config, backends: Backends) -> Result<Running, StartError> {
    let url = config.database_url();
    let store = RegistrationStore::open(&url, config.storage.cache_capacity)
        .await?
        .with_register_limits(RegisterLimits::new(&config.register))
        .with_cache_max_age(Duration::from_secs(config.storage.cache_max_age_secs));
    store.migrate().await?;
    let changes = store.listen_for_changes();
    info!(database = store.kind(), apps = ?backends.apps(), "registration store ready");
    let (link, outbound, state) = Link::new(config.stream());
    let link_history = crate::http::status::LinkHistory::follow(state.clone());
    let dispatcher = Dispatcher::new(backends, store.clone(), config);
    let retrying = tokio::spawn(crate::dispatch::retry::run(dispatcher.clone()));
    let service = Arc::new(Service::new(
        config.component.domain.clone(),
        store.clone(),
        dispatcher.clone(),
        outbound,
        config.dispatch.max_in_flight,
        Duration::from_secs(config.dispatch.answer_deadline_secs),
        config.dialects.clone(),
    ));
    let shutdown = Shutdown::new();
    // The link's metrics; ends with the link (no-ops without a recorder).
    tokio::spawn(crate::metrics::watch_link(state.clone()));
    let task = tokio::spawn(link.run(service, shutdown.clone()));
    Ok(Running {
        state,
        store,
        shutdown,
        task,
        retrying,
        dispatcher,
        changes,
        settle_within: Duration::from_millis(config.dispatch.answer_within_ms),
        link_history,
    })
}
