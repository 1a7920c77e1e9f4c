#!/usr/bin/env bash
# A short smoke run of the load tool, for CI: eligd (debug build, keys and the audit log on,
# 100,000 synthetic members) under the realistic open-loop mix at 700 requests/s for 10 s.
# The budget is generous on purpose (p99 ≤ 50 ms, no unexpected status, no error): it catches
# a gross regression (a lock held across requests, a leak of connections, a panic under
# load) without flaking on a noisy 2-core machine. The real budgets are `scripts/bench.sh`'s.
#
# Usage: scripts/load-smoke.sh [RATE] [SECONDS] [P99_MS]
set -euo pipefail
# The tools below read eligd's text log (address=…), also when it is not a terminal.
export ELIGD_LOG_FORMAT="${ELIGD_LOG_FORMAT:-text}"
cd "$(dirname "$0")/.."
rate=${1:-700}
seconds=${2:-10}
p99_ms=${3:-50}
members=100000

cargo build --quiet --bin eligd -p eligd
cargo build --quiet -p loadtest --bin http-load

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

key=$(target/debug/eligd keys add --keys-file "$work/keys.json" --client smoke --channel any --rate 100000 | head -1)
ELIGD_AUDIT_KEY=00112233445566778899aabbccddeeff RUST_LOG=info \
  target/debug/eligd serve --listen 127.0.0.1:0 --demo-members "$members" \
  --api-keys "$work/keys.json" --audit-log "$work/audit.log" 2>"$work/eligd.log" &
server=$!

addr=""
for _ in $(seq 1 600); do
  addr=$(grep -o 'address=[0-9.:]*' "$work/eligd.log" | head -1 | cut -d= -f2 || true)
  if [ -n "$addr" ] && curl -sf "http://$addr/readyz" >/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/eligd.log" >&2; echo "load-smoke: eligd exited" >&2; exit 1; fi
  sleep 0.1
done
curl -sf "http://$addr/readyz" >/dev/null || { echo "load-smoke: eligd not ready" >&2; exit 1; }

target/debug/http-load --addr "$addr" --mix realistic --members "$members" --api-key "$key" \
  --rate "$rate" --duration "$seconds" --p99-ms "$p99_ms" | tee "$work/load.out"
answered=$(grep -o 'answered [0-9]*' "$work/load.out" | head -1 | cut -d' ' -f2)
# SIGTERM flushes the audit log; count it once eligd has exited.
kill -TERM "$server"
wait "$server" || { echo "load-smoke: eligd did not exit cleanly on SIGTERM" >&2; exit 1; }
server=""
lines=$(wc -l <"$work/audit.log")
echo "load-smoke: $lines audit lines written for $answered answered requests"
# At least 85 % of the realistic mix are inquiries (a batch is 10), each audited; the USSD
# menu steps may not be. Fewer lines than 70 % of the answers means inquiries went unaudited.
if [ -z "$answered" ] || [ "$answered" -eq 0 ] || [ $((lines * 10)) -lt $((answered * 7)) ]; then
  echo "load-smoke: too few audit lines ($lines) for ${answered:-no} answered requests" >&2
  exit 1
fi
