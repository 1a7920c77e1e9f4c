//! Reading the records database (deploy/postgres/schema.sql) for `snapshot build
//! --from-postgres`: the whole `members` table in one consistent transaction, streamed
//! through the same JSON Lines import (and record rules) as a file.
//!
//! The snapshot's feed position is the stream's newest entry ID read *before* the table's
//! snapshot is taken. Every change committed before the table snapshot is in the rows; every
//! change committed after it reaches the outbox, and the relay can only XADD it after its
//! commit, so after the position was read: its stream ID is greater. Replaying from the
//! position therefore misses nothing (changes relayed between the two reads are applied
//! twice, which versions make harmless).

use std::io::BufReader;

use postgres::fallible_iterator::FallibleIterator;
use postgres::IsolationLevel;

use crate::feed::stream::{StreamError, StreamReader};
use crate::import::{import_jsonl_into, ImportError, ImportProgress, ImportReport};
use crate::index::{BodyBuilder, FeedPosition, Origin, Resolved, StreamEpoch};
use crate::national_id::NationalId;
use crate::pg::{PgTarget, PgUrlError};
use crate::redis::RedisTarget;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("{0}")]
    Url(#[from] PgUrlError),
    #[error("reading the change stream: {0}")]
    Stream(String),
    #[error("reading the members table: {0}")]
    Import(#[from] ImportError),
}

/// Each row as its record JSON, one per line. The CSV quote and delimiter are bytes JSON
/// never holds unescaped, so COPY passes the JSON through unchanged.
const COPY_MEMBERS: &str = "COPY (SELECT to_jsonb(m) - 'updated_at' FROM members m) \
     TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')";

/// The newest entry ID of `stream` (`0-0` when the stream does not exist yet) and the
/// stream's epoch (created when there is none yet), read with the feed's own client and
/// XINFO reading, so they mean exactly what a replica's check means. The epoch is read again
/// after the position: a stream that changed its epoch in between is read once more.
pub fn stream_position(
    redis: &RedisTarget,
    stream: &str,
) -> Result<(FeedPosition, StreamEpoch), RecordsError> {
    with_stream(redis, stream, |mut reader| async move {
        for _ in 0..3 {
            let epoch = reader.ensure_epoch().await?;
            let probe = reader.probe(None).await?;
            if probe.epoch == Some(epoch) {
                let position = probe.info.map_or(FeedPosition::START, |i| i.last_generated);
                return Ok((position, epoch));
            }
        }
        Err(StreamError::Frame {
            command: "GET",
            detail: "the stream's epoch keeps changing".into(),
        })
    })
}

/// The stream's epoch as it is now (`None` when it has none); nothing is created.
pub fn current_epoch(
    redis: &RedisTarget,
    stream: &str,
) -> Result<Option<StreamEpoch>, RecordsError> {
    with_stream(
        redis,
        stream,
        |mut reader| async move { reader.epoch().await },
    )
}

fn with_stream<T, F, Fut>(target: &RedisTarget, stream: &str, work: F) -> Result<T, RecordsError>
where
    F: FnOnce(StreamReader) -> Fut,
    Fut: std::future::Future<Output = Result<T, StreamError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RecordsError::Stream(e.to_string()))?;
    runtime
        .block_on(async {
            let reader = StreamReader::connect(target, stream).await?;
            work(reader).await
        })
        .map_err(|e| RecordsError::Stream(e.to_string()))
}

/// The delete markers not superseded by a member of the same ID (schema.sql,
/// `eligd_deleted_members`); none when the table predates them.
const DELETE_MARKERS: &str = "SELECT d.national_id, d.version FROM eligd_deleted_members d \
     LEFT JOIN members m USING (national_id) WHERE m.national_id IS NULL OR m.version < d.version";

/// Reads every member, and every delete marker as a tombstone, into `builder`, from one
/// consistent transaction, and resolves it. `position` is recorded by the caller; read it
/// first. Both are streamed (the markers row by row, the members through COPY): no result
/// set is held whole. Returns the resolved rows, the import report and how many delete
/// markers were read.
pub fn import_members(
    target: &PgTarget,
    strict: bool,
    mut builder: BodyBuilder,
    progress: Option<&ImportProgress>,
) -> Result<(Resolved, ImportReport, u64), RecordsError> {
    let mut client = target.connect_blocking()?;
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let has_markers: bool = tx
        .query_one(
            "SELECT to_regclass('eligd_deleted_members') IS NOT NULL",
            &[],
        )?
        .try_get(0)?;
    let mut markers = 0u64;
    if has_markers {
        let mut rows = tx.query_raw(DELETE_MARKERS, std::iter::empty::<i32>())?;
        while let Some(row) = rows.next()? {
            let (id, version): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            // The table's CHECK holds IDs to ten digits; one that is not a valid ID was
            // never a member of the index either.
            if let (Ok(id), Ok(version)) = (NationalId::parse(&id), u64::try_from(version)) {
                builder.push_tombstone(id, version, Origin(0));
                markers += 1;
            }
        }
    }
    let (resolved, report) = {
        let reader = tx.copy_out(COPY_MEMBERS)?;
        import_jsonl_into(
            &mut BufReader::with_capacity(1 << 20, reader),
            strict,
            builder,
            progress,
        )?
    };
    tx.commit()?;
    Ok((resolved, report, markers))
}
