# shellcheck shell=bash
# Shared steps of the fedlab device setup scripts (sourced, not run).
#
# Every command that changes the system goes through `run`, which only prints it in a dry
# run. Files are written under $PREFIX (default /), so `--dry-run --prefix DIR` installs the
# kit's files into DIR and prints what it would do to the system.

PREFIX="/"
DRY_RUN=0
KIT_DIR=""
SERVICE_USER="fedlab"
TRUSTED_KEY=""
ALLOW_ROLLBACK=0
VERIFY_KEY=""

log() { printf '[fedlab-setup] %s\n' "$*"; }
die() { printf '[fedlab-setup] ERROR: %s\n' "$*" >&2; exit 1; }

run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '[dry-run] %s\n' "$*"
  else
    "$@"
  fi
}

# path INSIDE the target root
p() { printf '%s%s' "${PREFIX%/}" "$1"; }

# shellcheck disable=SC2034  # BOARD is read by coral/setup.sh
parse_common_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --prefix) shift; [ $# -gt 0 ] || die "--prefix needs a folder"; PREFIX="$1" ;;
      --kit) shift; [ $# -gt 0 ] || die "--kit needs a folder"; KIT_DIR="$1" ;;
      --board) shift; [ $# -gt 0 ] || die "--board needs usb or devboard"; BOARD="$1" ;;
      --trusted-key) shift; [ $# -gt 0 ] || die "--trusted-key needs a base64 key"; TRUSTED_KEY="$1" ;;
      --allow-rollback) ALLOW_ROLLBACK=1 ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
  done
  if [ -z "$KIT_DIR" ]; then KIT_DIR="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"; fi
  [ -f "$KIT_DIR/manifest.json" ] || die "$KIT_DIR is not a fedlab kit (no manifest.json)"
  if [ "$PREFIX" != "/" ]; then mkdir -p "$PREFIX"; PREFIX="$(cd "$PREFIX" && pwd)"; fi
  if [ "$DRY_RUN" -eq 0 ] && [ "$PREFIX" = "/" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or use --dry-run --prefix DIR"
  fi
  # Before anything is installed or run: the signature, every hash, no unlisted file,
  # not older than the installed kit.
  VERIFY_KEY="$(pinned_key)"
  verify_kit_dir "$KIT_DIR" "$VERIFY_KEY" "$(p /opt/fedlab/kit)" \
    || die "kit refused: $KIT_DIR (nothing was installed)"
  log "kit verified: signature, every file's SHA-256, nothing unlisted"
}

# The workbench key this device trusts: the one pinned in its device.json; on a first
# install --trusted-key, else the key in the kit's own template (trust on first use).
pinned_key() {
  local config key
  config="$(p /etc/fedlab/device.json)"
  if [ -f "$config" ]; then
    key="$(python3 -I -c 'import json, sys; print(json.load(open(sys.argv[1]))["trusted_key"])' "$config" 2>/dev/null)" \
      || die "$config has no readable trusted_key: cannot verify the kit"
    if [ -n "$TRUSTED_KEY" ] && [ "$TRUSTED_KEY" != "$key" ]; then
      die "--trusted-key differs from the key pinned in $config; refusing the kit"
    fi
  elif [ -n "$TRUSTED_KEY" ]; then
    key="$TRUSTED_KEY"
  else
    key="$(python3 -I -c 'import json, sys; print(json.load(open(sys.argv[1]))["trusted_key"])' "$KIT_DIR/device.json.template" 2>/dev/null)" \
      || die "$KIT_DIR/device.json.template has no readable trusted_key"
    log "first install: trusting the kit's own key $key (pass --trusted-key to check it)" >&2
  fi
  printf '%s' "$key"
}

# verify_kit_dir DIR KEY INSTALLED: the Ed25519 signature of DIR/manifest.json with KEY
# (openssl), the SHA-256 of every listed file, no file that is not listed, and (unless
# --allow-rollback) a kit not older than the verified one in INSTALLED. Reads only.
verify_kit_dir() {
  command -v openssl >/dev/null 2>&1 || die "openssl is needed to verify the kit (apt-get install openssl)"
  python3 -I - "$1" "$2" "$3" "$ALLOW_ROLLBACK" <<'PY'
import base64, hashlib, json, os, subprocess, sys, tempfile
from pathlib import Path

kit, key, installed, allow_rollback = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"

def fail(message):
    print(f"[fedlab-setup] ERROR: {message}", file=sys.stderr)
    sys.exit(1)

def signed_manifest(folder):
    """The manifest's parsed body if its signature verifies with the pinned key, else None."""
    body_path, sig_path = folder / "manifest.json", folder / "manifest.sig"
    if not body_path.is_file() or not sig_path.is_file():
        return None
    try:
        raw = base64.b64decode(key, validate=True)
        sig = base64.b64decode(sig_path.read_bytes().strip(), validate=True)
    except ValueError:
        return None
    if len(raw) != 32:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        der, sig_file = Path(tmp) / "key.der", Path(tmp) / "sig.bin"
        der.write_bytes(bytes.fromhex("302a300506032b6570032100") + raw)
        sig_file.write_bytes(sig)
        proc = subprocess.run(
            ["openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", str(der),
             "-rawin", "-in", str(body_path), "-sigfile", str(sig_file)],
            capture_output=True, check=False)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(body_path.read_bytes())
    except ValueError:
        return None

manifest = signed_manifest(kit)
if manifest is None:
    fail(f"kit refused: {kit}/manifest.sig does not verify with the trusted key {key[:12]}… "
         "(the manifest was changed, or signed by another workbench)")
files = manifest.get("files")
if not isinstance(files, dict):
    fail("the signed manifest lists no files")
for name, expected in sorted(files.items()):
    if not isinstance(name, str) or os.path.isabs(name) or ".." in Path(name).parts:
        fail(f"the manifest lists a path outside the kit: {name!r}")
    path = kit / name
    if not path.is_file():
        fail(f"kit refused: {name}: listed in the manifest but missing from the kit")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        fail(f"kit refused: {name}: SHA-256 does not match the signed manifest (modified after signing)")
listed = set(files) | {"manifest.json", "manifest.sig"}
unlisted = sorted(str(p.relative_to(kit)) for p in kit.rglob("*")
                  if not p.is_dir() and str(p.relative_to(kit)) not in listed)
if unlisted:
    fail(f"kit refused: files not in the signed manifest: {unlisted[:5]} (a kit holds exactly what was signed)")
current = signed_manifest(installed) if installed.resolve() != kit.resolve() else None
if current is not None and not allow_rollback:
    new = str(manifest.get("info", {}).get("created", ""))
    old = str(current.get("info", {}).get("created", ""))
    if new < old:
        fail(f"kit refused: this kit (built {new or 'at an unknown time'}) is older than the installed one "
             f"(built {old}): refusing a rollback (--allow-rollback to force it)")
PY
}

