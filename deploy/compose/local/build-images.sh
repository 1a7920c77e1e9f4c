#!/usr/bin/env bash
# Builds, from this machine's Debian packages and without pulling anything, the images
# deploy/compose.yaml needs besides eligd: eligd-local/postgres:15 (with an entrypoint that
# does what the official image's does: initdb with the user, database and password file it
# is given, then the scripts in /docker-entrypoint-initdb.d), eligd-local/redis:7 (Redis and
# Sentinel) and eligd-local/prometheus. Each is a scratch image holding the binaries, the
# libraries they link (ldd) and busybox for the shell the entrypoints and the sentinels'
# command use. Grafana has no Debian package: the local run leaves it out.
# Needs: docker (DOCKER_HOST honoured), busybox-static, postgresql-15, redis-server,
# prometheus. Used by tests/it/compose.rs (deploy/compose/local/compose.local.yaml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for tool in docker /bin/busybox /usr/lib/postgresql/15/bin/postgres /usr/bin/redis-server /usr/bin/prometheus; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || {
    echo "build-images.sh: $tool is missing (Debian: busybox-static, postgresql-15, redis-server, prometheus, docker.io; scripts/test.sh installs them)" >&2
    exit 2
  }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# copy_with_libs ROOT FILE...: each file at its path, with every library it links.
copy_with_libs() {
  local root=$1; shift
  for file in "$@"; do
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
    ldd "$file" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | while read -r lib; do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

# base ROOT: busybox as /bin/sh and its tools, passwd/group, /tmp.
base() {
  local root=$1
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh cat printf mkdir chown chmod rm id ls su sleep env echo test; do
    ln -sf busybox "$root/bin/$applet"
  done
  chmod 1777 "$root/tmp"
  cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/bin/sh
postgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh
redis:x:998:998:redis:/data:/bin/sh
nobody:x:65534:65534:nobody:/:/sbin/nologin
PASSWD
  cat > "$root/etc/group" <<'GROUP'
root:x:0:
postgres:x:999:
redis:x:998:
nogroup:x:65534:
GROUP
  echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
}

build() {
  local tag=$1 dir=$2
  docker build --quiet -t "$tag" "$dir" 2>&1 >/dev/null | grep -v -e DEPRECATED -e buildx -e '^ *$' -e 'docs.docker.com' >&2 || true
  echo "built $tag ($(du -sh "$dir/rootfs" | cut -f1))"
}

# PostgreSQL 15.
pg=$work/postgres
base "$pg/rootfs"
copy_with_libs "$pg/rootfs" /usr/lib/postgresql/15/bin/* /usr/lib/postgresql/15/lib/*.so
mkdir -p "$pg/rootfs/usr/share/postgresql"
cp -a /usr/share/postgresql/15 "$pg/rootfs/usr/share/postgresql/"
cp -a /usr/share/zoneinfo "$pg/rootfs/usr/share/"
mkdir -p "$pg/rootfs/usr/local/bin" "$pg/rootfs/docker-entrypoint-initdb.d"
install -m 0755 "$here/postgres-entrypoint.sh" "$pg/rootfs/usr/local/bin/docker-entrypoint.sh"
for b in pg_isready psql; do ln -sf /usr/lib/postgresql/15/bin/$b "$pg/rootfs/bin/$b"; done
cat > "$pg/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/lib/postgresql/15/bin:/bin PGDATA=/var/lib/postgresql/data
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
DOCKERFILE
build eligd-local/postgres:15 "$pg"

# Redis 7 and Sentinel (one binary).
rd=$work/redis
base "$rd/rootfs"
copy_with_libs "$rd/rootfs" /usr/bin/redis-server
ln -sf redis-server "$rd/rootfs/usr/bin/redis-sentinel"
mkdir -p "$rd/rootfs/data"
cat > "$rd/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin:/bin
WORKDIR /data
CMD ["redis-server"]
DOCKERFILE
build eligd-local/redis:7 "$rd"

# Prometheus.
pr=$work/prometheus
base "$pr/rootfs"
copy_with_libs "$pr/rootfs" /usr/bin/prometheus
mkdir -p "$pr/rootfs/prometheus"
cat > "$pr/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
DOCKERFILE
build eligd-local/prometheus "$pr"
