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

use postgres::{Client, IsolationLevel, NoTls};

use crate::import::{import_jsonl, ImportError, ImportReport};
use crate::index::body::Body;
use crate::index::FeedPosition;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("reading the members table: {0}")]
    Import(#[from] ImportError),
    #[error("the stream's newest entry ID {0:?} is not ms-seq")]
    BadPosition(String),
}

/// Each row as its record JSON, one per line. The CSV quote and delimiter are bytes JSON
/// never holds unescaped, so COPY passes the JSON through unchanged.
const COPY_MEMBERS: &str = "COPY (SELECT to_jsonb(m) - 'updated_at' FROM members m) \
     TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')";

/// The newest entry ID of `stream` (`0-0` when the stream does not exist yet).
pub fn stream_position(redis_url: &str, stream: &str) -> Result<FeedPosition, RecordsError> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection()?;
    let info: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query(&mut conn);
    let pairs = match info {
        Ok(redis::Value::Array(items)) => items,
        Ok(redis::Value::Map(pairs)) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Ok(other) => return Err(RecordsError::BadPosition(format!("{other:?}"))),
        Err(e) if e.to_string().to_ascii_lowercase().contains("no such key") => {
            return Ok(FeedPosition::START)
        }
        Err(e) => return Err(e.into()),
    };
    let last = pairs
        .chunks(2)
        .find_map(|kv| match kv {
            [redis::Value::BulkString(k), redis::Value::BulkString(v)]
                if k == b"last-generated-id" =>
            {
                Some(String::from_utf8_lossy(v).into_owned())
            }
            _ => None,
        })
        .ok_or_else(|| RecordsError::BadPosition("missing last-generated-id".into()))?;
    last.parse().map_err(|_| RecordsError::BadPosition(last))
}

/// Reads every member into a body. `position` is recorded by the caller; read it first.
pub fn import_members(url: &str, strict: bool) -> Result<(Body, ImportReport), RecordsError> {
    let mut client = Client::connect(url, NoTls)?;
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let imported = {
        let reader = tx.copy_out(COPY_MEMBERS)?;
        import_jsonl(&mut BufReader::with_capacity(1 << 20, reader), strict)?
    };
    tx.commit()?;
    Ok(imported)
}
