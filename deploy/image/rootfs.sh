#!/usr/bin/env bash
# Assembles the runtime root filesystem of the eligd image: the binary, the shared libraries
# it links (found with ldd, so the image needs no distribution base), a passwd/group naming
# the unprivileged user 65534, nsswitch.conf so Redis and PostgreSQL resolve by host name
# (/etc/hosts and DNS), and the CA bundle for TLS to dependencies without --redis-ca.
# Used by deploy/Dockerfile (in its build stage) and deploy/build-local-image.sh (on this
# machine), so both produce the same image.
#
# Usage: deploy/image/rootfs.sh BINARY OUTDIR
set -euo pipefail
binary=${1:?usage: rootfs.sh BINARY OUTDIR}
out=${2:?usage: rootfs.sh BINARY OUTDIR}
[ -x "$binary" ] || { echo "rootfs.sh: $binary is not an executable" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
install -m 0755 "$binary" "$out/usr/local/bin/eligd"
# The release profile keeps line tables for profiling; the image does not need them.
if command -v strip >/dev/null; then strip --strip-debug "$out/usr/local/bin/eligd"; fi

# Every library the binary needs, and the dynamic loader, at the paths ldd reports.
ldd "$binary" | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done

cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo 'hosts: files dns' > "$out/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
chmod 1777 "$out/tmp"
# Where snapshots and the audit log live (compose mounts named volumes there): the image makes
# them, and Dockerfile.runtime gives them to user 65534, so a new volume starts writable.
mkdir -p "$out/var/lib/eligd/snapshots" "$out/var/lib/eligd/audit"
