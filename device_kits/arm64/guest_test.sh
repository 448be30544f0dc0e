#!/usr/bin/env bash
# Runs INSIDE the arm64 VM (started by /sbin/fedlab-test-init from the 9p share).
#
# Steps, each bounded by a timeout and recorded as results/step-NAME.json (exit code, seconds)
# with its output in results/NAME.log: python (what machine this is), install (a venv, the
# kit's requirements + the fedlab wheel, offline: --no-index), doctor, bench, train-check
# (the model's train signature under every op resolver, one process each), agent (one round
# over the file transport; the host reads the update back). Optional: probe/*.tflite
# (op_probe.py, right after install) and bisect/*.tflite (train_check.py).
set -uo pipefail

SHARE="${SHARE:-/mnt/fedlab}"
RES="$SHARE/results"
VENV=/opt/fedlab/venv
STEP_TIMEOUT="${STEP_TIMEOUT:-1500}"
mkdir -p "$RES"
read -r uptime _ < /proc/uptime
echo "{\"booted_after_s\": $uptime}" > "$RES/boot.json"
echo "FEDLAB-GUEST: kernel up for ${uptime} s when the test started"

step() {
  local name="$1" t0 rc t
  shift
  echo "FEDLAB-GUEST: step $name: $*"
  t0=$(date +%s.%N)
  # bash -c: a step may be one of the functions below (exported), which timeout cannot run.
  timeout "$STEP_TIMEOUT" bash -c '"$@"' "$name" "$@" > "$RES/$name.log" 2>&1
  rc=$?
  t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '{"name": "%s", "rc": %d, "seconds": %s}\n' "$name" "$rc" "$t" > "$RES/step-$name.json"
  sed 's/^/    | /' "$RES/$name.log" | tail -n 40
  echo "FEDLAB-GUEST: step $name: exit $rc in $t s"
  return "$rc"
}

machine() {
  uname -a
  python3 --version
  nproc
  grep -m1 -i 'Features' /proc/cpuinfo
  grep -m1 -i 'CPU part' /proc/cpuinfo
  free -m
}

install_kit() {
  python3 -m venv "$VENV" || return 1
  "$VENV/bin/python" -m pip install --no-index --disable-pip-version-check \
    --find-links "$SHARE/wheels" --find-links "$SHARE/kit/wheels" \
    -r "$SHARE/kit/requirements-device.txt" || return 1
  "$VENV/bin/python" -m pip install --no-index --no-deps --disable-pip-version-check \
    "$SHARE"/kit/wheels/fedlab-*.whl || return 1
  "$VENV/bin/python" -m pip list --disable-pip-version-check
}

export -f machine install_kit
export SHARE VENV
step python machine
step install install_kit
PY="$VENV/bin/python"
if compgen -G "$SHARE/probe/*.tflite" > /dev/null; then
  step op-probe "$PY" "$SHARE/op_probe.py" run "$SHARE"/probe/*.tflite
fi
step doctor "$PY" -m fedlab.edge.doctor --config "$SHARE/device/device.json"
step bench "$PY" -m fedlab.edge.bench "$SHARE/kit/model/model.tflite" --runs 20
step train-check "$PY" "$SHARE/train_check.py" --data "$SHARE/device/data.npz" \
  --json "$RES/train_check.json" "$SHARE/kit/model/model.tflite"
if compgen -G "$SHARE/bisect/*.tflite" > /dev/null; then
  step bisect "$PY" "$SHARE/train_check.py" --steps 10 --resolvers AUTO,BUILTIN_REF \
    --json "$RES/bisect.json" "$SHARE"/bisect/*.tflite
fi
step agent "$PY" -m fedlab.edge.agent --config "$SHARE/device/device.json"
sync
echo "FEDLAB-GUEST: all steps done"
