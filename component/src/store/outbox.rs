//! The outbox: pushes that were accepted (their publish answered `result`)
//! but that the provider has not taken yet. Writing the row is what makes
//! answering `result` honest when a provider is down or slow; the retry
//! worker (`dispatch/retry.rs`) reads it back until the push is delivered
//! or its time to live runs out.
//!
//! One row per registration: [`Outbox::merge`] folds a publish into the
//! node's row when there is one, which is how a burst of publishes becomes
//! one trailing push. Every merge bumps `seq`, so that a delivery removes
//! the row only when nothing was merged into it while the push was out
//! ([`Outbox::delivered`]).
//!
//! Several instances may share one database (PostgreSQL), and each row must
//! be sent by one of them at a time. Taking a row for a send is a *claim*:
//! it moves the row's due time to the end of the claim time (past the push
//! timeout, `dispatch/mod.rs`) and writes the claimer into `claimed_by`
//! (migration `0004_outbox_claims.sql`). Each [`Outbox`] handle is one
//! claimer, with an id of its own; an instance's dispatcher holds one.
//!
//! - The retry pass takes due rows with [`Outbox::claim_due`], one
//!   statement; on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so that
//!   instances polling at once get disjoint rows and never wait on each
//!   other.
//! - An early try takes one known row with [`Outbox::claim`]. A row claimed
//!   for a send and a row backing off both have a due time in the future;
//!   `claimed_by` tells them apart (a backoff or a reschedule clears it), so
//!   an early try never takes a row another instance is sending right now.
//! - The claimer settles the row when its send ends ([`Outbox::delivered`],
//!   [`Outbox::retry_at`], [`Outbox::reschedule`]). The last two leave a
//!   live claim of another claimer alone: a send that ends on one instance
//!   does not hand out a row another instance has out.
//! - A claim lapses when the row comes due again: the rows of an instance
//!   that died are taken by any instance at the end of their claim time.
//!
//! A push of a stateless mode (`push/stateless/`: nothing registered, the
//! publish names the device) carries its device in the row (`device`,
//! JSON, migration `0005_dialects.sql`), so that a retry, on this instance
//! after a restart or on another, can send it without a registration; a
//! merge keeps the newest publish's device. Rows of registered devices
//! have none: the retry looks the registration up.
//!
//! The row writes of publishes ([`Outbox::merge`], [`Outbox::insert_new`])
//! are committed in groups: writes that arrive while a commit is under way
//! share the next transaction (`outbox/batch.rs`), each still answered with
//! its own `seq` and only after its commit.
//!
//! A `claimed_by` rather than a claim end time: with only a time, an
//! instance could not tell its own claim from another's, so a send ending
//! would either release another instance's claim or need the caller to say
//! whose claim it meant.

use std::sync::Arc;

use nudge_plugins::{Notification, PushOptions};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{Pool, Registration, StoreError};

mod batch;

pub use batch::CommitStats;
use batch::{Batcher, RowWrite};

/// A push waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPush {
    /// The registration (pubsub node) the push is for.
    pub node: String,
    /// The summary to push.
    pub notification: Notification,
    /// When its publish was read (epoch microseconds).
    pub received_us: i64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// Bumped by every merge; see [`Outbox::delivered`].
    pub seq: i64,
    /// When the push was first accepted (epoch seconds).
    pub created_at: i64,
    /// When the push is given up (epoch seconds).
    pub expires_at: i64,
    /// When the next attempt is due (epoch milliseconds); for a row just
    /// claimed, the end of the claim.
    pub due_at_ms: i64,
    /// The device of a stateless push (built from its publish, see the
    /// module documentation); `None` for a registered device.
    pub device: Option<Registration>,
}

#[derive(FromRow)]
struct Row_ {
    node: String,
    notification: String,
    received_us: i64,
    attempts: i64,
    seq: i64,
    created_at: i64,
    expires_at: i64,
    due_at_ms: i64,
    device: Option<String>,
}

