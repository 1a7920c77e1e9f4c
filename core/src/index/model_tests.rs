//! The index against a plain model: random interleavings of upserts, deletes, booklet moves,
//! redelivered (stale) events, compactions, failed compactions, restarts from the newest
//! snapshot with a replay of the feed after its position, and resyncs from a repair
//! snapshot without delete markers. After every step every lookup, by national ID and by
//! booklet, must match the model: a map from ID to the newest change (the version guard of
//! docs/records.md), and a booklet held by the newest live record that carries it.

use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::member::{Kind, Scheme, Services, Status};

const PEOPLE: u32 = 10;
const BOOKLETS: u64 = 4;

fn person(i: u32) -> NationalId {
    NationalId::from_prefix(1_000 + i).unwrap()
}

fn booklet(i: u64) -> Booklet {
    Booklet(1_000 + i)
}

fn member(id: NationalId, version: u64, booklet: Option<Booklet>) -> Member {
    Member {
        national_id: id,
        version,
        kind: Kind::Main,
        main_national_id: None,
        relation: None,
        scheme: Scheme::Mandatory,
        status: Status::Active,
        coverage_until: None,
        services: Services::all(),
        special_conditions: Vec::new(),
        other_insurers: Vec::new(),
        booklet_no: booklet,
        display_name: None,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Upsert {
        person: u32,
        booklet: Option<u64>,
    },
    Delete {
        person: u32,
    },
    /// Delivers an earlier change again (at-least-once, out of order).
    Redeliver {
        back: usize,
    },
    Compact,
    FailedCompaction,
    Restart,
    Resync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PEOPLE, proptest::option::weighted(0.6, 0..BOOKLETS))
            .prop_map(|(person, booklet)| Op::Upsert { person, booklet }),
        2 => (0..PEOPLE).prop_map(|person| Op::Delete { person }),
        2 => (1usize..20).prop_map(|back| Op::Redeliver { back }),
        1 => Just(Op::Compact),
        1 => Just(Op::FailedCompaction),
        1 => Just(Op::Restart),
        1 => Just(Op::Resync),
    ]
}

/// The newest change of every ID, by the version guard.
#[derive(Default)]
struct Model {
    held: HashMap<NationalId, (u64, Option<Member>)>,
}

impl Model {
    fn apply(&mut self, change: &Change) {
        let (id, version) = (change.national_id(), change.version());
        let is_delete = matches!(change, Change::Delete { .. });
        let wins = match self.held.get(&id) {
            None => true,
            Some((held, live)) => {
                version > *held || (version == *held && is_delete && live.is_some())
            }
        };
        if wins {
            let record = match change {
                Change::Upsert(m) => Some(m.clone()),
                Change::Delete { .. } => None,
            };
            self.held.insert(id, (version, record));
        }
    }

    fn live(&self) -> impl Iterator<Item = &Member> {
        self.held.values().filter_map(|(_, m)| m.as_ref())
    }

    fn by_booklet(&self, b: Booklet) -> Option<NationalId> {
        self.live()
            .filter(|m| m.booklet_no == Some(b))
            .max_by_key(|m| (m.version, std::cmp::Reverse(m.national_id)))
            .map(|m| m.national_id)
    }
}

/// The delivered feed: every change with its position.
struct Feed {
    log: Vec<(FeedPosition, Change)>,
}

impl Feed {
    fn deliver(&mut self, index: &Index, model: &mut Model, change: Change) {
        let position = FeedPosition {
            ms: self.log.len() as u64 + 1,
            seq: 0,
        };
        model.apply(&change);
        index.apply(change.clone());
        index.note_position(position);
        self.log.push((position, change));
    }

    /// Applies every change after `from` (a restart's replay).
    fn replay(&self, index: &Index, from: Option<FeedPosition>) {
        for (position, change) in self.log.iter().filter(|(p, _)| Some(*p) > from) {
            index.apply(change.clone());
            index.note_position(*position);
        }
    }
}

fn check(index: &Index, model: &Model, step: usize) -> Result<(), TestCaseError> {
    for i in 0..PEOPLE {
        let id = person(i);
        let expected = model
            .held
            .get(&id)
            .and_then(|(_, m)| m.as_ref())
            .map(|m| m.version);
        let found = index.member(id).map(|m| m.version);
        prop_assert_eq!(found, expected, "step {}: person {}", step, i);
    }
    for b in 0..BOOKLETS {
        let found = index
            .view()
            .get_by_booklet(booklet(b))
            .map(|m| m.view().national_id);
        prop_assert_eq!(
            found,
            model.by_booklet(booklet(b)),
            "step {}: booklet {}",
            step,
            b
        );
    }
    prop_assert_eq!(
        index.len(),
        model.live().count(),
        "step {}: live count",
        step
    );
    Ok(())
}

fn newest_snapshot(dir: &Path) -> Option<(Option<FeedPosition>, Base)> {
    let listing = snapshot_dir::list(dir).ok()?;
    let newest = listing.snapshots.first()?;
    let (header, base) = snapshot::load(&newest.path).ok()?;
    Some((header.position, base))
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let initial: Vec<Member> = (0..PEOPLE / 2)
        .map(|i| {
            member(
                person(i),
                1,
                (u64::from(i) < BOOKLETS).then(|| booklet(u64::from(i))),
            )
        })
        .collect();
    let mut model = Model::default();
    for m in &initial {
        model.apply(&Change::Upsert(m.clone()));
    }
    let mut index = Index::from_members(initial.clone()).unwrap();
    let mut feed = Feed { log: Vec::new() };
    let mut version = 1;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Upsert {
                person: p,
                booklet: b,
            } => {
                version += 1;
                let m = member(person(p), version, b.map(booklet));
                feed.deliver(&index, &mut model, Change::Upsert(m));
            }
            Op::Delete { person: p } => {
                version += 1;
                let change = Change::Delete {
                    national_id: person(p),
                    version,
                };
                feed.deliver(&index, &mut model, change);
            }
            Op::Redeliver { back } => {
                if let Some((_, change)) = feed
                    .log
                    .len()
                    .checked_sub(back)
                    .map(|i| feed.log[i].clone())
                {
                    feed.deliver(&index, &mut model, change);
                }
            }
            Op::Compact => {
                index.compact_into(dir.path(), 2, false).unwrap();
            }
            Op::FailedCompaction => {
                let not_a_dir = dir.path().join("not-a-dir");
                std::fs::write(&not_a_dir, b"x").unwrap();
                prop_assert!(index.compact_into(&not_a_dir, 2, true).is_err());
            }
            Op::Restart => {
                index = match newest_snapshot(dir.path()) {
                    Some((position, base)) => {
                        let restarted = Index::new(base);
                        feed.replay(&restarted, position);
                        restarted
                    }
                    None => {
                        let restarted = Index::from_members(initial.clone()).unwrap();
                        feed.replay(&restarted, None);
                        restarted
                    }
                };
            }
            Op::Resync => {
                // A repair snapshot of the source as it is now: live records, no markers.
                let position = feed.log.last().map(|(p, _)| *p);
                let layout = crate::index::layout::Layout::of_members(model.live());
                let repaired = Index::new(Base::from_layout(layout, position).unwrap());
                for marker in index.markers() {
                    repaired.apply(marker);
                }
                index = repaired;
            }
        }
        check(&index, &model, step)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn every_lookup_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
