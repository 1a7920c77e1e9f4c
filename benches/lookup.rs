//! ID parsing, and lookup + evaluate over the demo population (hits, misses, dependents
//! with their main insured), beside a bare hash map get over the same keys for scale.
//!
//! `cargo bench --bench lookup`; `ELIGD_BENCH_MEMBERS` sets the population (default 1 M).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::index::{BaseBuilder, Index};
use eligd::inquiry;
use eligd::member::{Kind, Service};
use eligd::national_id::NationalId;

const KEYS: usize = 4096;

fn members() -> u64 {
    std::env::var("ELIGD_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn parse_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("national_id");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_ascii", |b| {
        b.iter(|| NationalId::parse(black_box("0012345679")))
    });
    group.bench_function("parse_persian", |b| {
        b.iter(|| NationalId::parse(black_box("۰۰۱۲۳۴۵۶۷۹")))
    });
    group.bench_function("parse_padded_9", |b| {
        b.iter(|| NationalId::parse(black_box("499370899")))
    });
    group.bench_function("parse_invalid_checksum", |b| {
        b.iter(|| NationalId::parse(black_box("0012345678")))
    });
    group.finish();
}

/// A cheap deterministic shuffle so successive lookups hit different cache lines.
fn spread<T: Copy>(items: &[T], n: usize) -> Vec<T> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            items[(x % items.len() as u64) as usize]
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let today = Day::parse_iso("2026-11-22").unwrap_or(Day(0));
    let population: Vec<_> = Generator::new(members(), 1, today).collect();
    let all_ids: Vec<NationalId> = population.iter().map(|m| m.national_id).collect();
    let dependents: Vec<NationalId> = population
        .iter()
        .filter(|m| m.kind == Kind::Dependent)
        .map(|m| m.national_id)
        .collect();
    let mut builder = BaseBuilder::with_capacity(population.len());
    let mut bare: HashMap<u64, u64, foldhash::fast::FixedState> = HashMap::default();
    for m in population {
        bare.insert(m.national_id.as_u64(), m.version);
        let _ = builder.insert(m);
    }
    let index = Index::new(builder.build());
    // Valid IDs that nobody holds (from a different seed's ID sequence).
    let misses: Vec<NationalId> = Generator::new(KEYS as u64 * 4, 99, today)
        .map(|m| m.national_id)
        .filter(|id| index.get(*id).is_none())
        .take(KEYS)
        .collect();

    let hits = spread(&all_ids, KEYS);
    let deps = spread(&dependents, KEYS);
    let mut group = c.benchmark_group(format!("lookup_evaluate_{}", members()));
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("hit", |b| {
        b.iter(|| {
            for id in &hits {
                black_box(
                    inquiry::by_national_id(&index, *id, today, None).map(|f| f.decision.outcome),
                );
            }
        })
    });
    group.bench_function("hit_with_service", |b| {
        b.iter(|| {
            for id in &hits {
                black_box(
                    inquiry::by_national_id(&index, *id, today, Some(Service::Pharmacy))
                        .map(|f| f.decision.outcome),
                );
            }
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            for id in &misses {
                black_box(inquiry::by_national_id(&index, *id, today, None).is_none());
            }
        })
    });
    group.bench_function("dependent_with_main", |b| {
        b.iter(|| {
            for id in &deps {
                black_box(
                    inquiry::by_national_id(&index, *id, today, None).map(|f| f.decision.outcome),
                );
            }
        })
    });
    group.bench_function("bare_hashmap_get", |b| {
        b.iter(|| {
            for id in &hits {
                black_box(bare.get(&id.as_u64()));
            }
        })
    });
    group.bench_function("parse_and_evaluate_from_text", |b| {
        let texts: Vec<String> = hits.iter().map(|id| id.to_string()).collect();
        b.iter_batched(
            || (),
            |_| {
                for t in &texts {
                    if let Ok(id) = NationalId::parse(t) {
                        black_box(
                            inquiry::by_national_id(&index, id, today, None)
                                .map(|f| f.decision.outcome),
                        );
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse_ids, lookups);
criterion_main!(benches);
