# Installing what the tests and checks need, from the distribution's packages, only when it is
# missing. Sourced by scripts/test.sh (the README's test command) and .ci/run, so both install
# the same set the same way. Debian/Ubuntu (apt-get); as root, or through sudo.

tools_log() { printf '\n== %s\n' "$*"; }

# apt_install PACKAGE... : installs the packages dpkg does not know as installed.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}; this script installs them with apt-get (Debian/Ubuntu): install them another way, then run it again" >&2
    return 1
  fi
  tools_log "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# need COMMAND PACKAGE : the package, unless the command is already on the PATH (a tool
# installed some other way, say Node.js from nodesource, is used as it is).
need() {
  command -v "$1" >/dev/null 2>&1 || TOOLS_NEEDED+=("$2")
}

# install_test_tools : everything `cargo test --workspace` starts or calls. The tests start
# private servers (redis-server, redis-server --sentinel, PostgreSQL's initdb/postgres and
# pg_basebackup, Prometheus, dockerd) in temporary directories on free ports, drive Chromium
# through playwright-core (npm), and make a Python venv for the FHIR validator.
install_test_tools() {
  TOOLS_NEEDED=()
  need redis-server redis-server
  need redis-sentinel redis-sentinel
  # The PostgreSQL server binaries live in /usr/lib/postgresql/N/bin, not on the PATH.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || TOOLS_NEEDED+=(postgresql)
  need prometheus prometheus
  need promtool prometheus
  need dockerd docker.io
  need docker-compose docker-compose
  need busybox busybox-static
  need chromium chromium
  need node nodejs
  need npm npm
  need curl curl
  need prlimit util-linux
  need taskset util-linux
  python3 -c 'import venv, ensurepip' 2>/dev/null || TOOLS_NEEDED+=(python3-venv)
  need python3 python3
  [ ${#TOOLS_NEEDED[@]} -eq 0 ] && return 0
  # ca-certificates: npm and pip fetch their packages over TLS.
  apt_install ca-certificates $(printf '%s\n' "${TOOLS_NEEDED[@]}" | sort -u)
}
