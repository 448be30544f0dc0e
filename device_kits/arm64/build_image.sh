#!/usr/bin/env bash
# Build the arm64 test VM: a Debian bookworm arm64 root (debootstrap, second stage under
# qemu-user-static), the Debian arm64 kernel and initrd taken out of it, and an ext4 image.
#
# Usage: device_kits/arm64/build_image.sh [OUT]      (default OUT: build/arm64)
#
# Writes OUT/vmlinuz, OUT/initrd.img, OUT/root.img and OUT/image.stamp; does nothing when the
# stamp is newer than this script and guest_init.sh. Needs root, network (the Debian mirror) and the Debian
# packages qemu-user-static, debootstrap, e2fsprogs (installed here when missing).
# The root boots with init=/sbin/fedlab-test-init: PID 1 mounts the 9p share "fedlab",
# runs its guest_test.sh, and powers the VM off. No systemd, no login, no network.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/../../build/arm64}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# python3-venv brings ensurepip (pip installs the kit's wheels offline); kmod for modprobe.
PACKAGES=python3,python3-venv,linux-image-arm64,initramfs-tools,kmod,procps
log() { printf '[arm64-image] %s\n' "$*"; }
die() { printf '[arm64-image] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -f "$OUT/image.stamp" ] && [ "$OUT/image.stamp" -nt "$HERE/build_image.sh" ] \
   && [ "$OUT/image.stamp" -nt "$HERE/guest_init.sh" ] && [ -f "$OUT/root.img" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
  log "image up to date: $OUT ($(cat "$OUT/image.stamp"))"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"

need=""
command -v qemu-aarch64-static >/dev/null || need="$need qemu-user-static"
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v mkfs.ext4 >/dev/null || need="$need e2fsprogs"
if [ -n "$need" ]; then
  log "installing Debian packages:$need"
  apt-get update -qq
  # shellcheck disable=SC2086  # a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need binfmt-support >/dev/null
fi

# The second stage runs arm64 binaries in a chroot: binfmt_misc must know qemu-aarch64
# (a container may have binfmt_misc unmounted).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (needed to run arm64 binaries in the chroot)"
  update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
fi

start=$(date +%s)
ROOT="$OUT/rootfs"
rm -rf "$ROOT" "$OUT/root.img" "$OUT/image.stamp"
log "debootstrap $SUITE arm64 from $MIRROR → $ROOT (stage 1: download and unpack)"
debootstrap --foreign --arch=arm64 --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
  > "$OUT/debootstrap.log" 2>&1 \
  || { tail -30 "$OUT/debootstrap.log" >&2; die "debootstrap failed (log: $OUT/debootstrap.log)"; }
# Before the kernel package is configured: an initrd with only what this VM needs to mount
# its root (virtio disk, ext4). The default (MODULES=most) copies ~2000 modules through
# emulated shell scripts, twice (kernel postinst, then the initramfs-tools trigger): ~40 min.
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$ROOT/etc/initramfs-tools/conf.d/fedlab-vm.conf"
printf '%s\n' virtio_mmio virtio_pci virtio_blk ext4 crc32c_generic > "$ROOT/etc/initramfs-tools/modules"
log "debootstrap stage 2 (emulated by qemu-user-static)"
chroot "$ROOT" /debootstrap/debootstrap --second-stage >> "$OUT/debootstrap.log" 2>&1 \
  || { tail -30 "$OUT/debootstrap.log" >&2; die "debootstrap stage 2 failed (log: $OUT/debootstrap.log)"; }

kver="$(basename "$(ls -d "$ROOT"/lib/modules/*)")"
[ -f "$ROOT/boot/initrd.img-$kver" ] || die "no initrd for kernel $kver in the root"
cp "$ROOT/boot/vmlinuz-$kver" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$OUT/initrd.img"

echo fedlab-arm64 > "$ROOT/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$ROOT/etc/fstab"
install -m 0755 "$HERE/guest_init.sh" "$ROOT/sbin/fedlab-test-init"
# Unprivileged user for the agent (as on a real board: the service runs as fedlab).
chroot "$ROOT" useradd --system --create-home --home-dir /var/lib/fedlab --shell /usr/sbin/nologin fedlab
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/*

log "ext4 image (3 GiB, sparse)"
truncate -s 3G "$OUT/root.img"
mkfs.ext4 -q -F -L fedlab-root -d "$ROOT" "$OUT/root.img"
rm -rf "$ROOT"
echo "bookworm arm64, kernel $kver, built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start )) s" \
  > "$OUT/image.stamp"
log "done: $(cat "$OUT/image.stamp")"
