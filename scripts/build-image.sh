#!/usr/bin/env bash
# Build the swarmkeeper agent image (`make image`).
#
# Two ways to get the base image (see docs/provisioning.md):
#   registry (default)  FROM python:3.11-slim-bookworm, pulled from a registry;
#   local               a minimal Debian bookworm with python3 and git made by debootstrap from
#                       Debian's package mirror, `docker import`ed as swarmkeeper-base:bookworm.
#                       For machines that reach a Debian mirror but no image registry.
# The Python dependencies are built into a wheelhouse on this machine from constraints.txt, so
# the `docker build` itself needs no network (with a local base) and installs exactly the
# pinned versions.
#
# Usage: scripts/build-image.sh [--base registry|local] [--tag NAME:TAG] [--base-only]
# Environment (the options win):
#   SWARMKEEPER_BASE        registry | local                         (default registry)
#   SWARMKEEPER_BASE_IMAGE  base for the registry path               (python:3.11-slim-bookworm)
#   SWARMKEEPER_CACHE       where the debootstrap tarball is kept    (/var/cache/swarmkeeper)
#   DEBIAN_MIRROR           mirror for debootstrap                   (http://deb.debian.org/debian)
#   DOCKER                  docker client to use (honours DOCKER_HOST)           (docker)
#   PYTHON                  python with pip, for the wheelhouse      (.venv/bin/python or python3)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
base=${SWARMKEEPER_BASE:-registry}
base_image=${SWARMKEEPER_BASE_IMAGE:-python:3.11-slim-bookworm}
cache=${SWARMKEEPER_CACHE:-/var/cache/swarmkeeper}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/pyproject.toml" | head -n1)
tag="swarmkeeper:$version"
base_only=0
local_base_tag=swarmkeeper-base:bookworm-2
# Debian bookworm's python3 is 3.11, the interpreter the wheelhouse is built for.
# openssh-client and gnupg: git verifies signed commits with ssh-keygen and gpg.
base_packages=python3,python3-venv,git,ca-certificates,passwd,openssh-client,gnupg

while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --base-only) base_only=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case $base in registry|local) ;; *) echo "build-image.sh: --base must be registry or local" >&2; exit 2 ;; esac

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi

# The debootstrap'ed root as a tarball, built once and kept outside the repo: it takes minutes.
local_rootfs_tarball() {
  # named by its package list, so a changed list builds a new root instead of reusing the old
  local tarball
  tarball=$cache/debian-bookworm-$(printf '%s' "$base_packages" | sha256sum | cut -c1-12).tar
  if [ -s "$tarball" ]; then echo "$tarball"; return; fi
  if ! command -v debootstrap >/dev/null; then
    echo "build-image.sh: installing debootstrap" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  fi
  mkdir -p "$cache"
  local root
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  echo "build-image.sh: debootstrap bookworm into $root (a few minutes)" >&2
  debootstrap --variant=minbase --include="$base_packages" bookworm "$root" "$mirror" >&2
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
  echo "$tarball"
}

if [ "$base" = local ]; then
  if ! $docker image inspect "$local_base_tag" >/dev/null 2>&1; then
    tarball=$(local_rootfs_tarball)
    echo "build-image.sh: importing $tarball as $local_base_tag" >&2
    $docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      "$tarball" "$local_base_tag" >/dev/null
  fi
  base_image=$local_base_tag
fi
[ "$base_only" = 1 ] && exit 0

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
echo "build-image.sh: building the wheelhouse with $PYTHON" >&2
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check -c "$here/constraints.txt" \
  --wheel-dir "$ctx/wheels" "$here" >&2
cp "$here/Dockerfile" "$here/constraints.txt" "$here/scripts/docker-entrypoint.sh" "$ctx/"

echo "build-image.sh: docker build $tag from $base_image" >&2
DOCKER_BUILDKIT=0 $docker build --quiet --build-arg "BASE=$base_image" \
  --build-arg "VERSION=$version" -t "$tag" "$ctx" >/dev/null
echo "$tag"
