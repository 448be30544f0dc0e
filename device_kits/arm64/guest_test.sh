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
# Knobs written by run_test.sh (the kernel command line cannot carry them): ARM64_STEPS (which
# steps; they run in the order below), ARM64_CORE=1 (core dumps of processes that ask for them, into
# $SHARE/cores), experiments.txt (one "label|python|train_check.py args" per line).
ARM64_STEPS="python install patch alt-install op-probe doctor bench train-check litert-rank0 bisect experiments agent"
ARM64_CORE=0
# shellcheck disable=SC1091
[ -f "$SHARE/params.env" ] && . "$SHARE/params.env"
mkdir -p "$RES"
wants() { case " $ARM64_STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ "$ARM64_CORE" = 1 ]; then
  mkdir -p "$SHARE/cores"
  echo "$SHARE/cores/core.%e.%p" > /proc/sys/kernel/core_pattern
  echo "FEDLAB-GUEST: core dumps to $(cat /proc/sys/kernel/core_pattern)"
fi
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
  # A persistent disk (run_test.sh ARM64_DISK=overlay) keeps the venv of an earlier boot:
  # then only the fedlab wheel is reinstalled.
  if "$VENV/bin/python" -c "import ai_edge_litert, numpy" 2>/dev/null; then
    echo "venv kept from an earlier boot"
    "$VENV/bin/python" -m pip install --no-index --no-deps --force-reinstall \
      --disable-pip-version-check "$SHARE"/kit/wheels/fedlab-*.whl || return 1
    return 0
  fi
  python3 -m venv "$VENV" || return 1
  "$VENV/bin/python" -m pip install --no-index --disable-pip-version-check \
    --find-links "$SHARE/wheels" --find-links "$SHARE/kit/wheels" \
    -r "$SHARE/kit/requirements-device.txt" || return 1
  "$VENV/bin/python" -m pip install --no-index --no-deps --disable-pip-version-check \
    "$SHARE"/kit/wheels/fedlab-*.whl || return 1
  "$VENV/bin/python" -m pip list --disable-pip-version-check
}

# Other ai-edge-litert versions (wheels in $SHARE/altwheels) in their own venvs,
# /opt/litert-VERSION, for experiments.txt lines whose python is "litert-VERSION".
alt_install() {
  local whl ver
  for whl in "$SHARE"/altwheels/ai_edge_litert-*.whl; do
    ver="$(basename "$whl" | cut -d- -f2)"
    if /opt/litert-"$ver"/bin/python -c "import ai_edge_litert" 2>/dev/null; then
      echo "litert $ver: kept"
      continue
    fi
    python3 -m venv /opt/litert-"$ver" || return 1
    /opt/litert-"$ver"/bin/python -m pip install --no-index --disable-pip-version-check \
      --find-links "$SHARE/wheels" --find-links "$SHARE/altwheels" "$whl" || return 1
  done
}

# experiments.txt: "label|python|SCRIPT arguments" (python: "venv" or "litert-VER"; SCRIPT:
# train_check.py or op_probe.py, run from the share). train_check.py results go to
# results/exp-LABEL.json; every output line is prefixed with the label.
experiments() {
  local label py script args rc bad=0
  while IFS='|' read -r label py args; do
    case "$label" in '' | '#'*) continue ;; esac
    if [ "$py" = venv ]; then py="$VENV/bin/python"; else py="/opt/$py/bin/python"; fi
    script="${args%% *}"
    args="${args#"$script"}"
    [ "$script" = train_check.py ] && args="--json $RES/exp-$label.json $args"
    # shellcheck disable=SC2086
    "$py" "$SHARE/$script" $args 2>&1 | sed "s/^/$label: /"
    rc="${PIPESTATUS[0]}"
    echo "$label: exit $rc"
    [ "$rc" = 0 ] || bad=1
  done < "$SHARE/experiments.txt"
  return "$bad"
}

export -f machine install_kit alt_install experiments
export SHARE VENV
PY="$VENV/bin/python"
wants python && step python machine
wants install && step install install_kit
# guest_patch.sh (run_test.sh ARM64_GUEST_PATCH): edits the installed venv, e.g. a candidate
# fix of fedlab/edge, so the agent round can prove it before the kit carries it.
if wants patch && [ -f "$SHARE/guest_patch.sh" ]; then
  step patch bash "$SHARE/guest_patch.sh"
fi
wants alt-install && compgen -G "$SHARE/altwheels/*.whl" > /dev/null && step alt-install alt_install
if wants op-probe && compgen -G "$SHARE/probe/*.tflite" > /dev/null; then
  step op-probe "$PY" "$SHARE/op_probe.py" run "$SHARE"/probe/*.tflite
fi
wants doctor && step doctor "$PY" -m fedlab.edge.doctor --config "$SHARE/device/device.json"
wants bench && step bench "$PY" -m fedlab.edge.bench "$SHARE/kit/model/model.tflite" --runs 20
# lr/mu/beta fed as shape (1,): rank-0 values crash ai-edge-litert's aarch64 binding (README
# "The train crash"); the device must feed them so too.
wants train-check && step train-check "$PY" "$SHARE/train_check.py" --scalars-1d \
  --data "$SHARE/device/data.npz" --json "$RES/train_check.json" "$SHARE/kit/model/model.tflite"
# That LiteRT bug itself: exit 139 while it is there (host.py collect reports it, not a failure).
wants litert-rank0 && step litert-rank0 "$PY" "$SHARE/op_probe.py" resize-empty \
  "$SHARE/kit/model/model.tflite"
if wants bisect && compgen -G "$SHARE/bisect/*.tflite" > /dev/null; then
  step bisect "$PY" "$SHARE/train_check.py" --steps 10 --resolvers AUTO,BUILTIN_REF \
    --json "$RES/bisect.json" "$SHARE"/bisect/*.tflite
fi
if wants experiments && [ -f "$SHARE/experiments.txt" ]; then
  step experiments experiments
fi
wants agent && step agent "$PY" -m fedlab.edge.agent --config "$SHARE/device/device.json"
sync
echo "FEDLAB-GUEST: all steps done"
