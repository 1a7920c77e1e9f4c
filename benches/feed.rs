//! The change feed's catch-up path, stage by stage: decoding an XREAD reply (ours, beside
//! redis-rs's general decoder, which is why the feed has its own), parsing a native entry,
//! and parse + apply into the overlay.
//!
//! `cargo bench --bench feed`. The end-to-end replay budget (≥ 200,000 entries/s, Redis and
//! the network included) is checked by `feed-freshness` (docs/performance.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::feed::event::{parse_entry, Event};
use eligd::index::Index;
use eligd::redis::decode_xread;
use redis::Value;

const BATCH: usize = 10_000;

fn entries() -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let today = Day::parse_iso("2026-11-22").unwrap_or(Day(0));
    Generator::new(BATCH as u64, 7, today)
        .map(|mut m| {
            m.version += 1;
            vec![
                (b"op".to_vec(), b"upsert".to_vec()),
                (
                    b"national_id".to_vec(),
                    m.national_id.to_string().into_bytes(),
                ),
                (b"version".to_vec(), m.version.to_string().into_bytes()),
                (b"member".to_vec(), m.to_json().into_bytes()),
            ]
        })
        .collect()
}

fn reply(entries: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Value {
    let items = entries
        .iter()
        .enumerate()
        .map(|(i, fields)| {
            let flat = fields
                .iter()
                .flat_map(|(k, v)| [Value::BulkString(k.clone()), Value::BulkString(v.clone())])
                .collect();
            Value::Array(vec![
                Value::BulkString(format!("1795000000000-{i}").into_bytes()),
                Value::Array(flat),
            ])
        })
        .collect();
    Value::Array(vec![Value::Array(vec![
        Value::BulkString(b"eligd:changes".to_vec()),
        Value::Array(items),
    ])])
}

/// The reply as Redis sends it (RESP2).
fn resp(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::BulkString(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                resp(item, out);
            }
        }
        _ => out.extend_from_slice(b"$-1\r\n"),
    }
}

fn feed(c: &mut Criterion) {
    let entries = entries();
    let mut group = c.benchmark_group("feed");
    group.throughput(Throughput::Elements(BATCH as u64));
    let reply = reply(&entries);
    let mut wire = Vec::new();
    resp(&reply, &mut wire);
    // What is measured must be what it claims: every entry parses into a change, the reply
    // decodes into every entry, and applying them all fills the overlay. A bench of errors
    // would be fast and say nothing.
    for fields in &entries {
        assert!(
            matches!(parse_entry(fields), Ok(Event::Change(_))),
            "a bench entry does not parse"
        );
    }
    let decoded = decode_xread(&wire).unwrap_or_else(|e| panic!("the bench reply: {e}"));
    assert_eq!(decoded.len(), entries.len(), "the reply holds every entry");
    assert!(
        redis::parse_redis_value(&wire).is_ok(),
        "redis-rs reads the reply"
    );
    let index = Index::from_members(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    for fields in &entries {
        if let Ok(Event::Change(change)) = parse_entry(fields) {
            index.apply(change);
        }
    }
    assert_eq!(index.len(), entries.len(), "every change applied");
    group.bench_function("redis_rs_decode_reply_10k", |b| {
        b.iter(|| redis::parse_redis_value(black_box(&wire)).is_ok())
    });
    group.bench_function("decode_xread_reply_10k", |b| {
        b.iter(|| decode_xread(black_box(&wire)).map(|e| e.len()))
    });
    group.bench_function("parse_native_upsert_10k", |b| {
        b.iter(|| {
            for fields in &entries {
                black_box(parse_entry(fields).is_ok());
            }
        })
    });
    group.bench_function("parse_and_apply_10k", |b| {
        b.iter_batched(
            || Index::from_members(Vec::new()).unwrap_or_else(|e| panic!("{e}")),
            |index| {
                for fields in &entries {
                    if let Ok(Event::Change(change)) = parse_entry(fields) {
                        black_box(index.apply(change));
                    }
                }
                index
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, feed);
criterion_main!(benches);
