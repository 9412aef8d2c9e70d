//! The registration store: which device a pubsub node wakes, and with which
//! secret. SQLite (one file, the zero-set-up default) or PostgreSQL (for
//! several instances), through sqlx; a read-through cache in front keeps the
//! publish path off the database for nodes in use. On PostgreSQL every
//! instance hears about every writer's changes (`listen.rs`), so the
//! instances' caches agree.
//!
//! The secret is stored as it was handed out, not hashed: Conversations
//! registers again on every start and expects the same node *and* secret
//! back (its server still holds them from `<enable/>`), which a hash could
//! not give. The secret only lets a server wake a device; the token stored
//! beside it is the more sensitive value either way.
//!
//! Both databases run the same SQL (`$N` placeholders work in both); each has
//! its own migrations folder for where the dialects will differ.

mod cache;
mod listen;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha1::{Digest, Sha1};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, Row};

use cache::{Cached, RegistrationCache};

use crate::register::limits::RegisterLimits;

/// A device registered with the App Server.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Registration {
    pub node: String,
    pub secret: Option<String>,
    pub owner: String,
    pub domain: String,
    pub device_id: String,
    pub muc: String,
    pub app: String,
    pub token: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The dialect that registered it (`register/`): its unregister
    /// command removes only its own registrations.
    pub dialect: String,
    /// A second token for calls (Siskin's PushKit token); '' for none.
    pub second_token: String,
    /// The APNs environment of the tokens: '', `sandbox` or `production`.
    pub environment: String,
    /// Per-push choices of a stateless push (MongooseIM's publish-options);
    /// not a column: registered devices have none.
    #[sqlx(skip)]
    pub options: nudge_plugins::PushOptions,
}

/// The dialects that register nothing: their [`Registration`]s are built
/// from each publish (`push/stateless/`), never stored, and an outbox row
/// of theirs carries the device (`outbox.device`).
pub const STATELESS_DIALECTS: [&str; 2] = ["fpush", "mongooseim"];

impl Registration {
    /// The device as the push backends see it.
    pub fn device(&self) -> nudge_plugins::Device {
        nudge_plugins::Device {
            token: self.token.clone(),
            app: self.app.clone(),
            account: Some(self.owner.clone()),
            device_id: (!self.device_id.is_empty()).then(|| self.device_id.clone()),
            muc: (!self.muc.is_empty()).then(|| self.muc.clone()),
            collapse_id: Some(self.collapse_id()),
            voip_token: (!self.second_token.is_empty()).then(|| self.second_token.clone()),
            // Written by this code only; anything else is the app's default.
            environment: self.environment.parse().ok(),
            options: self.options.clone(),
        }
    }

    /// Whether this is a stateless push's device, built from its publish
    /// rather than read from the database.
    pub fn is_stateless(&self) -> bool {
        STATELESS_DIALECTS.contains(&self.dialect.as_str())
    }

    /// The node as logs show it: a short hash ([`node_hash`]), never the
    /// node itself (for Siskin's dialect and a stateless push the node is
    /// the credential, or the device token).
    pub fn node_for_log(&self) -> NodeForLog<'_> {
        NodeForLog(&self.node)
    }

    /// The collapse identifier of the registration's pushes: 16 hex digits
    /// of a hash of the node, not the node itself (for dialects without a
    /// secret the node is the credential, and providers log what they get).
    pub fn collapse_id(&self) -> String {
        let digest = Sha1::new()
            .chain_update(b"nudge collapse id\0")
            .chain_update(self.node.as_bytes())
            .finalize();
        hex::encode(&digest[..8])
    }
}

/// A node for the log ([`Registration::node_for_log`]): displays as its
/// [`node_hash`], so that a log line never carries a credential, and an
/// operator still goes from the line to the registration (`nudge
/// registrations list` prints the hash, `show` takes it).
#[derive(Debug, Clone, Copy)]
pub struct NodeForLog<'a>(pub &'a str);

impl std::fmt::Display for NodeForLog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&node_hash(self.0))
    }
}

/// How many hex digits [`node_hash`] has.
pub const NODE_HASH_LEN: usize = 8;