/// The summary as stored: the fields a backend reads.
#[derive(Serialize, Deserialize)]
struct StoredNotification {
    #[serde(default)]
    message_count: Option<u32>,
    #[serde(default)]
    sender: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    fields: Vec<(String, String)>,
    /// `[ciphertext, iv]` of an encrypted payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted: Option<(String, String)>,
    /// `[sid, media]` of a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call: Option<(Option<String>, Vec<String>)>,
}

fn encode(n: &Notification) -> String {
    let stored = StoredNotification {
        message_count: n.message_count,
        sender: n.last_message_sender.clone(),
        body: n.last_message_body.clone(),
        fields: n.fields.clone(),
        encrypted: n.encrypted.as_ref().map(|e| (e.data.clone(), e.iv.clone())),
        call: n.call.as_ref().map(|c| (c.sid.clone(), c.media.clone())),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into())
}

/// A stored summary that does not parse (written by a newer version, or
/// damaged) still wakes the device: as a plain wake-up.
fn decode(json: &str) -> Notification {
    match serde_json::from_str::<StoredNotification>(json) {
        Ok(s) => Notification {
            message_count: s.message_count,
            last_message_sender: s.sender,
            last_message_body: s.body,
            fields: s.fields,
            encrypted: s
                .encrypted
                .map(|(data, iv)| nudge_plugins::EncryptedPayload { data, iv }),
            call: s
                .call
                .map(|(sid, media)| nudge_plugins::Call { sid, media }),
        },
        Err(e) => {
            tracing::warn!(error = %e, "unreadable summary in the outbox; pushing a plain wake-up");
            Notification::default()
        }
    }
}

/// A stateless push's device as stored: what its [`Registration`] holds
/// beyond the row's node.
#[derive(Serialize, Deserialize)]
struct StoredDevice {
    dialect: String,
    app: String,
    token: String,
    /// The publishing domain (owner and domain of the registration).
    domain: String,
    #[serde(default)]
    environment: String,
    /// The publish's options, their keys inline.
    #[serde(default, flatten)]
    options: PushOptions,
    #[serde(default)]
    created_at: i64,
}

fn encode_device(reg: &Registration) -> String {
    let stored = StoredDevice {
        dialect: reg.dialect.clone(),
        app: reg.app.clone(),
        token: reg.token.clone(),
        domain: reg.domain.clone(),
        environment: reg.environment.clone(),
        options: reg.options.clone(),
        created_at: reg.created_at,
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into())
}

/// The device of row `node`; `None` when the JSON does not parse (written
/// by a newer version, or damaged): the row is then treated as one whose
/// registration is gone, dropped with a log line.
fn decode_device(node: &str, json: &str) -> Option<Registration> {
    match serde_json::from_str::<StoredDevice>(json) {
        Ok(d) => Some(Registration {
            node: node.to_owned(),
            secret: None,
            owner: d.domain.clone(),
            domain: d.domain,
            device_id: String::new(),
            muc: String::new(),
            app: d.app,
            token: d.token,
            created_at: d.created_at,
            updated_at: d.created_at,
            dialect: d.dialect,
            second_token: String::new(),
            environment: d.environment,
            options: d.options,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable device in the outbox");
            None
        }
    }
}

impl From<Row_> for QueuedPush {
    fn from(r: Row_) -> Self {
        QueuedPush {
            device: r
                .device
                .as_deref()
                .and_then(|json| decode_device(&r.node, json)),
            node: r.node,
            notification: decode(&r.notification),
            received_us: r.received_us,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            seq: r.seq,
            created_at: r.created_at,
            expires_at: r.expires_at,
            due_at_ms: r.due_at_ms,
        }
    }
}

/// A row dropped because its time to live ran out ([`Outbox::expire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredPush {
    /// Its node.
    pub node: String,
    /// Its failed attempts.
    pub attempts: u32,
    /// Whether it was a stateless push (its node may be a token: logged
    /// short, see [`Registration::node_for_log`]).
    pub stateless: bool,
}

/// Counts of the outbox, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Rows waiting.
    pub queued: i64,
    /// Acceptance time of the oldest row (epoch seconds), if any.
    pub oldest_created_at: Option<i64>,
}

/// The outbox table; cheap to clone. A handle and its clones are one
/// claimer (see the module documentation).
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: Pool,
    /// This claimer's id in `claimed_by`.
    claimer: Arc<str>,
    /// The group commit of `merge` and `insert_new`.
    batcher: Arc<Batcher>,
}

