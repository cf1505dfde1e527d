#!/usr/bin/env bash
# Stand-in base images for a Docker engine that cannot pull from a registry.
#
# docker-compose.yml needs two base images: Redis (`redis:7`) and a Debian runtime
# (`debian:bookworm-slim`). Without registry access this script builds both from Debian
# packages instead: `debootstrap --variant=minbase bookworm` against the apt mirror this host
# is already configured with (read from its apt sources at run time), then `docker import`.
# Images that already exist are kept (pass --force to rebuild them).
#
# Progress goes to stderr; stdout is only the settings that make compose use the images, so
#   eval "$(scripts/offline-images.sh)"
# exports REDIS_IMAGE, RUNTIME_IMAGE and APP_TARGET=runtime-prebuilt into your shell.
#
# Needs root (debootstrap) and a Debian host or DEBIAN_MIRROR=<url of a Debian mirror>.
set -euo pipefail

REDIS_STANDIN=${REDIS_STANDIN:-cluster-lab/redis:bookworm-offline}
RUNTIME_STANDIN=${RUNTIME_STANDIN:-cluster-lab/runtime:bookworm-offline}
SUITE=bookworm

force=no
case "${1:-}" in
  --force) force=yes ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

say() { echo "offline-images: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The first URI of a deb source whose suite is a plain release name (not -security or
# -updates), from deb822 `.sources` files or one-line `sources.list` files.
host_debian_mirror() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )[a-z]+( |$)/ && uri == "") {
          split(uris, u, " "); uri = u[1]
        }
        types = suites = uris = ""
      }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"  { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
      tolower($1) == "suites:" { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
      tolower($1) == "uris:"   { sub(/^[^:]*:[ \t]*/, ""); uris = $0 }
      END { flush(); if (uri != "") print uri }
    ' "$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$file" | awk '$1 == "deb" && $3 ~ /^[a-z]+$/ { print $2 }'
  done
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

workdir=""
cleanup() {
  [ -n "$workdir" ] || return 0
  # A failed debootstrap can leave /proc or /sys mounted inside the root file system.
  awk -v root="$workdir/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mnt; do umount -l "$mnt" || true; done
  rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT

# debootstrap ROOTFS [extra packages]; its log is kept quiet unless it fails, with the
# mirror's host masked so it never ends up in a CI log.
bootstrap() {
  local rootfs=$1 include=$2 log="$workdir/debootstrap.log" started=$SECONDS
  say "debootstrap --variant=minbase $SUITE${include:+ --include=$include} (about 30-60 s)"
  if ! debootstrap --variant=minbase ${include:+--include="$include"} \
      "$SUITE" "$rootfs" "$mirror" >"$log" 2>&1; then
    sed -E 's#[a-z]+://[^/ ]+#<mirror>#g' "$log" | tail -n 20 >&2
    die "debootstrap failed (log above)"
  fi
  # Nothing host- or mirror-specific goes into the image, and no package caches.
  rm -f "$rootfs/etc/apt/sources.list" "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  say "debootstrap done in $((SECONDS - started)) s"
}

import_image() {
  local rootfs=$1 name=$2; shift 2
  local change=() c
  for c in "$@"; do change+=(-c "$c"); done
  tar -C "$rootfs" --numeric-owner -c . | docker import "${change[@]}" - "$name" >/dev/null
  say "imported $name ($(docker image inspect -f '{{.Size}}' "$name" | awk '{ printf "%d MB", $1 / 1e6 }'))"
}

build_redis() {
  local rootfs="$workdir/redis"
  bootstrap "$rootfs" redis-server
  # Same layout as the official image: data in /data, owned by the redis user, which the
  # named volume inherits when compose first mounts it there.
  mkdir -p "$rootfs/data"
  chroot "$rootfs" chown redis:redis /data
  import_image "$rootfs" "$REDIS_STANDIN" \
    'USER redis' 'WORKDIR /data' 'VOLUME /data' 'EXPOSE 6379' 'CMD ["redis-server"]'
}

build_runtime() {
  local rootfs="$workdir/runtime"
  # Like debian:bookworm-slim (glibc, libgcc, passwd for useradd) plus ca-certificates, which
  # deploy/Dockerfile would otherwise install with apt: nodes verify rediss:// servers
  # against the system's CA store.
  bootstrap "$rootfs" ca-certificates
  import_image "$rootfs" "$RUNTIME_STANDIN" 'CMD ["bash"]'
}

needed=()
for image in "$REDIS_STANDIN" "$RUNTIME_STANDIN"; do
  if [ "$force" = yes ] || ! image_exists "$image"; then
    needed+=("$image")
  else
    say "$image exists, kept (--force rebuilds it)"
  fi
done

if [ ${#needed[@]} -gt 0 ]; then
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root: run with sudo"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=${DEBIAN_MIRROR:-$(host_debian_mirror | head -n 1)}
  [ -n "$mirror" ] || die "no Debian mirror in this host's apt sources: set DEBIAN_MIRROR=<url>"
  say "using the Debian mirror from this host's apt sources"
  workdir=$(mktemp -d /var/tmp/offline-images.XXXXXX)
  for image in "${needed[@]}"; do
    case "$image" in
      "$REDIS_STANDIN") build_redis ;;
      "$RUNTIME_STANDIN") build_runtime ;;
    esac
  done
fi

cat <<EOF
export REDIS_IMAGE=$REDIS_STANDIN
export RUNTIME_IMAGE=$RUNTIME_STANDIN
export APP_TARGET=runtime-prebuilt
EOF
