//! Versions never go back (issue 23, scenario 3; decision 0009): after a failover of the
//! records database to a standby that lacked transactions, or a restore from a backup, the
//! version sequence resumes below versions the stream already carries, and replicas would drop
//! the next changes as stale.
//!
//! The stream remembers the highest version relayed (`<stream>:versions`, raised by every
//! batch's script). At the start of every session the relay compares the highest version the
//! table has committed with it (not the sequence: PostgreSQL logs a sequence 32 values ahead,
//! so a promoted standby's sequence can be past versions it never committed). When the table
//! is behind, it raises the sequence past it, records the **version floor**
//! (`eligd_relay_fence.version_floor`) and that a new epoch is owed, and starts a new stream
//! epoch so that replicas resync from a snapshot of the table as it now is (what they held
//! from the lost transactions is not in it); the debt is cleared only once the new epoch is
//! recorded. Any pending row drawn below the floor (before the raise, including transactions
//! in flight then) is re-versioned instead of being relayed: an upsert through the table's
//! triggers, a delete with a version from a reserve kept between the highest relayed and the
//! floor, so that anything drawn after the raise outranks it.

use tokio_postgres::Client;

use super::outbox::OutboxRow;
use crate::feed::stream::{StreamError, StreamReader};

/// The Redis key holding the highest version relayed to `stream`.
pub fn key(stream: &str) -> String {
    format!("{stream}:versions")
}

/// The highest version the stream carries (0 when none was recorded); a value that is not a
/// version is a clear error naming the key.
pub async fn relayed(reader: &mut StreamReader) -> Result<i64, StreamError> {
    let key = key(reader.key());
    let reply = reader
        .connection()
        .command(&[b"GET", key.as_bytes()], crate::redis::COMMAND_TIMEOUT)
        .await?;
    let Some(bytes) = reply.bytes() else {
        return Ok(0);
    };
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StreamError::Frame {
            command: "GET",
            detail: format!("{key} does not hold a version (digits); delete it"),
        })
}

/// What the records database says about versions.
pub struct InTable {
    /// The highest version committed: in `members`, the delete markers, the outbox.
    pub committed: i64,
    /// Pending rows below this are re-versioned, not relayed (0: none).
    pub floor: i64,
    /// A new stream epoch is owed (the table was found behind, the epoch not yet replaced).
    pub epoch_owed: bool,
}

/// Reads [`InTable`] for `stream` (index lookups: `members_by_version` and the markers').
pub async fn in_table(client: &Client, stream: &str) -> Result<InTable, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT GREATEST((SELECT max(version) FROM members), \
                 (SELECT max(version) FROM eligd_deleted_members), \
                 (SELECT max(version) FROM member_outbox), \
                 (SELECT reserve_next - 1 FROM eligd_relay_fence WHERE stream = $1), 0), \
             COALESCE((SELECT version_floor FROM eligd_relay_fence WHERE stream = $1), 0), \
             COALESCE((SELECT epoch_owed FROM eligd_relay_fence WHERE stream = $1), false)",
            &[&stream],
        )
        .await?;
    Ok(InTable {
        committed: row.try_get(0)?,
        floor: row.try_get(1)?,
        epoch_owed: row.try_get(2)?,
    })
}

/// Versions kept between the highest relayed and the floor for re-versioned deletes.
pub const RESERVED: i64 = 1_000_000_000;

/// The table is behind the stream (its highest committed version below `relayed`, the highest
/// the stream carries): on a connection of its own (`repair`), in one transaction that keeps
/// writers of `members` out (so no version is drawn meanwhile and `setval` never goes below a
/// version just drawn), raises the sequence to the floor (`relayed` + 1 + [`RESERVED`]) and
/// records the floor, the reserve and that a new epoch is owed. Returns the floor.
pub async fn raise(
    repair: &mut Client,
    stream: &str,
    relayed: i64,
) -> Result<i64, tokio_postgres::Error> {
    let floor = relayed + 1 + RESERVED;
    let tx = repair.transaction().await?;
    tx.batch_execute("LOCK TABLE members IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    tx.execute(
        "SELECT setval('member_version_seq', GREATEST($1::bigint, \
             (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM member_version_seq)))",
        &[&(floor - 1)],
    )
    .await?;
    tx.execute(
        "UPDATE eligd_relay_fence SET version_floor = $2::bigint, reserve_next = $3::bigint, epoch_owed = true \
         WHERE stream = $1::text AND version_floor < $2::bigint",
        &[&stream, &floor, &(relayed + 1)],
    )
    .await?;
    tx.commit().await?;
    Ok(floor)
}

/// The new epoch owed is recorded: clear the debt.
pub async fn epoch_paid(client: &Client, stream: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE eligd_relay_fence SET epoch_owed = false WHERE stream = $1",
            &[&stream],
        )
        .await?;
    Ok(())
}

/// Gives a pending row drawn below the version floor a new version, in one transaction on
/// the `repair` connection: an upsert whose row is still current is re-written through the
/// table (its trigger draws a version above the floor and writes a new outbox row); a delete
/// of a person still absent is written again with the next reserved version (above every
/// version relayed, below any drawn since the raise: an insert of that person still
/// uncommitted outranks it whenever it commits), and its marker. The old row is removed either
/// way (never relayed: a replica holding a newer version from before a failover would drop
/// it as stale).
pub async fn reversion(
    repair: &mut Client,
    stream: &str,
    row: &OutboxRow,
) -> Result<(), tokio_postgres::Error> {
    let tx = repair.transaction().await?;
    if row.op == "delete" {
        tx.query_one(
            "WITH r AS (UPDATE eligd_relay_fence SET reserve_next = reserve_next + 1 \
                 WHERE stream = $2::text AND reserve_next < version_floor \
                 AND NOT EXISTS (SELECT 1 FROM members WHERE national_id = $1::text) \
                 RETURNING reserve_next - 1 AS v), \
             o AS (INSERT INTO member_outbox (national_id, op, version) SELECT $1::text, 'delete', v FROM r), \
             m AS (SELECT eligd_mark_deleted($1::text, v) FROM r) \
             SELECT count(*) FROM m",
            &[&row.national_id, &stream],
        )
        .await?;
    } else {
        tx.execute(
            "UPDATE members SET updated_at = now() WHERE national_id = $1 AND version = $2",
            &[&row.national_id, &row.version],
        )
        .await?;
    }
    tx.execute("DELETE FROM member_outbox WHERE id = $1", &[&row.id])
        .await?;
    tx.commit().await?;
    Ok(())
}