/// 8 hex digits of a keyed SHA-1 of `node`: enough to tell devices apart in
/// a log and to find the registration again, too little to push to (keyed
/// apart from [`Registration::collapse_id`], which providers see).
pub fn node_hash(node: &str) -> String {
    let digest = Sha1::new()
        .chain_update(b"nudge node hash\0")
        .chain_update(node.as_bytes())
        .finalize();
    hex::encode(&digest[..NODE_HASH_LEN / 2])
}

/// Whether `s` has the shape of a [`node_hash`] (a node is base64url of
/// 16 bytes or longer, never 8 characters).
pub fn is_node_hash(s: &str) -> bool {
    s.len() == NODE_HASH_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a client asks to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRegistration {
    /// Bare JID of the account.
    pub owner: String,
    pub device_id: String,
    /// Bare room JID, or '' for the account's own pushes.
    pub muc: String,
    pub app: String,
    pub token: String,
    /// Whether a publish-options secret is handed out with the node.
    pub with_secret: bool,
    /// The registering dialect's name (`conversations`, `siskin`, …).
    pub dialect: &'static str,
    /// A second token for calls; '' for none.
    pub second_token: String,
    /// The tokens' APNs environment, when the client said.
    pub environment: Option<nudge_plugins::Environment>,
}

/// What became of a registration under a client-chosen node
/// ([`RegistrationStore::register_client_node`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientNodeOutcome {
    /// Registered, or the account's own node updated (same secret).
    Registered(Box<Registration>),
    /// A new node, and the account holds as many as it may.
    AtCap,
    /// Another account or dialect holds the node: nothing changed.
    Taken,
}

/// Errors of the store; every one is a failure on our side, so publishes
/// are answered with `wait` errors when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("unsupported database URL {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// A batch of outbox writes failed as a whole (`store/outbox/batch.rs`):
    /// each of its writes is answered with the one error.
    #[error("database (batched write): {0}")]
    Batch(Arc<sqlx::Error>),
    /// The outbox's writer task stopped (a panic, or the runtime shutting
    /// down) before the write was answered.
    #[error("the outbox writer stopped before the write was committed")]
    WriterGone,
    /// A batch of registration lookups failed (`store/lookup.rs`): each
    /// of its lookups is answered with the one error.
    #[error("database (batched lookup): {0}")]
    Lookup(Arc<sqlx::Error>),
    /// The lookup's reader task stopped (a panic, or the runtime shutting
    /// down) before the lookup was answered.
    #[error("the registration reader stopped before the lookup was answered")]
    ReaderGone,
}

/// Why [`RegistrationStore::ping`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same query body against whichever database is configured.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

mod brake;
mod outbox;

pub use brake::{BrakeRecord, BrakeStore, HeldRemoval};
pub use listen::ChangeListener;
pub use outbox::{CommitStats, ExpiredPush, Outbox, OutboxSummary, QueuedPush};

/// How long a cached row is used when nothing else says otherwise; see
/// [`RegistrationStore::with_cache_max_age`].
pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(60);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The registrations, with the cache in front.
#[derive(Clone)]
pub struct RegistrationStore {
    pool: Pool,
    cache: Arc<RegistrationCache>,
    /// The cache's misses, read in batches (`lookup.rs`).
    lookups: Arc<lookup::Lookups>,
    /// The limits of registration commands. They travel with the store
    /// because the command handlers get the store handle, and they guard
    /// what it holds; the cap itself is enforced by [`Self::register_within`].
    limits: Arc<RegisterLimits>,
    #[cfg(test)]
    hooks: Arc<tests::Hooks>,
}

/// The columns of a [`Registration`], in its field order. A macro so that
/// the queries stay `&'static str` (sqlx refuses unaudited dynamic SQL).
macro_rules! columns {
    () => {
        "node, secret, owner, domain, device_id, muc, app, token, created_at, updated_at, \
         dialect, second_token, environment"
    };
}

mod batches;
mod lookup;
pub use lookup::LookupStats;

