#!/usr/bin/env bash
# Compile a full-integer int8 .tflite for the Edge TPU (on the workbench host, x86-64 only).
#
# Usage: ./compile_edgetpu.sh MODEL.tflite [OUT_DIR]
#
# Writes OUT_DIR/MODEL_edgetpu.tflite (default OUT_DIR: the model's folder) and the
# compiler's log. Then rebuild the kit with build_kit(..., edgetpu_model=that file).
set -euo pipefail

die() { printf 'compile_edgetpu: %s\n' "$*" >&2; exit "${2:-1}"; }

[ $# -ge 1 ] || { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
model="$1"
out="${2:-$(dirname "$model")}"
[ -f "$model" ] || die "$model: no such file" 2

arch="$(uname -m)"
[ "$arch" = "x86_64" ] || die "the Edge TPU compiler runs only on x86-64 Linux; this machine is $arch" 3

if ! command -v edgetpu_compiler >/dev/null 2>&1; then
  cat >&2 <<'HELP'
compile_edgetpu: edgetpu_compiler is not installed. On a Debian/Ubuntu x86-64 host:
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg
  echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
  sudo apt-get update && sudo apt-get install -y edgetpu-compiler
HELP
  exit 4
fi

mkdir -p "$out"
edgetpu_compiler --show_operations --out_dir "$out" "$model"
echo "compiled: $out/$(basename "${model%.tflite}")_edgetpu.tflite"
