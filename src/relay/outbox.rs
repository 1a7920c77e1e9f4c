//! The PostgreSQL side of the relay: a connection that hears `eligd_outbox` notifications,
//! the advisory lock that keeps one relay active at a time, and the outbox reads and writes.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::feed::native::NativeEvent;
use crate::index::{FeedPosition, StreamEpoch};
use crate::member::Member;
use crate::national_id::NationalId;
use crate::pg::PgTarget;
use crate::redact::redact;

/// The lock every relay of a database tries to hold: one moves rows, others stand by.
const RELAY_LOCK: i64 = 0x656C_6967_6472_6C79; // "eligdrly"

/// One pending outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub national_id: String,
    pub op: String,
    pub version: i64,
    pub member: Option<String>,
}

/// Connects, starts listening for notifications, and returns the client and a channel that
/// receives one message per notification. The channel closes when the connection ends.
pub async fn connect(
    target: &PgTarget,
) -> Result<(Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error> {
    // A password file is read again here, for every connection (a rotated Secret).
    let mut config = target.config();
    // A database that stops answering (rather than closing) must end the session within
    // seconds, so the relay reconnects and a standby can take the lock; TCP's defaults wait
    // hours.
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let (tx, rx) = mpsc::unbounded_channel();
    let client = match &target.tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            tokio::spawn(forward_notifications(connection, tx));
            client
        }
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(forward_notifications(connection, tx));
            client
        }
    };
    // The relay's own commits (marking relayed rows) need not wait for the WAL flush: if
    // PostgreSQL loses them in a crash, those rows are relayed again, which versions make
    // harmless. The changes themselves were committed durably by the writers.
    client
        .batch_execute(
            "SET synchronous_commit = off; SET statement_timeout = '30s'; LISTEN eligd_outbox",
        )
        .await?;
    Ok((client, rx))
}

/// Drives the connection, sending one message per notification, until it ends.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: mpsc::UnboundedSender<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                let _ = tx.send(());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "relay: PostgreSQL connection ended");
                break;
            }
            None => break,
        }
    }
}

/// The server's own message when there is one (tokio-postgres says only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Takes the relay lock if no other session holds it.
pub async fn try_lock(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK])
        .await?;
    row.try_get(0)
}

/// Draws this session's fencing token: one more than the last relay lock holder's (the first
/// is 1). Call it holding the lock; every stream write then carries it (`fence.rs`).
pub async fn draw_token(client: &Client, stream: &str) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "INSERT INTO eligd_relay_fence (stream, token) VALUES ($1, 1) \
             ON CONFLICT (stream) DO UPDATE SET token = eligd_relay_fence.token + 1 RETURNING token",
            &[&stream],
        )
        .await?
        .try_get(0)
}

/// Raises the token past `seen` (a fence in Redis newer than the table's: the records
/// database failed over to a standby, or was restored, without the latest token). Only the
/// holder of the relay lock calls this.
pub async fn raise_token(
    client: &Client,
    stream: &str,
    seen: i64,
) -> Result<i64, tokio_postgres::Error> {
    client
        .query_one(
            "UPDATE eligd_relay_fence SET token = GREATEST(token, $2) + 1 WHERE stream = $1 RETURNING token",
            &[&stream, &seen],
        )
        .await?
        .try_get(0)
}

/// Removes delete markers older than `keep_secs` (the stream no longer holds an upsert older
/// than them), except the newest (it keeps the table's highest committed version at least
/// that of the last delete relayed, `versions.rs`); returns how many.
pub async fn prune_markers(client: &Client, keep_secs: u64) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM eligd_deleted_members WHERE deleted_at < clock_timestamp() - make_interval(secs => $1) \
             AND version < (SELECT max(version) FROM eligd_deleted_members)",
            &[&(keep_secs as f64)],
        )
        .await
}

/// The oldest rows not yet relayed, in id order.
pub async fn pending(client: &Client, limit: i64) -> Result<Vec<OutboxRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, national_id, op, version, member::text FROM member_outbox \
             WHERE rejected IS NULL AND relayed_id IS NULL ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await?;
    rows.iter().map(row_of).collect()
}

fn row_of(r: &tokio_postgres::Row) -> Result<OutboxRow, tokio_postgres::Error> {
    Ok(OutboxRow {
        id: r.try_get(0)?,
        national_id: r.try_get(1)?,
        op: r.try_get(2)?,
        version: r.try_get(3)?,
        member: r.try_get(4)?,
    })
}