/// A row as written: the values both writes bind.
#[allow(clippy::too_many_arguments)]
fn row_write(
    sql: &'static str,
    node: &str,
    notification: &Notification,
    device: Option<&Registration>,
    received_us: i64,
    due_at_ms: i64,
    expires_at: i64,
    claimed_by: Option<Arc<str>>,
) -> RowWrite {
    RowWrite {
        sql,
        node: node.to_owned(),
        device: device.map(encode_device),
        json: encode(notification),
        important: i32::from(notification.is_important()),
        received_us,
        due_at_ms,
        expires_at,
        claimed_by,
    }
}

/// The insert both writes start with (`$1` node … `$7` received_us, `$8`
/// claimed_by, `$9` device).
macro_rules! insert_row {
    () => {
        "INSERT INTO outbox (node, notification, important, created_at, expires_at, due_at_ms, received_us, attempts, seq, last_error, claimed_by, device) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 1, '', $8, $9)"
    };
}

/// The condition under which a row may be rescheduled or claimed by
/// claimer `$me` at `$now` (epoch milliseconds): nobody holds it, `$me`
/// does, or the claim has lapsed (the row is due).
macro_rules! not_claimed_by_another {
    ($me:literal, $now:literal) => {
        concat!(
            "(claimed_by = '' OR claimed_by = ",
            $me,
            " OR due_at_ms <= ",
            $now,
            ")"
        )
    };
}

macro_rules! outbox_columns {
    () => {
        "node, notification, received_us, attempts, seq, created_at, expires_at, due_at_ms, device"
    };
}

impl Outbox {
    pub(super) fn new(pool: Pool) -> Self {
        Outbox {
            batcher: Arc::new(Batcher::new(pool.clone())),
            pool,
            claimer: super::random_id(12).into(),
        }
    }

    /// How many transactions the group commit of `merge` and `insert_new`
    /// took for how many rows, through this handle and its clones.
    pub fn commit_stats(&self) -> CommitStats {
        self.batcher.stats()
    }

    /// This handle's claimer id (as written in `claimed_by`).
    pub fn claimer(&self) -> &str {
        &self.claimer
    }

    /// Folds a publish (read from the stream at `received_us`) into the
    /// node's row, or writes a new row due at `due_at_ms`. A merge keeps
    /// the row's due time (a row backing off from a failing provider is not
    /// hurried by more publishes), takes the newest summary unless it would
    /// replace an important summary with a silent one, extends the time to
    /// live, takes the newest `device` (a stateless push's, `None` for a
    /// registered device), and bumps `seq`, which it returns.
    pub async fn merge(
        &self,
        node: &str,
        notification: &Notification,
        device: Option<&Registration>,
        received_us: i64,
        due_at_ms: i64,
        expires_at: i64,
    ) -> Result<i64, StoreError> {
        let sql = concat!(
            insert_row!(),
            " ON CONFLICT (node) DO UPDATE SET \
               notification = CASE WHEN excluded.important > outbox.important \
                 OR (excluded.important = outbox.important AND excluded.received_us > outbox.received_us) \
                 THEN excluded.notification ELSE outbox.notification END, \
               received_us = CASE WHEN excluded.important > outbox.important \
                 OR (excluded.important = outbox.important AND excluded.received_us > outbox.received_us) \
                 THEN excluded.received_us ELSE outbox.received_us END, \
               important = CASE WHEN excluded.important > outbox.important THEN excluded.important ELSE outbox.important END, \
               seq = outbox.seq + 1, \
               expires_at = excluded.expires_at, \
               device = excluded.device \
             RETURNING seq"
        );
        let row = row_write(
            sql,
            node,
            notification,
            device,
            received_us,
            due_at_ms,
            expires_at,
            None,
        );
        let seq = self.batcher.write(row).await?;
        // The upsert returns a row either way.
        Ok(seq.unwrap_or_default())
    }

