#!/usr/bin/env bash
# Build the cached node root (`make node-root`): a Debian bookworm tree that boots with systemd
# as PID 1 under `systemd-nspawn --boot`, the stand-in for a Flatcar host in the PID-1 tests and
# the cluster sandbox. Nodes never write to it: each one mounts an overlayfs over it.
#
# The root is built in a temp dir next to its final place and renamed into place only when
# complete, so a half-built root is never used. `ROOT/.complete` holds a hash of the package
# list and this script's build steps: a second run with the same list returns at once, a
# changed list rebuilds. Concurrent runs serialise on a lock file.
#
# Steps: debootstrap a minbase system, copy the host's apt configuration and resolv.conf in
# (this machine reaches Debian's packages only the way the host's apt is configured), install
# the packages with apt inside a chroot (services not started: policy-rc.d), then disable the
# services the packages enable by themselves (docker, containerd, etcd): a node boots with
# only systemd, journald and dbus, and whoever boots it decides what else runs (a node that
# shares the host's network must not start a second etcd on 2379 or a dockerd on the host's
# bridge).
#
# Usage: scripts/build-root.sh [--print-path] [--force]
#   --print-path   print the root's path and exit (no build)
#   --force        rebuild even when the stamp matches
# Environment:
#   SWARMKEEPER_CACHE   where the root is kept                        (/var/cache/swarmkeeper)
#   DEBIAN_MIRROR       mirror for debootstrap's first stage          (http://deb.debian.org/debian)
set -euo pipefail

cache=${SWARMKEEPER_CACHE:-/var/cache/swarmkeeper}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
final=$cache/node-root
packages=(systemd systemd-sysv dbus docker.io etcd-server etcd-client git python3 python3-venv
  ca-certificates iproute2 iputils-ping procps curl)
# Units the packages enable whose start a node's booter decides, not the image.
disabled_units=(docker.service docker.socket containerd.service etcd.service)
# Bump when the build steps change in a way the package list does not show.
recipe=3

force=0
case ${1:-} in
  --print-path) echo "$final"; exit 0 ;;
  --force) force=1 ;;
  '') ;;
  -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
  *) echo "build-root.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "build-root.sh: must run as root (debootstrap and chroot need it)" >&2
  exit 1
fi

stamp=$(printf '%s\n' "$suite" "$recipe" "${packages[@]}" "${disabled_units[@]}" | sha256sum | cut -d' ' -f1)

complete() { [ -f "$final/.complete" ] && [ "$(cat "$final/.complete")" = "$stamp" ]; }

if [ "$force" = 0 ] && complete; then
  echo "$final"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/node-root.lock"
flock 9
# Another run may have finished it while we waited for the lock.
if [ "$force" = 0 ] && complete; then
  echo "$final"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  echo "build-root.sh: installing debootstrap" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

work=$(mktemp -d "$cache/node-root.build.XXXXXX")
cleanup() {
  # A failed chroot step can leave its API mounts behind; unmount before removing the tree.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$work/root/$m" 2>/dev/null && umount -l "$work/root/$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/root
started=$(date +%s)

echo "build-root.sh: debootstrap $suite (minbase) into $root" >&2
debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2

# The host's apt sources and settings replace debootstrap's single mirror line. Files apt
# would ignore (a disabled list, say) are not copied.
rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  dest=$root${f}
  mkdir -p "$(dirname "$dest")"
  cp "$f" "$dest"
  # A keyring a source names must be in the root too, or apt refuses that source.
  sed -n 's/^[[:space:]]*Signed-By:[[:space:]]*\(\/.*\)$/\1/p; s/.*signed-by=\([^] ]*\).*/\1/p' "$f" |
    while read -r key; do
      if [ -f "$key" ] && [ ! -e "$root$key" ]; then
        mkdir -p "$(dirname "$root$key")"
        cp "$key" "$root$key"
      fi
    done
done
if [ -z "$(ls "$root/etc/apt/sources.list.d/" 2>/dev/null)" ] && [ ! -f "$root/etc/apt/sources.list" ]; then
  echo "deb $mirror $suite main" >"$root/etc/apt/sources.list"
fi
cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/"
[ -d /etc/apt/trusted.gpg.d ] && cp -a /etc/apt/trusted.gpg.d/. "$root/etc/apt/trusted.gpg.d/"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

# Package scripts must not start services in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
echo "build-root.sh: apt-get install ${packages[*]}" >&2
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' sh "${packages[@]}" >&2
chroot "$root" systemctl disable "${disabled_units[@]}" >&2 2>/dev/null || true
for m in dev/pts dev sys proc; do umount "$root/$m"; done

rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
# debootstrap copied the build host's name; a node's name comes from whoever boots it.
rm -f "$root/etc/hostname"
# nspawn gives each boot its own machine id; an empty file marks the image as "not booted yet".
: >"$root/etc/machine-id"
echo "$stamp" >"$root/.complete"

# Swap in: the old root (if any) is moved aside first and removed after, so `final` is either
# the old complete root or the new complete one, never a partial tree.
if [ -e "$final" ]; then
  mv "$final" "$work/old"
fi
mv "$root" "$final"
echo "build-root.sh: built $final in $(($(date +%s) - started)) s" >&2
echo "$final"
