#!/usr/bin/env bash
# Checks the server against its spec with schemathesis (--checks all, every operation):
# starts eligd on a free loopback port with a client key (keys for every channel, generous
# limits), runs schemathesis with a fixed seed, stops eligd. The semantic rules a schema
# cannot state are declared in schemathesis.toml. Exit non-zero on any finding.
#
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES (30)] [ELIGD (target/debug/eligd)] [SCHEMATHESIS]
set -euo pipefail
# The tools below read eligd's text log (address=…), also when it is not a terminal.
export ELIGD_LOG_FORMAT="${ELIGD_LOG_FORMAT:-text}"
cd "$(dirname "$0")/.."
examples=${1:-30}
eligd=${2:-target/debug/eligd}
st=${3:-schemathesis}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$("$eligd" keys add --keys-file "$dir/keys" --client schemathesis --channel any --rate 100000 2>/dev/null)
"$eligd" serve --listen "127.0.0.1:$port" --demo-members 2000 --api-keys "$dir/keys" \
  --phone-requests-per-minute 100000 --public-requests-per-minute 100000 >"$dir/eligd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
"$st" run docs/openapi.yaml --url "http://127.0.0.1:$port" --checks all --seed 1 \
  --max-examples "$examples" -H "Authorization: Bearer $key"
