//! What the brake on mass removal (`dispatch/brake.rs`) keeps in the
//! database: when it engaged for an app and when an operator released it
//! (so that `nudge brake release`, a separate process, reaches the running
//! service), and the removals it held back, for the operator to apply.

use super::{Pool, StoreError};

/// A removal the brake held back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HeldRemoval {
    /// The registration that would have been removed.
    pub node: String,
    /// Its app.
    pub app: String,
    /// The token the provider called dead.
    pub token: String,
    /// The provider's reason.
    pub reason: String,
    /// When it was held (epoch seconds).
    pub held_at: i64,
}

/// The brake's state for one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct BrakeRecord {
    /// When it last engaged (epoch seconds).
    pub engaged_at: i64,
    /// When an operator last released it (epoch seconds; 0: never).
    pub released_at: i64,
}

/// The brake's tables; cheap to clone.
#[derive(Debug, Clone)]
pub struct BrakeStore {
    pool: Pool,
}

impl BrakeStore {
    pub(super) fn new(pool: Pool) -> Self {
        BrakeStore { pool }
    }

    /// Records that the brake engaged for `app` at `at`.
    pub async fn engage(&self, app: &str, at: i64) -> Result<(), StoreError> {
        let sql = "INSERT INTO removal_brake (app, engaged_at, released_at) VALUES ($1, $2, 0) \
                   ON CONFLICT (app) DO UPDATE SET engaged_at = excluded.engaged_at";
        on_pool!(&self.pool, |p| {
            sqlx::query(sql).bind(app).bind(at).execute(p).await?;
        });
        Ok(())
    }

    /// The app's record, if the brake ever engaged for it.
    pub async fn record(&self, app: &str) -> Result<Option<BrakeRecord>, StoreError> {
        let sql = "SELECT engaged_at, released_at FROM removal_brake WHERE app = $1";
        let r = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql).bind(app).fetch_optional(p).await?
        });
        Ok(r)
    }

    /// Every app's record, by app.
    pub async fn records(&self) -> Result<Vec<(String, BrakeRecord)>, StoreError> {
        let sql = "SELECT app, engaged_at, released_at FROM removal_brake ORDER BY app";
        let rows: Vec<(String, i64, i64)> =
            on_pool!(&self.pool, |p| sqlx::query_as(sql).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(app, engaged_at, released_at)| {
                (
                    app,
                    BrakeRecord {
                        engaged_at,
                        released_at,
                    },
                )
            })
            .collect())
    }

    /// Records a removal held back (the newest verdict per node wins).
    pub async fn hold(&self, held: &HeldRemoval) -> Result<(), StoreError> {
        let sql = "INSERT INTO held_removals (node, app, token, reason, held_at) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (node) DO UPDATE SET token = excluded.token, reason = excluded.reason, held_at = excluded.held_at";
        on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(&held.node)
                .bind(&held.app)
                .bind(&held.token)
                .bind(&held.reason)
                .bind(held.held_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The removals held back for `app` (every app's when `None`).
    pub async fn held(&self, app: Option<&str>) -> Result<Vec<HeldRemoval>, StoreError> {
        let sql = "SELECT node, app, token, reason, held_at FROM held_removals \
                   WHERE ($1 IS NULL OR app = $1) ORDER BY app, held_at, node";
        let rows = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql).bind(app).fetch_all(p).await?
        });
        Ok(rows)
    }

    /// Releases the brake for `app` at `at` and forgets its held removals
    /// (returning them, for the caller to apply or report).
    pub async fn release(&self, app: &str, at: i64) -> Result<Vec<HeldRemoval>, StoreError> {
        let held = self.held(Some(app)).await?;
        let release = "INSERT INTO removal_brake (app, engaged_at, released_at) VALUES ($1, 0, $2) \
                       ON CONFLICT (app) DO UPDATE SET released_at = excluded.released_at";
        let forget = "DELETE FROM held_removals WHERE app = $1";
        on_pool!(&self.pool, |p| {
            sqlx::query(release).bind(app).bind(at).execute(p).await?;
            sqlx::query(forget).bind(app).execute(p).await?;
        });
        Ok(held)
    }
}
