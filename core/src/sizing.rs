//! How much memory a replica and a snapshot build need, from the number of members: the
//! formula docs/scaling.md states, deploy/k8s is sized by, and the capped compaction check
//! (tests/it/memory_cap.rs) runs under. The bytes per member are measured
//! (docs/performance.md, "Memory"); the work budgets are what `memory-budget` enforces.

/// Bytes of snapshot file per member (records at load 0.8, the booklet table, the
/// dictionaries): 64.6 measured at 10 M and at 45 M synthetic members.
pub const SNAPSHOT_BYTES_PER_MEMBER: u64 = 65;

/// The work budget per member: a compaction's peak anonymous memory, and a build's peak
/// resident memory, stay within this many bytes per member…
pub const WORK_BYTES_PER_MEMBER: u64 = 40;

/// …plus this much, whatever the population.
pub const WORK_FIXED_BYTES: u64 = 256 << 20;

/// Anonymous memory per change held in the overlay (the member, its map entry, a booklet
/// claim): about 0.3 GiB for the default `--compact-overlay` of 500,000.
pub const OVERLAY_BYTES_PER_ENTRY: u64 = 640;

/// `--compact-overlay`'s default: the overlay holds at most about this many changes.
pub const DEFAULT_COMPACT_OVERLAY: u64 = 500_000;

/// What a compaction may add in anonymous memory, and a build use in all.
pub fn work_budget(members: u64) -> u64 {
    members * WORK_BYTES_PER_MEMBER + WORK_FIXED_BYTES
}

/// The mapped snapshot of `members`, in bytes.
pub fn snapshot_bytes(members: u64) -> u64 {
    members * SNAPSHOT_BYTES_PER_MEMBER
}

/// A replica's memory limit with an overlay of up to `overlay` changes: during a compaction it maps the old snapshot and the new one at
/// once (lookups read the old one until the new one is verified and swapped in), and the
/// compaction's own work comes on top.
pub fn replica_limit(members: u64, overlay: u64) -> u64 {
    2 * snapshot_bytes(members) + work_budget(members) + overlay * OVERLAY_BYTES_PER_ENTRY
}

/// A replica's memory request: what it holds while serving (the mapped snapshot, the
/// overlay, and the fixed part: runtime, connections, limiters).
pub fn replica_request(members: u64, overlay: u64) -> u64 {
    snapshot_bytes(members) + WORK_FIXED_BYTES + overlay * OVERLAY_BYTES_PER_ENTRY
}

/// The limit of `snapshot build` (the init container that seeds an empty volume).
pub fn build_limit(members: u64) -> u64 {
    work_budget(members)
}

/// Bytes rounded up to whole MiB (manifests state memory in `Mi`).
pub fn mebibytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_at_ten_and_forty_five_million() {
        assert_eq!(work_budget(10_000_000), 400_000_000 + (256 << 20));
        assert_eq!(
            replica_limit(10_000_000, 0),
            1_300_000_000 + 400_000_000 + (256 << 20)
        );
        let overlay = DEFAULT_COMPACT_OVERLAY;
        assert_eq!(mebibytes(replica_limit(45_000_000, overlay)), 7_857);
        assert_eq!(mebibytes(replica_request(45_000_000, overlay)), 3_351);
        assert_eq!(mebibytes(build_limit(45_000_000)), 1_973);
    }
}
