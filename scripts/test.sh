#!/usr/bin/env bash
# The README's test command: installs what the test suite needs when it is missing
# (scripts/lib/tools.sh; apt-get, as root or through sudo), then runs the whole suite.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test it -- fencing`.
# `.ci/run` ends with this same command.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/tools.sh

install_test_tools
tools_log "cargo test --workspace $*"
exec cargo test --workspace "$@"