/// Kept rows written under stream IDs after `after`, in stream order, with their IDs.
pub async fn kept_after(
    client: &Client,
    after: FeedPosition,
) -> Result<Vec<(FeedPosition, OutboxRow)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, national_id, op, version, member::text, relayed_id FROM member_outbox \
             WHERE relayed_id IS NOT NULL AND eligd_stream_id(relayed_id) > eligd_stream_id($1) \
             ORDER BY eligd_stream_id(relayed_id)",
            &[&after.to_string()],
        )
        .await?;
    let mut kept = Vec::with_capacity(rows.len());
    for r in &rows {
        let relayed: String = r.try_get(5)?;
        match relayed.parse() {
            Ok(id) => kept.push((id, row_of(r)?)),
            Err(_) => tracing::warn!(
                outbox_id = r.try_get::<_, i64>(0)?,
                "relay: a kept row's relayed_id is not a stream ID; skipped"
            ),
        }
    }
    Ok(kept)
}

/// Marks relayed rows up to stream entry `upto` replicated: a `WAIT` confirmed the
/// replicas hold everything written up to there.
pub async fn mark_replicated(
    client: &Client,
    upto: FeedPosition,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE member_outbox SET replicated = true WHERE relayed_id IS NOT NULL AND NOT replicated \
             AND eligd_stream_id(relayed_id) <= eligd_stream_id($1)",
            &[&upto.to_string()],
        )
        .await
}

/// Deletes kept rows that are replicated and older than `keep_secs`, and remembers the
/// newest stream ID so deleted: a Redis that lost entries up to there can no longer get them
/// back from us. One statement, so the two never disagree.
pub async fn prune(
    client: &Client,
    stream: &str,
    keep_secs: u64,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "WITH pruned AS (DELETE FROM member_outbox WHERE relayed_id IS NOT NULL AND replicated \
                 AND relayed_at < clock_timestamp() - make_interval(secs => $2) RETURNING relayed_id), \
             top AS (SELECT relayed_id FROM pruned ORDER BY eligd_stream_id(relayed_id) DESC LIMIT 1), \
             moved AS (UPDATE eligd_relay_state s SET pruned_id = top.relayed_id FROM top \
                 WHERE s.stream = $1 AND eligd_stream_id(top.relayed_id) > eligd_stream_id(s.pruned_id)) \
             SELECT count(*) FROM pruned",
            &[&stream, &(keep_secs as f64)],
        )
        .await?;
    row.try_get(0)
}

/// Marks rows relayed under their stream IDs (kept, not deleted: see [`prune`]) and, in
/// the same statement, remembers the newest entry written and its epoch (see
/// [`super::epoch`]).
pub async fn mark_relayed(
    client: &Client,
    written: &[(i64, FeedPosition)],
    replicated: bool,
    stream: &str,
    epoch: StreamEpoch,
    last_written: FeedPosition,
) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<i64> = written.iter().map(|(id, _)| *id).collect();
    let stream_ids: Vec<String> = written.iter().map(|(_, p)| p.to_string()).collect();
    client
        .execute(
            "WITH relayed AS (UPDATE member_outbox o SET relayed_id = r.sid, \
                 relayed_at = clock_timestamp(), replicated = $3 \
                 FROM unnest($1::bigint[], $2::text[]) AS r(id, sid) WHERE o.id = r.id) \
             INSERT INTO eligd_relay_state (stream, epoch, last_id) VALUES ($4, $5, $6) \
             ON CONFLICT (stream) DO UPDATE SET epoch = $5, last_id = $6, updated_at = now()",
            &[
                &ids,
                &stream_ids,
                &replicated,
                &stream,
                &epoch.to_string(),
                &last_written.to_string(),
            ],
        )
        .await
}

/// What the relay remembered of `stream` (`None` when nothing, or nothing readable).
pub async fn recorded(
    client: &Client,
    stream: &str,
) -> Result<Option<super::epoch::Recorded>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT epoch, last_id, pruned_id FROM eligd_relay_state WHERE stream = $1",
            &[&stream],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (epoch, last, pruned): (String, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(match (epoch.parse(), last.parse(), pruned.parse()) {
        (Ok(epoch), Ok(last_written), Ok(pruned_through)) => Some(super::epoch::Recorded {
            epoch,
            last_written,
            pruned_through,
        }),
        _ => {
            tracing::warn!(
                "relay: eligd_relay_state holds values eligd did not write; starting afresh"
            );
            None
        }
    })
}

