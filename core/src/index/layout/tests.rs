use rkyv::rancor;

use super::*;
use crate::dates::Day;
use crate::demo::Generator;
use crate::index::body::{Body, NO_COVERAGE_END};
use crate::index::dictionary::Dictionaries;
use crate::member::Booklet;

/// The table as the in-memory builder laid it out before layouts streamed: every record
/// sorted by (home slot, ID), each at its home or the next free slot, and the booklet table
/// likewise. The reference the streamed bytes must equal.
fn reference(records: &[PackedMember], names: Vec<String>, extras: Vec<ExtrasEntry>) -> Body {
    let capacity = capacity_for(records.len());
    let mut sorted = records.to_vec();
    sorted.sort_unstable_by_key(|r| (home(r.national_id, capacity), r.national_id));
    let mut table: Vec<PackedMember> = Vec::new();
    for r in sorted {
        let at = home(r.national_id, capacity).max(table.len());
        table.resize(at, PackedMember::default());
        table.push(r);
    }
    table.resize(table.len().max(capacity as usize), PackedMember::default());
    let mut holders: Vec<(u64, u32)> = table
        .iter()
        .enumerate()
        .filter(|(_, r)| r.national_id != 0 && r.attrs & TOMBSTONE == 0 && r.booklet != 0)
        .map(|(row, r)| (r.booklet, row as u32))
        .collect();
    let booklet_capacity = capacity_for(holders.len());
    holders.sort_unstable_by_key(|&(k, row)| (home(k, booklet_capacity), k, row));
    let mut slots: Vec<u32> = Vec::new();
    for (k, row) in holders {
        let at = home(k, booklet_capacity).max(slots.len());
        slots.resize(at, 0);
        slots.push(row + 1);
    }
    slots.resize(slots.len().max(booklet_capacity as usize), 0);
    let live = table
        .iter()
        .filter(|r| r.national_id != 0 && r.attrs & TOMBSTONE == 0)
        .count() as u64;
    Body {
        capacity,
        tombstones: records.len() as u64 - live,
        records: table,
        booklet_capacity,
        booklet_slots: slots,
        names,
        extras,
        live,
    }
}

fn packed(n: u64, seed: u64) -> (Vec<PackedMember>, Vec<String>, Vec<ExtrasEntry>) {
    let mut d = Dictionaries::default();
    let mut records: Vec<PackedMember> =
        Generator::new(n, seed, Day::parse_iso("2026-11-22").unwrap())
            .map(|m| d.pack(&m.view()))
            .collect();
    // A few tombstones, and booklets shared (a compaction may carry both claims).
    for r in records.iter_mut().step_by(7) {
        *r = PackedMember {
            national_id: r.national_id,
            version: r.version + 1,
            coverage_until: NO_COVERAGE_END,
            attrs: TOMBSTONE,
            ..PackedMember::default()
        };
    }
    let shared = Booklet(4242).0;
    for r in records.iter_mut().skip(1).step_by(11).take(3) {
        r.booklet = shared;
    }
    let (names, extras) = d.into_lists();
    (records, names, extras)
}

fn streamed(
    records: &[PackedMember],
    names: Vec<String>,
    extras: Vec<ExtrasEntry>,
) -> (rkyv::util::AlignedVec<16>, Laid) {
    let mut in_order = records.to_vec();
    in_order.sort_unstable_by_key(|r| hash_order(r.national_id));
    Layout {
        rows: in_order.len() as u64,
        records: Box::new(in_order.into_iter().map(Ok)),
        names,
        extras,
        placed: None,
        holders_hint: 0,
    }
    .write(rkyv::util::AlignedVec::<16>::new())
    .unwrap()
}

#[test]
fn the_streamed_bytes_are_rkyvs_bytes_of_the_same_table() {
    for (n, seed) in [(0, 1), (1, 2), (7, 3), (1_000, 4), (20_000, 5)] {
        let (records, names, extras) = packed(n, seed);
        let expected =
            rkyv::to_bytes::<rancor::Error>(&reference(&records, names.clone(), extras.clone()))
                .unwrap();
        let (bytes, laid) = streamed(&records, names, extras);
        assert_eq!(bytes.len(), expected.len(), "{n} members");
        assert!(bytes[..] == expected[..], "{n} members: the bytes differ");
        let body = crate::index::base::validate(&bytes, 2).unwrap();
        assert_eq!(
            (laid.live, laid.tombstones),
            (body.live.to_native(), body.tombstones.to_native())
        );
    }
}

#[test]
fn a_record_out_of_order_or_a_wrong_count_is_an_error_not_a_table() {
    let (records, names, extras) = packed(100, 9);
    let mut in_order = records.clone();
    in_order.sort_unstable_by_key(|r| hash_order(r.national_id));
    in_order.swap(10, 11);
    let out_of_order = Layout {
        rows: 100,
        records: Box::new(in_order.clone().into_iter().map(Ok)),
        names: names.clone(),
        extras: extras.clone(),
        placed: None,
        holders_hint: 0,
    };
    let err = out_of_order
        .write(rkyv::util::AlignedVec::<16>::new())
        .unwrap_err();
    assert!(err.to_string().contains("out of hash order"), "{err}");
    in_order.swap(10, 11);
    let miscounted = Layout {
        rows: 101,
        records: Box::new(in_order.clone().into_iter().map(Ok)),
        names: names.clone(),
        extras: extras.clone(),
        placed: None,
        holders_hint: 0,
    };
    let err = miscounted
        .write(rkyv::util::AlignedVec::<16>::new())
        .unwrap_err();
    assert!(err.to_string().contains("promised 101"), "{err}");
    let failing = Layout {
        rows: 100,
        records: Box::new(in_order.into_iter().enumerate().map(|(i, r)| {
            if i == 50 {
                Err(io::Error::other("the disk went away"))
            } else {
                Ok(r)
            }
        })),
        names,
        extras,
        placed: None,
        holders_hint: 0,
    };
    let err = failing
        .write(rkyv::util::AlignedVec::<16>::new())
        .unwrap_err();
    assert!(err.to_string().contains("the disk went away"), "{err}");
}

#[test]
fn a_full_disk_is_named_in_the_error() {
    #[derive(Debug)]
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (records, names, extras) = packed(1_000, 3);
    let mut in_order = records;
    in_order.sort_unstable_by_key(|r| hash_order(r.national_id));
    let layout = Layout {
        rows: in_order.len() as u64,
        records: Box::new(in_order.into_iter().map(Ok)),
        names,
        extras,
        placed: None,
        holders_hint: 0,
    };
    let err = layout
        .write(rkyv::ser::writer::IoWriter::new(Full))
        .unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
}
