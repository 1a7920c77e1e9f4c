//! Versions never go back (issue 23, scenario 3; decision 0009): after a failover of the
//! records database to a standby that lacked transactions, or a restore from a backup, the
//! version sequence resumes below versions the stream already carries, and replicas would drop
//! the next changes as stale.
//!
//! The stream remembers the highest version relayed (`<stream>:versions`, raised by every
//! batch's script). At the start of every session the relay compares the table's sequence
//! with it; when the sequence is behind, it raises the sequence past it, records that point as
//! the **version floor** (`eligd_relay_fence.version_floor`), and starts a new stream epoch so
//! that replicas resync from a snapshot of the table as it now is (what they held from the
//! lost transactions is not in it). Any pending row drawn below the floor (before the raise,
//! including transactions in flight then) is re-versioned through the table's triggers
//! instead of being relayed.

use tokio_postgres::Client;

use super::outbox::OutboxRow;
use crate::feed::stream::{StreamError, StreamReader};

/// The Redis key holding the highest version relayed to `stream`.
pub fn key(stream: &str) -> String {
    format!("{stream}:versions")
}

/// The highest version the stream carries (0 when none was recorded).
pub async fn relayed(reader: &mut StreamReader) -> Result<i64, StreamError> {
    let key = key(reader.key());
    let reply = reader
        .connection()
        .command(&[b"GET", key.as_bytes()], crate::resp::COMMAND_TIMEOUT)
        .await?;
    Ok(reply
        .bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The newest version the sequence has handed out (0 before the first), and the version
/// floor recorded for `stream` (see [`raise_versions`]).
pub async fn versions(client: &Client, stream: &str) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM member_version_seq), \
             COALESCE((SELECT version_floor FROM eligd_relay_fence WHERE stream = $1), 0)",
            &[&stream],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The table is behind the stream (its sequence below `relayed`, the highest version the
/// stream carries): raises the sequence past it and records the point as the version floor,
/// in one statement. Returns the floor: every version drawn from now on is at least that.
pub async fn raise_versions(
    client: &Client,
    stream: &str,
    relayed: i64,
) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "WITH s AS (SELECT setval('member_version_seq', GREATEST($2, \
                 (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM member_version_seq))) AS v), \
             u AS (UPDATE eligd_relay_fence SET version_floor = GREATEST(version_floor, (SELECT v FROM s) + 1) \
                 WHERE stream = $1) \
             SELECT v + 1 FROM s",
            &[&stream, &relayed],
        )
        .await?
        .try_get(0)
}

/// Gives a pending row drawn below the version floor a new version through the table's own
/// triggers, in one statement: an upsert whose row is still current is re-written (the
/// trigger draws a version above the floor and writes a new outbox row), a delete of a person
/// still absent is written again with a new version (and its marker); the old row is removed
/// either way (never relayed: a replica holding a newer version from before a failover would
/// drop it as stale).
pub async fn reversion(client: &Client, row: &OutboxRow) -> Result<(), tokio_postgres::Error> {
    if row.op == "delete" {
        client
            .query_one(
                "WITH v AS (SELECT nextval('member_version_seq') AS v \
                     WHERE NOT EXISTS (SELECT 1 FROM members WHERE national_id = $1)), \
                 o AS (INSERT INTO member_outbox (national_id, op, version) SELECT $1, 'delete', v FROM v), \
                 m AS (SELECT eligd_mark_deleted($1, v) FROM v), \
                 d AS (DELETE FROM member_outbox WHERE id = $2) \
                 SELECT count(*) FROM m",
                &[&row.national_id, &row.id],
            )
            .await?;
    } else {
        client
            .execute(
                "WITH t AS (UPDATE members SET updated_at = now() WHERE national_id = $1 AND version = $2 RETURNING 1) \
                 DELETE FROM member_outbox WHERE id = $3",
                &[&row.national_id, &row.version, &row.id],
            )
            .await?;
    }
    Ok(())
}