    /// Writes a row only if the node has none; returns the new row's `seq`,
    /// or `None` when a row was there (it already holds newer publishes,
    /// merged while this push was out). The row is written claimed by this
    /// handle: its push is out (due at the claim time) or is being settled
    /// by the caller ([`Outbox::retry_at`] then releases it). `device` as
    /// for [`Outbox::merge`].
    pub async fn insert_new(
        &self,
        node: &str,
        notification: &Notification,
        device: Option<&Registration>,
        received_us: i64,
        due_at_ms: i64,
        expires_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let sql = concat!(
            insert_row!(),
            " ON CONFLICT (node) DO NOTHING RETURNING seq"
        );
        let row = row_write(
            sql,
            node,
            notification,
            device,
            received_us,
            due_at_ms,
            expires_at,
            Some(self.claimer.clone()),
        );
        self.batcher.write(row).await
    }

    /// The node's row, if any.
    pub async fn get(&self, node: &str) -> Result<Option<QueuedPush>, StoreError> {
        let sql = concat!("SELECT ", outbox_columns!(), " FROM outbox WHERE node = $1");
        let row: Option<Row_> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql).bind(node).fetch_optional(p).await?
        });
        Ok(row.map(QueuedPush::from))
    }

    /// Claims up to `limit` rows due at `now_ms`, the most overdue first,
    /// until `until_ms`: one statement moves their due time there and
    /// writes this claimer into them, and returns them (with their current
    /// `seq`, and `due_at_ms` = `until_ms`, in no particular order).
    ///
    /// On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED` in a
    /// materialized CTE: two instances claiming at once get disjoint rows
    /// without waiting on each other (a row the other has claimed and
    /// committed meanwhile is no longer due when it is re-checked), and
    /// the limit holds (as a plain `IN (subquery)` it need not: the planner
    /// may scan the subquery more than once, and each scan skips other
    /// rows). SQLite has one writer, so the plain statement is atomic.
    pub async fn claim_due(
        &self,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<QueuedPush>, StoreError> {
        let sql = match &self.pool {
            Pool::Sqlite(_) => concat!(
                "UPDATE outbox SET due_at_ms = $2, claimed_by = $4 WHERE node IN \
                 (SELECT node FROM outbox WHERE due_at_ms <= $1 ORDER BY due_at_ms LIMIT $3) \
                 RETURNING ",
                outbox_columns!()
            ),
            Pool::Postgres(_) => concat!(
                "WITH picked AS MATERIALIZED \
                 (SELECT node FROM outbox WHERE due_at_ms <= $1 ORDER BY due_at_ms LIMIT $3 \
                  FOR UPDATE SKIP LOCKED) \
                 UPDATE outbox SET due_at_ms = $2, claimed_by = $4 \
                 WHERE node IN (SELECT node FROM picked) RETURNING ",
                outbox_columns!()
            ),
        };
        let rows: Vec<Row_> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(now_ms)
                .bind(until_ms)
                .bind(limit)
                .bind(&*self.claimer)
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().map(QueuedPush::from).collect())
    }

    /// Claims one known row until `until_ms`, before it is due (an early
    /// try): false when a publish was merged into it since it was read
    /// (`seq` changed), it went, or another claimer holds it at `now_ms`
    /// (that instance is sending it right now; a row merely backing off is
    /// taken).
    pub async fn claim(
        &self,
        node: &str,
        seq: i64,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = concat!(
            "UPDATE outbox SET due_at_ms = $3, claimed_by = $4 WHERE node = $1 AND seq = $2 AND ",
            not_claimed_by_another!("$4", "$5")
        );
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .bind(seq)
                .bind(until_ms)
                .bind(&*self.claimer)
                .bind(now_ms)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// The push with `seq` was delivered: removes the row unless a publish
    /// was merged into it meanwhile (then it is still owed, and false is
    /// returned).
    pub async fn delivered(&self, node: &str, seq: i64) -> Result<bool, StoreError> {
        let sql = "DELETE FROM outbox WHERE node = $1 AND seq = $2";
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .bind(seq)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// An attempt failed: counts it, sets the next due time and releases
    /// this claimer's claim. A row another claimer holds is left to it.
    pub async fn retry_at(
        &self,
        node: &str,
        attempts: u32,
        due_at_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let sql = concat!(
            "UPDATE outbox SET attempts = $2, due_at_ms = $3, last_error = $4, claimed_by = '' \
             WHERE node = $1 AND ",
            not_claimed_by_another!("$5", "$6")
        );
        on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .bind(i64::from(attempts))
                .bind(due_at_ms)
                .bind(error)
                .bind(&*self.claimer)
                .bind(super::now_ms())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Moves the node's row to be due at `due_at_ms` (no attempt counted)
    /// and releases this claimer's claim. A row another claimer holds is
    /// left to it: its send's end reschedules it.
    pub async fn reschedule(&self, node: &str, due_at_ms: i64) -> Result<(), StoreError> {
        let sql = concat!(
            "UPDATE outbox SET due_at_ms = $2, claimed_by = '' WHERE node = $1 AND ",
            not_claimed_by_another!("$3", "$4")
        );
        on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .bind(due_at_ms)
                .bind(&*self.claimer)
                .bind(super::now_ms())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Drops the node's row whatever it holds (registration gone, push
    /// rejected); true when there was one.
    pub async fn remove(&self, node: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM outbox WHERE node = $1";
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(node)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Drops the rows whose time to live ran out before `now`; returns
    /// them for the log.
    pub async fn expire(&self, now: i64) -> Result<Vec<ExpiredPush>, StoreError> {
        let sql = "DELETE FROM outbox WHERE expires_at < $1 \
                   RETURNING node, attempts, CASE WHEN device IS NULL THEN 0 ELSE 1 END";
        let rows: Vec<(String, i64, i32)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql).bind(now).fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|(node, attempts, stateless)| ExpiredPush {
                node,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                stateless: stateless != 0,
            })
            .collect())
    }

    /// Every node with a row, for the dispatcher to know at start-up.
    pub async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT node FROM outbox";
        let rows: Vec<(String,)> =
            on_pool!(&self.pool, |p| { sqlx::query_as(sql).fetch_all(p).await? });
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// How many rows wait, and since when.
    pub async fn summary(&self) -> Result<OutboxSummary, StoreError> {
        let sql = "SELECT COUNT(*), MIN(created_at) FROM outbox";
        let (queued, oldest): (i64, Option<i64>) =
            on_pool!(&self.pool, |p| { sqlx::query_as(sql).fetch_one(p).await? });
        Ok(OutboxSummary {
            queued,
            oldest_created_at: oldest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stateless_device_survives_the_round_trip() {
        let reg = Registration {
            node: "a1b2".repeat(16),
            secret: None,
            owner: "capulet.lit".into(),
            domain: "capulet.lit".into(),
            device_id: String::new(),
            muc: String::new(),
            app: "ios".into(),
            token: "a1b2".repeat(16),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            dialect: "mongooseim".into(),
            second_token: String::new(),
            environment: "sandbox".into(),
            options: PushOptions {
                topic: Some("org.example.app.voip".into()),
                silent: Some(false),
                high_priority: Some(true),
                sound: Some("bell.caf".into()),
                mutable_content: Some(true),
                ttl_secs: Some(60),
            },
        };
        let json = encode_device(&reg);
        // The options' keys stand inline, as rows written so far have them.
        assert!(json.contains("\"ttl_secs\":60"), "{json}");
        assert_eq!(decode_device(&reg.node, &json), Some(reg.clone()));
        assert_eq!(decode_device(&reg.node, "not json"), None);
    }

    #[test]
    fn summaries_survive_the_round_trip() {
        let n = Notification {
            message_count: Some(3),
            last_message_sender: Some("juliet@capulet.example/balcony".into()),
            last_message_body: Some("Wherefore art thou?".into()),
            fields: vec![("message-count".into(), "3".into())],
            encrypted: Some(nudge_plugins::EncryptedPayload {
                data: "c2VjcmV0".into(),
                iv: "aXY=".into(),
            }),
            call: Some(nudge_plugins::Call {
                sid: Some("a73sjjvkla37jfea".into()),
                media: vec!["audio".into()],
            }),
        };
        assert_eq!(decode(&encode(&n)), n);
        assert_eq!(decode("not json"), Notification::default());
    }
}
