#!/usr/bin/env bash
# make test-arm64: the kit on a full-system aarch64 VM (qemu-system-aarch64, TCG), end to end.
#
# Usage: device_kits/arm64/run_test.sh          (from anywhere; uses the repository's .venv)
#
# 1. build_image.sh: Debian bookworm arm64 root + kernel + initrd in build/arm64 (cached);
# 2. host.py prepare: a Raspberry Pi kit, a device folder, one published round task and
#    the kit's aarch64 wheels, in the share build/arm64/share;
# 3. boot the VM (Cortex-A72 = a Raspberry Pi 4's core; ARM64_SMP vCPUs, ARM64_MEM MiB,
#    disk in -snapshot mode so the image stays clean), which runs guest_test.sh from the share
#    over 9p and powers off; console in build/arm64/console.log;
# 4. host.py collect: the summary; exit 1 when any step failed.
#
# Environment: ARM64_TIMEOUT (seconds for the whole boot+test, default 5400), ARM64_SMP (2),
# ARM64_MEM (2048), ARM64_CPU (cortex-a72), ARM64_BISECT=1 (also export one-layer models
# into the share and run their train signatures in the VM), ARM64_PROBE=1 (one-op probes of
# the loss, the head backward and the variable update, op_probe.py, right after install).
# Experiment knobs (README "Finding the train crash"): ARM64_STEPS (guest steps to run, in
# guest_test.sh's order; default all), ARM64_EXPERIMENTS=FILE (copied to the share as
# experiments.txt, run by the "experiments" step), ARM64_VARIANTS=1 (variant_models.py into
# share/variants), ARM64_ALT=1 (build/arm64/altwheels → share/altwheels, other ai-edge-litert
# versions for the "alt-install" step), ARM64_CORE=1 (core dumps into share/cores),
# ARM64_GUEST_PATCH=FILE (a script the guest runs right after install, to edit the
# installed venv: e.g. a candidate fix of fedlab/edge, proven by the agent round), ARM64_APPEND
# (more kernel arguments), ARM64_DISK=overlay (boot a persistent sparse copy
# build/arm64/venv.img of root.img: the first boot writes the installed venv into it, later
# ones boot it in -snapshot mode and skip the 3-minute install), ARM64_PREPARE=0 (reuse
# the share's kit and task as they are).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$ROOT/build/arm64"
SHARE="$OUT/share"
PY="$ROOT/.venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL=2
log() { printf '[test-arm64] %s\n' "$*"; }

command -v qemu-system-aarch64 >/dev/null || {
  log "installing qemu-system-arm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null
}
t0=$(date +%s)
nice -n 19 bash "$HERE/build_image.sh" "$OUT"
t1=$(date +%s)
mkdir -p "$SHARE"
rm -rf "$SHARE/results" "$SHARE/cores"
if [ "${ARM64_PREPARE:-1}" = 1 ]; then
  nice -n 19 "$PY" "$HERE/host.py" prepare "$SHARE" "$OUT/wheels" \
    2> >(grep -v -E 'cu(DNN|FFT|BLAS) factory|is ignored: it is neither' >&2)
fi
{
  [ -n "${ARM64_STEPS:-}" ] && echo "ARM64_STEPS='$ARM64_STEPS'"
  echo "ARM64_CORE=${ARM64_CORE:-0}"
} > "$SHARE/params.env"
rm -f "$SHARE/experiments.txt" "$SHARE/guest_patch.sh"
[ -n "${ARM64_EXPERIMENTS:-}" ] && cp "$ARM64_EXPERIMENTS" "$SHARE/experiments.txt"
[ -n "${ARM64_GUEST_PATCH:-}" ] && cp "$ARM64_GUEST_PATCH" "$SHARE/guest_patch.sh"
rm -rf "$SHARE/variants" "$SHARE/altwheels"
if [ "${ARM64_VARIANTS:-0}" = 1 ]; then
  nice -n 19 "$PY" "$HERE/variant_models.py" "$SHARE/variants" > /dev/null 2>&1
fi
[ "${ARM64_ALT:-0}" = 1 ] && cp -r "$OUT/altwheels" "$SHARE/altwheels"
if [ "${ARM64_BISECT:-0}" = 1 ]; then
  nice -n 19 "$PY" "$HERE/bisect_models.py" "$SHARE/bisect"
elif [ "${ARM64_PREPARE:-1}" = 1 ]; then
  rm -rf "$SHARE/bisect"
fi
if [ "${ARM64_PROBE:-0}" = 1 ]; then
  nice -n 19 "$PY" "$HERE/op_probe.py" export "$SHARE/probe" > /dev/null 2>&1
else
  rm -rf "$SHARE/probe"
fi
rm -rf "$SHARE/wheels"
cp -r "$OUT/wheels" "$SHARE/wheels"
cp "$HERE/guest_test.sh" "$HERE/train_check.py" "$HERE/op_probe.py" "$SHARE/"
t2=$(date +%s)

disk=(-snapshot -drive "if=virtio,format=raw,file=$OUT/root.img")
if [ "${ARM64_DISK:-}" = overlay ]; then
  # A sparse copy of root.img (qemu-img, for a qcow2 overlay, is not always installed).
  if [ ! -f "$OUT/venv.img" ] || [ "$OUT/venv.img" -ot "$OUT/root.img" ]; then
    rm -f "$OUT/venv.img"
    cp --sparse=always "$OUT/root.img" "$OUT/venv.img"
    disk=(-drive "if=virtio,format=raw,file=$OUT/venv.img")  # this boot's install stays
    log "new persistent disk $OUT/venv.img"
  else
    disk=(-snapshot -drive "if=virtio,format=raw,file=$OUT/venv.img")
  fi
fi
log "booting the arm64 VM (TCG, ${ARM64_CPU:-cortex-a72}, ${ARM64_SMP:-2} vCPU, ${ARM64_MEM:-2048} MiB); console: $OUT/console.log"
rc=0
timeout "${ARM64_TIMEOUT:-5400}" nice -n 19 qemu-system-aarch64 \
  -M virt -cpu "${ARM64_CPU:-cortex-a72}" -smp "${ARM64_SMP:-2}" -m "${ARM64_MEM:-2048}" \
  -nographic -no-reboot -nic none \
  -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" \
  -append "root=/dev/vda rw console=ttyAMA0 init=/sbin/fedlab-test-init loglevel=4 ${ARM64_APPEND:-}" \
  "${disk[@]}" \
  -virtfs "local,path=$SHARE,mount_tag=fedlab,security_model=none,id=fedlab" \
  < /dev/null > "$OUT/console.log" 2>&1 || rc=$?
t3=$(date +%s)
grep -E 'FEDLAB-GUEST|Kernel panic|Segmentation|segfault' "$OUT/console.log" || true
[ "$rc" -eq 124 ] && log "the VM did not finish within ${ARM64_TIMEOUT:-5400} s (killed)"
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && log "qemu exited with $rc"
boot="?"
[ -f "$SHARE/results/boot.json" ] && boot="$(tr -dc '0-9.' < "$SHARE/results/boot.json")"
log "image $((t1 - t0)) s (cached when 0-ish), prepare $((t2 - t1)) s, VM $((t3 - t2)) s (kernel to test start: ${boot} s of guest uptime)"
"$PY" "$HERE/host.py" collect "$SHARE" 2> >(grep -v -E 'cu(DNN|FFT|BLAS) factory' >&2)