impl RegistrationStore {
    /// Opens the database at `url` (`sqlite://path` or `postgres://…`);
    /// a SQLite file and its directory are created when missing.
    pub async fn open(url: &str, cache_capacity: usize) -> Result<Self, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            if let Some(file) = sqlite_file(url)
                && let Some(dir) = file.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(url.into()));
        };
        // A PostgreSQL database may have other writers: its cache serves
        // rows only while a change listener hears about their changes.
        let listening = matches!(pool, Pool::Sqlite(_));
        Ok(RegistrationStore {
            lookups: Arc::new(lookup::Lookups::new(pool.clone())),
            pool,
            cache: Arc::new(RegistrationCache::new(
                cache_capacity,
                DEFAULT_CACHE_MAX_AGE,
                listening,
            )),
            limits: Arc::default(),
            #[cfg(test)]
            hooks: Default::default(),
        })
    }

    /// Uses these registration limits instead of the defaults.
    pub fn with_register_limits(mut self, limits: RegisterLimits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The limits of registration commands.
    pub fn register_limits(&self) -> &RegisterLimits {
        &self.limits
    }

    /// Uses cached rows for at most `max_age` (default
    /// [`DEFAULT_CACHE_MAX_AGE`]) from when they were read: the bound on
    /// using a row changed by a writer this instance did not hear about.
    /// Zero caches nothing. Call before the store is cloned or used; the
    /// cache starts out empty.
    pub fn with_cache_max_age(mut self, max_age: Duration) -> Self {
        self.cache = Arc::new(self.cache.with_max_age(max_age));
        self
    }

    /// Starts hearing about the registration changes of every writer of the
    /// database (other instances, the CLI, an operator's SQL), which the
    /// cache needs to serve rows on PostgreSQL: until the listener is
    /// subscribed, and whenever it is not, every lookup reads the database.
    /// `None` on SQLite, which has one writer (a second process is refused)
    /// and whose cache serves from the start. Call once per store, within a
    /// Tokio runtime; the listener holds one connection of the pool.
    pub fn listen_for_changes(&self) -> Option<ChangeListener> {
        match &self.pool {
            Pool::Sqlite(_) => None,
            Pool::Postgres(p) => Some(ChangeListener::spawn(p.clone(), self.cache.clone())),
        }
    }

    /// Forgets every cached row, as after a handover: what the previous
    /// process changed until it exited is read from the database again.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Applies the migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// The outbox of accepted pushes, on the same database.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.pool.clone())
    }

    /// The removal brake's records, on the same database.
    pub fn brake(&self) -> BrakeStore {
        BrakeStore::new(self.pool.clone())
    }

    /// Which database this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Registers a device, or updates the token of an existing registration
    /// of the same account, app, device and room: the node and secret stay
    /// the same, so the user's server keeps working with what it has.
    pub async fn register(&self, new: &NewRegistration) -> Result<Registration, StoreError> {
        let reg = self.register_within(new, i64::MAX).await?;
        // With no cap the statement always inserts or updates a row.
        reg.ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// [`Self::register`], but a new registration only while the account
    /// holds fewer than `max_per_account`; `None` when it is at the cap. A
    /// re-registration of a device it has always goes through. The count and
    /// the insert are one statement: on SQLite writes are serialised, so the
    /// cap holds exactly; on PostgreSQL registrations of one account racing
    /// at the same instant may each see the old count and pass together
    /// (read committed), which the per-account rate bounds.
    pub async fn register_within(
        &self,
        new: &NewRegistration,
        max_per_account: i64,
    ) -> Result<Option<Registration>, StoreError> {
        let now = now();
        let node = random_id(16);
        let secret = new.with_secret.then(|| random_id(18));
        let domain = new
            .owner
            .rsplit_once('@')
            .map_or(new.owner.as_str(), |(_, d)| d)
            .to_owned();
        let sql = concat!(
            "INSERT INTO registrations (",
            columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $11, $12, $13 \
             WHERE (SELECT COUNT(*) FROM registrations WHERE owner = $3) < $10 \
             OR EXISTS (SELECT 1 FROM registrations \
                        WHERE owner = $3 AND app = $7 AND device_id = $5 AND muc = $6) \
             ON CONFLICT (owner, app, device_id, muc) DO UPDATE SET token = excluded.token, \
             updated_at = excluded.updated_at, second_token = excluded.second_token, \
             environment = excluded.environment \
             RETURNING ",
            columns!()
        );
        let reg: Option<Registration> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(&node)
                .bind(&secret)
                .bind(&new.owner)
                .bind(&domain)
                .bind(&new.device_id)
                .bind(&new.muc)
                .bind(&new.app)
                .bind(&new.token)
                .bind(now)
                .bind(max_per_account)
                .bind(new.dialect)
                .bind(&new.second_token)
                .bind(new.environment.map_or("", |e| e.as_str()))
                .fetch_optional(p)
                .await?
        });
        // A re-registration may have changed the token of a cached node.
        if let Some(reg) = &reg {
            self.cache.invalidate(&reg.node);
        }
        Ok(reg)
    }

    /// Gives an app's registration of `node` a new token and APNs
    /// environment (the HTTP API's update, `http/registrations.rs`); node,
    /// secret and owner stay. `None` when the app has no such node.
    pub async fn update_token(
        &self,
        app: &str,
        node: &str,
        token: &str,
        environment: Option<nudge_plugins::Environment>,
    ) -> Result<Option<Registration>, StoreError> {
        let sql = concat!(
            "UPDATE registrations SET token = $3, environment = $4, updated_at = $5 \
             WHERE node = $1 AND app = $2 RETURNING ",
            columns!()
        );
        let reg: Option<Registration> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(node)
                .bind(app)
                .bind(token)
                .bind(environment.map_or("", |e| e.as_str()))
                .bind(now())
                .fetch_optional(p)
                .await?
        });
        self.cache.invalidate(node);
        Ok(reg)
    }

    /// How many queries the cache's misses took (`lookup.rs`).
    pub fn lookup_stats(&self) -> LookupStats {
        self.lookups.stats()
    }

    /// The registration of a node, from the cache when it is there. That
    /// the node has none is cached as well (`store/cache.rs`), so a server
    /// publishing to an unknown node again and again reads the database
    /// once per cache age, not once per publish.
    ///
    /// The read is a prepared statement: sqlx keeps each connection's
    /// statements (`statement_cache_capacity`, 100 by default), so after a
    /// connection's first lookup only the bind and step run.
    pub async fn find(&self, node: &str) -> Result<Option<Arc<Registration>>, StoreError> {
        match self.cache.get(node) {
            Cached::Found(reg) => return Ok(Some(reg)),
            Cached::Absent => return Ok(None),
            Cached::Unknown => {}
        }
        let read_at = self.cache.epoch();
        // With the other misses of the moment, in one query.
        let found = self.lookups.find(node).await?;
        #[cfg(test)]
        self.hooks.after_read().await;
        Ok(match found {
            Some(r) => {
                let r = Arc::new(r);
                self.cache.fill(r.clone(), read_at);
                Some(r)
            }
            None => {
                self.cache.fill_absent(node, read_at);
                None
            }
        })
    }

    /// Removes the registration of an account's device (and room); returns
    /// the removed node, if there was one.
    pub async fn unregister(
        &self,
        owner: &str,
        app: &str,
        device_id: &str,
        muc: &str,
    ) -> Result<Option<String>, StoreError> {
        let sql = "DELETE FROM registrations WHERE owner = $1 AND app = $2 AND device_id = $3 AND muc = $4 RETURNING node";
        let node: Option<String> = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(owner)
                .bind(app)
                .bind(device_id)
                .bind(muc)
                .fetch_optional(p)
                .await?
                .map(|row| row.get::<String, _>(0))
        });
        if let Some(n) = &node {
            self.cache.invalidate(n);
        }
        Ok(node)
    }

    /// Registers a device under a node the client chose (mod_push_appserver's
    /// `v1-register-push`), bound to the registering account: a node it
    /// already holds (in the same dialect) gets the new token, app and
    /// environment and keeps its secret; a node held by another account or
    /// another dialect is left alone ([`ClientNodeOutcome::Taken`]). A new
    /// node counts against `max_per_account` like [`Self::register_within`].
    ///
    /// The check and the write are one statement, `INSERT … ON CONFLICT
    /// (node) DO UPDATE … WHERE` the row is the account's: SQLite runs
    /// writes one at a time, and PostgreSQL, when two accounts race for a
    /// new node, makes the second insert wait for the first and then
    /// applies the `WHERE` to the committed row, so no account ever updates
    /// (or reads the secret of) another's node. A conflict on the device
    /// key instead (the account's Conversations registration with this
    /// node as its device id) is refused the same way.
    pub async fn register_client_node(
        &self,
        new: &NewRegistration,
        node: &str,
        max_per_account: i64,
    ) -> Result<ClientNodeOutcome, StoreError> {
        let now = now();
        let secret = new.with_secret.then(|| random_id(18));
        let domain = new
            .owner
            .rsplit_once('@')
            .map_or(new.owner.as_str(), |(_, d)| d)
            .to_owned();
        let sql = concat!(
            "INSERT INTO registrations (",
            columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $11, $12, $13 \
             WHERE (SELECT COUNT(*) FROM registrations WHERE owner = $3) < $10 \
             OR EXISTS (SELECT 1 FROM registrations \
                        WHERE node = $1 AND owner = $3 AND dialect = $11) \
             ON CONFLICT (node) DO UPDATE SET token = excluded.token, app = excluded.app, \
             updated_at = excluded.updated_at, environment = excluded.environment \
             WHERE registrations.owner = excluded.owner \
             AND registrations.dialect = excluded.dialect \
             RETURNING ",
            columns!()
        );
        let result: Result<Option<Registration>, sqlx::Error> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(node)
                .bind(&secret)
                .bind(&new.owner)
                .bind(&domain)
                .bind(&new.device_id)
                .bind(&new.muc)
                .bind(&new.app)
                .bind(&new.token)
                .bind(now)
                .bind(max_per_account)
                .bind(new.dialect)
                .bind(&new.second_token)
                .bind(new.environment.map_or("", |e| e.as_str()))
                .fetch_optional(p)
                .await
        });
        let reg = match result {
            Ok(reg) => reg,
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                return Ok(ClientNodeOutcome::Taken);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(reg) = reg {
            self.cache.invalidate(&reg.node);
            return Ok(ClientNodeOutcome::Registered(Box::new(reg)));
        }
        // Nothing written: the account is at its cap, or the node is not
        // its own. Which one is read afterwards, only to word the answer.
        let held: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM registrations WHERE owner = $1")
                .bind(&new.owner)
                .fetch_one(p)
                .await?
        });
        Ok(if held >= max_per_account {
            ClientNodeOutcome::AtCap
        } else {
            ClientNodeOutcome::Taken
        })
    }

    /// Removes an account's registration of a node made by `dialect` for
    /// `app`; whether there was one. Another account's node, or another
    /// dialect's, is not touched.
    pub async fn unregister_node(
        &self,
        owner: &str,
        app: &str,
        node: &str,
        dialect: &str,
    ) -> Result<bool, StoreError> {
        let sql = "DELETE FROM registrations WHERE node = $1 AND owner = $2 AND app = $3 AND dialect = $4";
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .bind(owner)
                .bind(app)
                .bind(dialect)
                .execute(p)
                .await?
                .rows_affected()
        });
        self.cache.invalidate(node);
        Ok(n > 0)
    }

    /// Removes an account's registrations of a device token made by
    /// `dialect` for `app` (Siskin's `unregister-device`); the removed
    /// nodes.
    pub async fn unregister_token(
        &self,
        owner: &str,
        app: &str,
        token: &str,
        dialect: &str,
    ) -> Result<Vec<String>, StoreError> {
        let sql = "DELETE FROM registrations WHERE owner = $1 AND app = $2 AND token = $3 AND dialect = $4 RETURNING node";
        let nodes: Vec<String> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .bind(owner)
                .bind(app)
                .bind(token)
                .bind(dialect)
                .fetch_all(p)
                .await?
        });
        for node in &nodes {
            self.cache.invalidate(node);
        }
        Ok(nodes)
    }

    /// The rooms an account registered a device for, with one app.
    pub async fn rooms_of_device(
        &self,
        owner: &str,
        app: &str,
        device_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT muc FROM registrations WHERE owner = $1 AND app = $2 AND device_id = $3 AND muc <> ''";
        let rooms: Vec<String> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .bind(owner)
                .bind(app)
                .bind(device_id)
                .fetch_all(p)
                .await?
        });
        Ok(rooms)
    }

    /// Removes a registration whose token the provider declared dead, but
    /// only if it still has that token: a device that registered a new
    /// token meanwhile keeps its registration.
    pub async fn remove_dead_token(&self, node: &str, token: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM registrations WHERE node = $1 AND token = $2";
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .bind(token)
                .execute(p)
                .await?
                .rows_affected()
        });
        self.cache.invalidate(node);
        Ok(n > 0)
    }

    /// Removes a registration by node (operator's command).
    pub async fn remove(&self, node: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM registrations WHERE node = $1";
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .execute(p)
                .await?
                .rows_affected()
        });
        self.cache.invalidate(node);
        Ok(n > 0)
    }

    /// Registrations in node order, optionally only one account's.
    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Registration>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM registrations WHERE ($1 IS NULL OR owner = $1) ORDER BY owner, node LIMIT $2"
        );
        let rows: Vec<Registration> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(owner)
                .bind(limit)
                .fetch_all(p)
                .await?
        });
        Ok(rows)
    }

    /// The registrations whose node has the [`node_hash`] `hash` (one, or
    /// in the rare collision several): reads every node, for the operator's
    /// commands only.
    pub async fn find_by_hash(&self, hash: &str) -> Result<Vec<Registration>, StoreError> {
        let sql = "SELECT node FROM registrations";
        let nodes: Vec<(String,)> =
            on_pool!(&self.pool, |p| { sqlx::query_as(sql).fetch_all(p).await? });
        let mut found = Vec::new();
        for (node,) in nodes.into_iter().filter(|(n,)| node_hash(n) == hash) {
            if let Some(reg) = self.find(&node).await? {
                found.push(Registration::clone(&reg));
            }
        }
        Ok(found)
    }

    /// Whether the database answers a trivial query within `limit`
    /// (`/ready`, `http/health.rs`): the error says why not.
    pub async fn ping(&self, limit: Duration) -> Result<(), PingError> {
        let query = async {
            on_pool!(&self.pool, |p| {
                sqlx::query("SELECT 1").execute(p).await.map(|_| ())
            })
        };
        match tokio::time::timeout(limit, query).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PingError::Database(e)),
            Err(_) => Err(PingError::TimedOut(limit)),
        }
    }

    /// How many registrations each app has (apps with none are left
    /// out), for `nudge_registrations` (`http/metrics.rs`).
    pub async fn count_by_app(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT app, COUNT(*) FROM registrations GROUP BY app ORDER BY app";
        let rows: Vec<(String, i64)> =
            on_pool!(&self.pool, |p| { sqlx::query_as(sql).fetch_all(p).await? });
        Ok(rows)
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }
}

