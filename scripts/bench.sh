#!/usr/bin/env bash
# The bench command: eligd against every peer, in one run (docs/performance.md, "The bench
# command").
#
# Builds the production profile (as deployed), then runs `bench` on core 1 (the client) while it starts, on core 0, eligd
# as deployed (keys and the audit log on), the same build without them, a bare hyper server, a private redis-server and a
# private PostgreSQL; the same closed-loop client measures each, then the open-loop realistic
# mix runs at 700/s and swept to the highest rate that keeps p99 ≤ 2 ms. Prints the budget
# table, writes target/bench/bench.json (and the sweeps beside it), draws the latency plot
# (docs/latency-vs-rate.svg unless PLOT_OUT says otherwise) and exits 1 when a budget is
# missed, 2 on an error. Takes about 5 minutes.
#
# Usage: scripts/bench.sh [bench flags…]   e.g. scripts/bench.sh --rounds 5 --seconds 5
# Flags: --members N (1000000), --rounds N (3), --seconds S (5), --connections N (64),
#        --open-loop off, --open-loop-seconds S (15), --out FILE, and the budgets
#        --hello-ratio 0.9, --redis-ratio 1.2, --postgres-ratio 3, --audit-ratio 0.9 (keys +
#        audit against the same build without), --handler-p99-us 25,
#        --open-loop-p99-ratio 1.25.
# Needs: taskset (util-linux), redis-server, PostgreSQL 15 server binaries, 2 cores.
set -euo pipefail
# The tools below read eligd's text log (address=…), also when it is not a terminal.
export ELIGD_LOG_FORMAT="${ELIGD_LOG_FORMAT:-text}"
cd "$(dirname "$0")/.."

for tool in taskset redis-server python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/test.sh installs it)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs 2 cores (server on core 0, client on core 1)" >&2
  exit 2
fi

cargo build --profile production --bin eligd -p eligd
cargo build --profile production -p loadtest --bin bench --bin hello-server

status=0
taskset -c 1 target/production/bench --out target/bench/bench.json "$@" || status=$?
if [ "$status" -le 1 ] && [ -f target/bench/open-loop-eligd.json ]; then
  python3 scripts/plot-latency.py target/bench/open-loop-eligd.json target/bench/open-loop-hello.json \
    --out "${PLOT_OUT:-docs/latency-vs-rate.svg}"
fi
exit "$status"
