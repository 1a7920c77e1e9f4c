//! Tight loop of base lookups for profiling (`perf record`): not a budget, a tool.
use std::hint::black_box;
use std::time::Instant;

use eligd::index::{snapshot, Row};
use loadtest::Xorshift;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    let mode = std::env::args().nth(2).unwrap_or_default();
    let (_, base) = match snapshot::load(std::path::Path::new(&path)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let ids: Vec<_> = base
        .rows()
        .filter_map(|r| {
            if let Row::Live(m) = r {
                Some(m.national_id)
            } else {
                None
            }
        })
        .collect();
    let index = eligd::index::Index::new(base);
    // `ELIGD_PROFILE_OVERLAY=N`: apply N upserts first, as a live feed would leave them.
    let overlay: usize = std::env::var("ELIGD_PROFILE_OVERLAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for id in ids
        .iter()
        .step_by((ids.len() / overlay.max(1)).max(1))
        .take(overlay)
    {
        if let Some(mut m) = index.member(*id) {
            m.version += 1;
            index.apply(eligd::index::Change::Upsert(m));
        }
    }
    let view = index.view();
    let mut rng = Xorshift(7);
    let keys: Vec<_> = (0..4096)
        .map(|_| ids[(rng.next_u64() % ids.len() as u64) as usize])
        .collect();
    let today = eligd::dates::Day(20_000);
    let bare: hashbrown::HashMap<u64, [u8; 32]> =
        ids.iter().map(|i| (i.as_u64(), [0u8; 32])).collect();
    let t = Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        for k in &keys {
            match mode.as_str() {
                "get" => {
                    black_box(view.get(*k).is_some());
                }
                "bare" => {
                    black_box(bare.get(&k.as_u64()).is_some());
                }
                _ => {
                    black_box(
                        eligd::inquiry::by_national_id(&view, *k, today, None)
                            .map(|f| f.decision.outcome),
                    );
                }
            }
        }
    }
    println!(
        "{mode}: {:.1} ns per lookup",
        t.elapsed().as_nanos() as f64 / (rounds * keys.len()) as f64
    );
}
