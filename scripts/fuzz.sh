#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 60), starting from its
# committed seed corpus (fuzz/corpus/<target>/seed-*) and growing a local corpus beside it.
# A crash stops the run; its input is in fuzz/artifacts/<target>/: turn it into a regression
# test (docs/security.md, "Fuzzing"). Needs cargo-fuzz (`cargo install cargo-fuzz`); on a
# stable toolchain RUSTC_BOOTSTRAP=1 lets it pass its sanitizer-coverage flags.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(national_id member_json change_event resp ussd fhir snapshot)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none -O
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  # The fuzzer's status, not grep's (grep fails when no line matches): a run that fails
  # without leaving an artifact (a build error, a bad flag, an out-of-memory kill) fails here.
  set +e
  cargo fuzz run --sanitizer none -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 \
    | grep -E '^(#[0-9]+ +(DONE|INITED)|Done|==|SUMMARY|panicked|error)'
  status=${PIPESTATUS[0]}
  set -e
  if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target found a crash: fuzz/artifacts/$target/" >&2
    exit 1
  fi
  if [ "$status" -ne 0 ]; then
    echo "fuzz: cargo fuzz run $target failed (exit $status) and left no artifact" >&2
    exit 1
  fi
done
