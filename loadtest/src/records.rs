//! The records database for the load tools: a client, the synthetic population seeded
//! through the table (so through the outbox too), and waiting for the relay to drain it.

use std::time::Duration;

use eligd::dates::Day;
use eligd::demo::Generator;

pub const SCHEMA: &str = include_str!("../../deploy/postgres/schema.sql");

pub async fn pg_client(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

/// Inserts the synthetic population (seed 1) through the table.
pub async fn seed(pg: &tokio_postgres::Client, members: u64) -> Result<(), String> {
    let people: Vec<String> = Generator::new(members, 1, Day::today())
        .map(|m| m.to_json())
        .collect();
    for chunk in people.chunks(2_000) {
        let json = format!("[{}]", chunk.join(","));
        pg.execute(
            "INSERT INTO members SELECT * FROM jsonb_populate_recordset(NULL::members, $1::text::jsonb)",
            &[&json],
        )
        .await
        .map_err(|e| format!("seeding: {e}"))?;
    }
    Ok(())
}

/// Waits until the relay has taken every row from the outbox.
pub async fn drained(pg: &tokio_postgres::Client) -> Result<(), String> {
    loop {
        let row = pg
            .query_one(
                "SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        if row.get::<_, i64>(0) == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
