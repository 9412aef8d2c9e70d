//! Start-up and shutdown: builds the backends from the configured apps,
//! opens and migrates the store, connects the component link and runs it
//! until a stop is asked for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;
use crate::dispatch::{Backends, Dispatcher};
use crate::service::Service;
use crate::store::{RegistrationStore, StoreError};
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
    shutdown: watch::Sender<bool>,
    task: JoinHandle<StopReason>,
    /// The outbox's retry worker; stopped with the instance (what it had
    /// claimed is retried after the claim time by the next start).
    retrying: JoinHandle<()>,
}

impl Running {
    /// Stops gracefully: stanzas already read are answered, then the stream
    /// is closed.
    pub async fn stop(self) -> StopReason {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the instance stops by itself (replaced) or is stopped.
    pub async fn wait(self) -> StopReason {
        let reason = self.task.await.unwrap_or(StopReason::Shutdown);
        self.retrying.abort();
        self.store.close().await;
        reason
    }

    /// A handle that can ask for a stop while someone else waits.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
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
    let store = RegistrationStore::open(&url, config.storage.cache_capacity).await?;
    store.migrate().await?;
    info!(database = store.kind(), apps = ?backends.apps(), "registration store ready");
    let (link, outbound, state) = Link::new(config.stream());
    let dispatcher = Dispatcher::new(backends, store.clone(), config);
    let retrying = tokio::spawn(crate::dispatch::retry::run(dispatcher.clone()));
    let service = Arc::new(Service::new(
        config.component.domain.clone(),
        store.clone(),
        dispatcher,
        outbound,
        config.dispatch.max_in_flight,
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(link.run(service, shutdown_rx));
    Ok(Running {
        state,
        store,
        shutdown,
        task,
        retrying,
    })
}