check_platform() {
  local arch py
  arch="$(uname -m)"
  if [ "$arch" != "aarch64" ]; then
    if [ "$DRY_RUN" -eq 1 ]; then log "note: $arch is not aarch64 (fine for a dry run)";
    else die "this kit is built for 64-bit ARM (aarch64); this machine is $arch"; fi
  fi
  py="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)"
  if [ "$py" != "3.11" ]; then
    if [ "$DRY_RUN" -eq 1 ]; then log "note: python3 is $py; the kit's requirements are pinned for 3.11";
    else die "python3 is $py; the kit needs Python 3.11 (Raspberry Pi OS Bookworm ships it)"; fi
  fi
}

install_apt_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "apt packages present: $*"; return; fi
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

create_service_user() {
  if id "$SERVICE_USER" >/dev/null 2>&1; then
    log "service user $SERVICE_USER exists"
  else
    run useradd --system --home-dir /var/lib/fedlab --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
}

install_kit_files() {
  local dest tmp
  dest="$(p /opt/fedlab/kit)"
  mkdir -p "$(p /opt/fedlab)" "$(p /etc/fedlab)" "$(p /var/lib/fedlab/state)" "$(p /var/lib/fedlab/exchange)"
  if [ "$(cd "$KIT_DIR" && pwd)" != "$(cd "$dest" 2>/dev/null && pwd)" ]; then
    # Replace the installed kit in one rename, so the agent never sees half a kit.
    tmp="$(mktemp -d "$(p /opt/fedlab)/.kit.XXXXXX")"
    cp -a "$KIT_DIR/." "$tmp/"
    # The copy is what gets installed: verify it too (the source may change under us).
    verify_kit_dir "$tmp" "$VERIFY_KEY" "$dest" || { rm -rf "$tmp"; die "kit copy refused: $tmp"; }
    rm -rf "$dest.old"
    if [ -d "$dest" ]; then mv "$dest" "$dest.old"; fi
    mv "$tmp" "$dest"
    rm -rf "$dest.old"
    log "kit installed in $dest"
  fi
  local config
  config="$(p /etc/fedlab/device.json)"
  if [ -f "$config" ]; then
    log "kept existing $config"
  else
    sed "s/\"device-001\"/\"$(hostname)\"/" "$KIT_DIR/device.json.template" > "$config"
    chmod 0644 "$config"
    log "wrote $config (edit data_path and transport.folder for this board)"
  fi
}

install_python_env() {
  local venv wheel wheels
  venv=/opt/fedlab/venv
  # From the installed (verified) copy only, and exactly one wheel.
  wheels=("$(p /opt/fedlab/kit)"/wheels/fedlab-*.whl)
  [ -f "${wheels[0]}" ] || die "no fedlab wheel in $(p /opt/fedlab/kit)/wheels"
  [ ${#wheels[@]} -eq 1 ] || die "more than one fedlab wheel in the kit: ${wheels[*]}"
  wheel="$(basename "${wheels[0]}")"
  if [ -x "$(p $venv)/bin/python" ]; then log "venv $venv exists"; else run python3 -m venv "$(p $venv)"; fi
  run "$(p $venv)/bin/pip" install --disable-pip-version-check -r "$(p /opt/fedlab/kit)/requirements-device.txt"
  run "$(p $venv)/bin/pip" install --disable-pip-version-check --no-deps --force-reinstall "$(p /opt/fedlab/kit)/wheels/$wheel"
}

install_service() {
  local unit
  unit="$(p /etc/systemd/system/fedlab-agent.service)"
  mkdir -p "$(dirname "$unit")"
  install -m 0644 "$KIT_DIR/fedlab-agent.service" "$unit"
  run chown -R "$SERVICE_USER:$SERVICE_USER" "$(p /var/lib/fedlab)"
  run systemctl daemon-reload
  run systemctl enable --now fedlab-agent.service
}

run_doctor() {
  run "$(p /opt/fedlab/venv)/bin/python" -m fedlab.edge.doctor --config "$(p /etc/fedlab/device.json)"
}

# The agent itself, the same on every board. Argument: a step to run once the
# service user exists and before the service starts (Coral: udev rules, plugdev), or "".
install_agent() {
  create_service_user
  if [ -n "$1" ]; then "$1"; fi
  install_kit_files
  install_python_env
  install_service
  run_doctor
  log "done"
}
