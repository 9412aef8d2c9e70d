//! Registrations written straight into Nudge's SQLite file before it starts,
//! so that a million of them take seconds instead of a million ad-hoc
//! commands. The schema comes from Nudge itself (`nudge migrate`, run by
//! `crate::external` first; `migrations/sqlite/` holds it); the rows are
//! made inside SQLite by one `INSERT … SELECT` over a recursive counter.
//!
//! Every device's node, secret and token follow from its index
//! ([`node`], [`secret`], [`token`]), so the harness needs no table of them
//! and an APNs request's token names the device it was for.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The account domain of every seeded registration (the `from` of the
/// publishes; Nudge accepts a publish only from its registration's domain).
pub const ACCOUNT_DOMAIN: &str = "localhost";

/// The pubsub node of device `i`.
pub fn node(i: u32) -> String {
    format!("bench-node-{i}")
}

/// The publish-options secret of device `i`.
pub fn secret(i: u32) -> String {
    format!("bench-secret-{i}")
}

/// The APNs token of device `i`: 64 hex digits, `i + 1` (never all zeros).
pub fn token(i: u32) -> String {
    format!("{:064x}", u64::from(i) + 1)
}

/// The device whose APNs token this is, if it is one of [`token`]'s.
pub fn device_of_token(token: &str) -> Option<u32> {
    if token.len() != 64 {
        return None;
    }
    u64::from_str_radix(token.trim_start_matches('0'), 16)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|n| u32::try_from(n).ok())
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
#[error("seeding {path}: {source}")]
pub struct SeedError {
    path: String,
    source: sqlx::Error,
}

/// Inserts devices `0..count` of app `app` into the (migrated) SQLite
/// database at `db`.
pub async fn seed(db: &Path, app: &str, count: u32) -> Result<(), SeedError> {
    let err = |source| SeedError {
        path: db.display().to_string(),
        source,
    };
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .map_err(err)?
        .connect()
        .await
        .map_err(err)?;
    if count == 0 {
        return conn.close().await.map_err(err);
    }
    // The same strings as node(), secret(), token() above: SQLite's
    // printf('%064x') is Rust's {:064x}.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
         INSERT INTO registrations \
           (node, secret, owner, domain, device_id, muc, app, token, created_at, updated_at) \
         SELECT 'bench-node-' || i, 'bench-secret-' || i, 'user' || i || '@' || $2, $2, \
                'dev' || i, '', $3, printf('%064x', i + 1), unixepoch(), unixepoch() FROM n",
    )
    .bind(i64::from(count))
    .bind(ACCOUNT_DOMAIN)
    .bind(app)
    .execute(&mut conn)
    .await
    .map_err(err)?;
    // As a database an operator stopped cleanly: the rows in the main file,
    // not in a write-ahead log Nudge would have to read at start-up.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(err)?;
    conn.close().await.map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_its_device() {
        for i in [0, 1, 15, 16, 999_999, u32::MAX - 1] {
            assert_eq!(device_of_token(&token(i)), Some(i));
        }
        assert_eq!(device_of_token("abc"), None);
        assert_eq!(device_of_token(&"0".repeat(64)), None);
        assert_eq!(device_of_token(&"z".repeat(64)), None);
    }
}
