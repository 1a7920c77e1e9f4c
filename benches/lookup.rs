//! ID parsing; lookup + evaluate over the demo population read in place (hits, misses,
//! dependents with their main insured) beside a bare `hashbrown` get over the same keys;
//! apply throughput into the overlay; body build, snapshot write and load.
//!
//! `cargo bench --bench lookup`; `ELIGD_BENCH_MEMBERS` sets the population (default 10 M).
//! Budgets are checked by `cargo run --release -p loadtest --bin index-budget` (see
//! docs/performance.md); this bench reports.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::index::{snapshot, BodyBuilder, Change, Index, Origin, Resolved};
use eligd::inquiry;
use eligd::member::{Kind, Member};
use eligd::national_id::NationalId;

const KEYS: usize = 1 << 20;

fn members() -> u64 {
    std::env::var("ELIGD_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn today() -> Day {
    Day::parse_iso("2026-11-22").unwrap_or(Day(0))
}

fn parse_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("national_id");
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

/// A deterministic sample of `n` items, spread over the whole slice.
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

fn resolved_of(members: &[Member]) -> Resolved {
    let mut builder = BodyBuilder::default();
    for (i, m) in members.iter().enumerate() {
        builder.push_member(m, Origin(i as u64));
    }
    match builder.resolve(None) {
        Ok(resolved) => resolved,
        Err(e) => panic!("the demo population could not be sorted: {e}"),
    }
}

/// Writes the members as a snapshot at `path` (verified, as every snapshot is).
fn write_snapshot(
    path: &std::path::Path,
    members: &[Member],
) -> Result<u64, snapshot::SnapshotError> {
    let mut resolved = resolved_of(members);
    let layout = match resolved.layout(None) {
        Ok(layout) => layout,
        Err(e) => panic!("in memory: {e}"),
    };
    snapshot::write(path, layout, None, None).map(|(h, _)| h.body_len)
}

fn lookups(c: &mut Criterion) {
    let n = members();
    let population: Vec<Member> = Generator::new(n, 1, today()).collect();
    let all_ids: Vec<NationalId> = population.iter().map(|m| m.national_id).collect();
    let dependents: Vec<NationalId> = population
        .iter()
        .filter(|m| m.kind == Kind::Dependent)
        .map(|m| m.national_id)
        .collect();
    let independents: Vec<NationalId> = population
        .iter()
        .filter(|m| m.kind != Kind::Dependent)
        .map(|m| m.national_id)
        .collect();
    let mut bare: hashbrown::HashMap<u64, [u8; 32]> =
        hashbrown::HashMap::with_capacity(all_ids.len());
    for id in &all_ids {
        bare.insert(id.as_u64(), [7; 32]);
    }
    // The production path: a snapshot file, memory-mapped and read in place.
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("no temp dir: {e}"),
    };
    let path = dir.path().join("lookup.snap");
    let index = match write_snapshot(&path, &population).and_then(|_| snapshot::load(&path)) {
        Ok((_, base)) => Index::new(base),
        Err(e) => panic!("the demo snapshot could not be written and loaded: {e}"),
    };
    drop(population);
    let today = today();
    let view = index.view();
    let misses: Vec<NationalId> = Generator::new(KEYS as u64 * 2, 99, today)
        .map(|m| m.national_id)
        .filter(|id| view.get(*id).is_none())
        .take(KEYS)
        .collect();
    let (hits, deps, mains) = (
        spread(&all_ids, KEYS),
        spread(&dependents, KEYS),
        spread(&independents, KEYS),
    );

    let mut group = c.benchmark_group(format!("lookup_evaluate_{n}"));
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("hit", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            inquiry::by_national_id(&view, hits[i % KEYS], today, None).map(|f| f.decision.outcome)
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            inquiry::by_national_id(&view, misses[i % misses.len()], today, None).is_none()
        })
    });
    group.bench_function("main_or_pensioner", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            inquiry::by_national_id(&view, mains[i % KEYS], today, None).map(|f| f.decision.outcome)
        })
    });
    group.bench_function("dependent_with_main", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            inquiry::by_national_id(&view, deps[i % KEYS], today, None).map(|f| f.decision.outcome)
        })
    });
    group.bench_function("hit_with_new_view", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let view = index.view();
            inquiry::by_national_id(&view, hits[i % KEYS], today, None).map(|f| f.decision.outcome)
        })
    });
    group.bench_function("bare_hashbrown_get", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            bare.get(&hits[i % KEYS].as_u64()).map(|v| v[0])
        })
    });
    group.finish();
    drop(view);

    let mut group = c.benchmark_group(format!("overlay_apply_{n}"));
    group.throughput(Throughput::Elements(1));
    let sample: Vec<Member> = Generator::new(KEYS as u64, 1, today).collect();
    let mut version = 1_000u64;
    group.bench_function("upsert", |b| {
        b.iter_batched(
            || {
                version += 1;
                i = i.wrapping_add(1);
                let mut m = sample[i % sample.len()].clone();
                m.version = version;
                Change::Upsert(m)
            },
            |change| index.apply(change),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn build_and_load(c: &mut Criterion) {
    let n = 1_000_000u64;
    let population: Vec<Member> = Generator::new(n, 1, today()).collect();
    let mut group = c.benchmark_group("snapshot_1000000");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("build_body", |b| {
        b.iter(|| resolved_of(&population).into_base().map(|base| base.len()))
    });
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("no temp dir: {e}"),
    };
    let path = dir.path().join("bench.snap");
    // Sorting, writing and the verification every snapshot passes before it is named.
    group.bench_function("build_write_and_verify", |b| {
        b.iter(|| write_snapshot(&path, &population))
    });
    group.bench_function("load_and_validate", |b| {
        b.iter(|| snapshot::load(&path).map(|(h, _)| h.members))
    });
    group.finish();
}

criterion_group!(benches, parse_ids, lookups, build_and_load);
criterion_main!(benches);