/// The file of a SQLite database URL (`sqlite://PATH?options`); `None`
/// for another database or an in-memory one.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or(rest);
    (!file.is_empty() && file != ":memory:").then(|| std::path::PathBuf::from(file))
}

/// Now, in epoch seconds (the database's time unit).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now, in epoch milliseconds (the outbox's due times).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `bytes` random bytes as base64url: URL- and XML-safe, no padding.
fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_a_short_hash_of_the_node_never_the_node() {
        let node = "gIB2xz0r1U-qH-1_Go3w2A";
        let shown = NodeForLog(node).to_string();
        assert_eq!(shown.len(), NODE_HASH_LEN);
        assert!(is_node_hash(&shown));
        assert_eq!(shown, node_hash(node));
        assert!(!shown.contains(&node[..4]));
        assert_ne!(node_hash("another-node-entirely"), shown);
        // Keyed apart from the collapse id providers see.
        let reg = Registration {
            node: node.into(),
            ..registration_for_hash_test()
        };
        assert!(!reg.collapse_id().starts_with(&shown));
        assert!(!is_node_hash(node) && !is_node_hash("ABCDEF12"));
    }

    fn registration_for_hash_test() -> Registration {
        Registration {
            node: String::new(),
            secret: None,
            owner: "a@b".into(),
            domain: "b".into(),
            device_id: String::new(),
            muc: String::new(),
            app: "ios".into(),
            token: "t".into(),
            created_at: 0,
            updated_at: 0,
            dialect: "conversations".into(),
            second_token: String::new(),
            environment: String::new(),
            options: Default::default(),
        }
    }

    /// A pause in [`RegistrationStore::find`] between its database read and
    /// its cache fill, armed once, so that a test can put a change there.
    #[derive(Default)]
    pub(super) struct Hooks {
        armed: std::sync::Mutex<Option<Arc<Pause>>>,
    }

    #[derive(Default)]
    struct Pause {
        reached: tokio::sync::Notify,
        resume: tokio::sync::Notify,
    }

    impl Hooks {
        pub(super) async fn after_read(&self) {
            let pause = self.armed.lock().ok().and_then(|mut a| a.take());
            if let Some(p) = pause {
                p.reached.notify_one();
                p.resume.notified().await;
            }
        }

        fn arm(&self) -> Arc<Pause> {
            let pause = Arc::new(Pause::default());
            *self.armed.lock().unwrap() = Some(pause.clone());
            pause
        }
    }

    #[tokio::test]
    async fn a_miss_racing_a_registration_does_not_cache_the_old_row() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nudge.db").display());
        let store = RegistrationStore::open(&url, 100).await.unwrap();
        store.migrate().await.unwrap();
        let mut new = NewRegistration {
            owner: "alice@localhost".into(),
            device_id: "dev1".into(),
            muc: String::new(),
            app: "app".into(),
            token: "tok-old".into(),
            with_secret: true,
            dialect: "conversations",
            second_token: String::new(),
            environment: None,
        };
        let node = store.register(&new).await.unwrap().node;

        // A publish misses the cache and reads the old row ...
        let pause = store.hooks.arm();
        let reader = tokio::spawn({
            let store = store.clone();
            let node = node.clone();
            async move { store.find(&node).await }
        });
        pause.reached.notified().await;
        // ... the device registers a new token ...
        new.token = "tok-new".into();
        store.register(&new).await.unwrap();
        // ... and the publish fills the cache with what it read.
        pause.resume.notify_one();
        let raced = reader.await.unwrap().unwrap().unwrap();
        assert_eq!(raced.token, "tok-old", "the read came before the change");

        let now = store.find(&node).await.unwrap().unwrap();
        assert_eq!(
            now.token, "tok-new",
            "the old row was put back in the cache"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_miss_racing_a_registration_of_the_node_does_not_cache_its_absence() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nudge.db").display());
        let store = RegistrationStore::open(&url, 100).await.unwrap();
        store.migrate().await.unwrap();
        let new = NewRegistration {
            owner: "alice@localhost".into(),
            device_id: "dev1".into(),
            muc: String::new(),
            app: "app".into(),
            token: "tok".into(),
            with_secret: true,
            dialect: "push_appserver",
            second_token: String::new(),
            environment: None,
        };
        let node = "client-chosen-node";

        // A publish misses the cache and finds no row ...
        let pause = store.hooks.arm();
        let reader = tokio::spawn({
            let store = store.clone();
            async move { store.find(node).await }
        });
        pause.reached.notified().await;
        // ... the node is registered ...
        let outcome = store.register_client_node(&new, node, 10).await.unwrap();
        assert!(matches!(outcome, ClientNodeOutcome::Registered(_)));
        // ... and the publish caches what it read: nothing.
        pause.resume.notify_one();
        assert!(
            reader.await.unwrap().unwrap().is_none(),
            "the read came first"
        );

        let found = store.find(node).await.unwrap();
        assert_eq!(
            found.map(|r| r.token.clone()).as_deref(),
            Some("tok"),
            "the node's absence was cached over its registration"
        );
        store.close().await;
    }

    #[test]
    fn ids_are_long_and_url_safe() {
        let id = random_id(16);
        assert_eq!(id.len(), 22);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(random_id(16), random_id(16));
    }
}