/// Remembers the epoch a session writes under. A new epoch starts afresh: nothing written,
/// nothing pruned, and the rows kept for the old stream are deleted (they belong to it).
pub async fn record_epoch(
    client: &Client,
    stream: &str,
    epoch: StreamEpoch,
) -> Result<u64, tokio_postgres::Error> {
    let epoch = epoch.to_string();
    let changed = client
        .execute(
            "UPDATE eligd_relay_state SET epoch = $2, last_id = '0-0', pruned_id = '0-0', \
             updated_at = now() WHERE stream = $1 AND epoch <> $2",
            &[&stream, &epoch],
        )
        .await?;
    if changed > 0 {
        client
            .execute(
                "DELETE FROM member_outbox WHERE relayed_id IS NOT NULL",
                &[],
            )
            .await?;
    }
    client
        .execute(
            "INSERT INTO eligd_relay_state (stream, epoch, last_id) VALUES ($1, $2, '0-0') \
             ON CONFLICT (stream) DO NOTHING",
            &[&stream, &epoch],
        )
        .await
}

/// Marks a row the relay refuses, with the reason, so it is reported and never retried.
pub async fn reject(client: &Client, id: i64, reason: &str) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE member_outbox SET rejected = $2 WHERE id = $1",
            &[&id, &reason],
        )
        .await
}

/// Rows waiting to be relayed, and the age in seconds of the oldest (the pending rows'
/// partial index: cheap however many relayed rows are kept).
pub async fn backlog(client: &Client) -> Result<(i64, f64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8, 0) \
             FROM member_outbox WHERE rejected IS NULL AND relayed_id IS NULL",
            &[],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Relayed rows still kept (counted when pruning, not every few seconds: there may be
/// an hour's worth).
pub async fn kept(client: &Client) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM member_outbox WHERE relayed_id IS NOT NULL",
            &[],
        )
        .await?;
    row.try_get(0)
}

/// The native event for a row, or why the row breaks the record rules. The reason never
/// carries the national ID.
pub fn to_event(row: &OutboxRow) -> Result<NativeEvent, String> {
    let id = NationalId::parse(&row.national_id).map_err(|e| format!("national_id: {e}"))?;
    let version = u64::try_from(row.version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or("version: must be a positive integer")?;
    match row.op.as_str() {
        "delete" => Ok(NativeEvent::delete(id, version)),
        "upsert" => {
            let json = row
                .member
                .as_deref()
                .ok_or("member: missing on an upsert")?;
            let member = Member::from_json(json).map_err(|e| redact(&e.to_string()))?;
            if member.national_id != id || member.version != version {
                return Err("member: national_id or version differs from the outbox row".into());
            }
            Ok(NativeEvent::upsert(&member))
        }
        _ => Err("op: must be upsert or delete".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: &str, member: Option<&str>) -> OutboxRow {
        OutboxRow {
            id: 1,
            national_id: "0012345679".into(),
            op: op.into(),
            version: 4,
            member: member.map(str::to_string),
        }
    }

    const MEMBER: &str = r#"{"kind": "main", "scheme": "mandatory", "status": "active", "version": 4, "relation": null, "services": ["pharmacy"], "booklet_no": null, "national_id": "0012345679", "display_name": "Sara Ahmadi", "coverage_until": "2027-01-01", "other_insurers": [], "main_national_id": null, "special_conditions": []}"#;

    #[test]
    fn an_upsert_row_becomes_a_native_event_with_the_canonical_record() {
        let event = to_event(&row("upsert", Some(MEMBER))).unwrap();
        let names: Vec<&str> = event.fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["op", "national_id", "version", "member"]);
        assert_eq!(event.fields[0].1, "upsert");
        let member = Member::from_json(&event.fields[3].1).unwrap();
        assert_eq!(member, Member::from_json(MEMBER).unwrap());
    }

    #[test]
    fn a_delete_row_carries_id_and_version_only() {
        let event = to_event(&row("delete", None)).unwrap();
        assert_eq!(
            event.fields,
            vec![
                ("op", "delete".to_string()),
                ("national_id", "0012345679".to_string()),
                ("version", "4".to_string())
            ]
        );
    }

    #[test]
    fn rows_breaking_the_rules_are_refused_without_the_id_in_the_reason() {
        let bad_digit = OutboxRow {
            national_id: "0012345678".into(),
            ..row("delete", None)
        };
        let dependent = MEMBER.replace("\"main\"", "\"dependent\"");
        let other_version = MEMBER.replace("\"version\": 4", "\"version\": 5");
        for (r, field) in [
            (bad_digit, "national_id"),
            (row("upsert", None), "member"),
            (row("upsert", Some("{")), "record"),
            (row("upsert", Some(&dependent)), "main_national_id"),
            (row("upsert", Some(&other_version)), "member"),
            (row("merge", None), "op"),
            (
                OutboxRow {
                    version: 0,
                    ..row("delete", None)
                },
                "version",
            ),
        ] {
            let reason = to_event(&r).unwrap_err();
            assert!(reason.contains(field), "{reason} should name {field}");
            assert!(!reason.contains("001234567"), "{reason}");
        }
    }
}
