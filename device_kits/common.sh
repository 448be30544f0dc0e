# shellcheck shell=bash
# Shared steps of the fedlab device setup scripts (sourced, not run).
#
# Three ways to run:
#   /              (default, as root) a real install: files, venv, service user, systemd.
#   --dry-run      files under $PREFIX; every other command is only printed (`run`).
#   --prefix DIR   (without --dry-run) a staged install under DIR: the kit, config, state
#                  folders with their owners and modes, the venv with the vendored wheels and
#                  the final doctor run as the service user, all for real under DIR; commands
#                  that change the host system (apt, useradd, systemctl, udev, swap) go through
#                  `sys_run` and are only printed. The tests install kits this way.

PREFIX="/"
DRY_RUN=0
KIT_DIR=""
SERVICE_USER="fedlab"
TRUSTED_KEY=""
ALLOW_ROLLBACK=0
ONLINE_INSTALL=0
DATA_FILE=""
VERIFY_KEY=""
KIT_WHEELS=""
KIT_PLATFORM=""
KIT_VERSION=""

log() { printf '[fedlab-setup] %s\n' "$*"; }
die() { printf '[fedlab-setup] ERROR: %s\n' "$*" >&2; exit 1; }

run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '[dry-run] %s\n' "$*"
  else
    "$@"
  fi
}

# A command that changes the host system outside $PREFIX: printed, not run, under --prefix.
sys_run() {
  if [ "$DRY_RUN" -eq 0 ] && [ "$PREFIX" != "/" ]; then
    printf '[prefix: not run] %s\n' "$*"
  else
    run "$@"
  fi
}

service_group() { id -gn "$SERVICE_USER" 2>/dev/null || printf '%s' "$SERVICE_USER"; }

# Run a command as the service user (the final doctor: what it can read and write is what
# the agent will be able to).
as_service_user() {
  if command -v runuser >/dev/null 2>&1; then
    run runuser -u "$SERVICE_USER" -- "$@"
  else
    run setpriv --reuid="$SERVICE_USER" --regid="$(service_group)" --init-groups -- "$@"
  fi
}

# A field of the kit's signed manifest info (verified before this is called).
manifest_info() {
  python3 -I -c 'import json, sys; v = json.load(open(sys.argv[1])).get("info", {}).get(sys.argv[2], ""); print(v)' \
    "$KIT_DIR/manifest.json" "$1"
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
      --online-install) ONLINE_INSTALL=1 ;;
      --user) shift; [ $# -gt 0 ] || die "--user needs a user name"; SERVICE_USER="$1" ;;
      --data) shift; [ $# -gt 0 ] || die "--data needs a file"; DATA_FILE="$1"
              [ -f "$DATA_FILE" ] || die "--data $DATA_FILE: no such file" ;;
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
  KIT_WHEELS="$(manifest_info wheels)"
  KIT_PLATFORM="$(manifest_info platform)"
  KIT_VERSION="$(manifest_info kit_version)"
  if [ "$KIT_WHEELS" != "vendored" ]; then
    if [ "$ONLINE_INSTALL" -eq 1 ]; then
      log "WARNING: this kit has no vendored wheels: its requirements come from PyPI, unpinned and outside the signature (--online-install)" >&2
    elif [ "$DRY_RUN" -eq 1 ]; then
      log "WARNING: this kit has no vendored wheels (built without a wheelhouse): a real install refuses it unless run with --online-install" >&2
    else
      die "this kit has no vendored wheels (built without a wheelhouse): its requirements would be downloaded from PyPI unpinned, outside the signature. Rebuild it after 'make wheelhouse', or pass --online-install to accept that (nothing was installed)"
    fi
  fi
}

# The device's state folder (from its device.json when there is one).
state_dir() {
  local config dir
  config="$(p /etc/fedlab/device.json)"
  dir=""
  if [ -f "$config" ]; then
    dir="$(python3 -I -c 'import json, sys; print(json.load(open(sys.argv[1])).get("state_dir", ""))' "$config" 2>/dev/null || true)"
  fi
  printf '%s' "${dir:-$(p /var/lib/fedlab/state)}"
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
  python3 -I - "$1" "$2" "$3" "$ALLOW_ROLLBACK" "$(state_dir)/kit_version.json" <<'PY'
import base64, hashlib, json, os, subprocess, sys, tempfile
from pathlib import Path

kit, key, installed, allow_rollback = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"
record = Path(sys.argv[5])

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
info = manifest.get("info", {})
if not allow_rollback:
    # kit_version: signed, one more per kit of a workbench key. The agent's record in the
    # state folder counts too (the highest version this device ran).
    new_version = info.get("kit_version")
    floor = []
    if current is not None and isinstance(current.get("info", {}).get("kit_version"), int):
        floor.append(current["info"]["kit_version"])
    if record.is_file():
        try:
            floor.append(int(json.loads(record.read_text())["kit_version"]))
        except (ValueError, KeyError, TypeError) as exc:
            fail(f"{record} is damaged ({exc}): remove it or use --allow-rollback")
    if isinstance(new_version, int) and floor and new_version < max(floor):
        fail(f"kit refused: this kit (kit_version {new_version}) is older than the installed one "
             f"(kit_version {max(floor)}): refusing a rollback (--allow-rollback to force it)")
    if current is not None and not isinstance(new_version, int):
        # kits made before kit_version: their build dates
        new = str(info.get("created", ""))
        old = str(current.get("info", {}).get("created", ""))
        if new < old:
            fail(f"kit refused: this kit (built {new or 'at an unknown time'}) is older than the installed one "
                 f"(built {old}): refusing a rollback (--allow-rollback to force it)")
PY
}

check_platform() {
  local arch py want
  arch="$(uname -m)"
  want="${KIT_PLATFORM#linux_}"
  want="${want:-aarch64}"
  if [ "$arch" != "$want" ]; then
    if [ "$DRY_RUN" -eq 1 ]; then log "note: $arch is not $want, the kit's platform (fine for a dry run)";
    else die "this kit is built for $want ($KIT_PLATFORM); this machine is $arch"; fi
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
  sys_run apt-get update
  sys_run env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

create_service_user() {
  if id "$SERVICE_USER" >/dev/null 2>&1; then
    log "service user $SERVICE_USER exists"
  elif [ "$DRY_RUN" -eq 0 ] && [ "$PREFIX" != "/" ]; then
    die "a --prefix install does not create system users: user $SERVICE_USER does not exist (pass --user NAME)"
  else
    run useradd --system --home-dir /var/lib/fedlab --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
}

install_kit_files() {
  local dest tmp
  dest="$(p /opt/fedlab/kit)"
  mkdir -p "$(p /opt/fedlab)" "$(p /etc/fedlab)" "$(p /var/lib/fedlab/state)" "$(p /var/lib/fedlab/exchange)"
  chmod 0755 "$(p /opt/fedlab)" "$(p /etc/fedlab)"
  if [ "$(cd "$KIT_DIR" && pwd)" != "$(cd "$dest" 2>/dev/null && pwd)" ]; then
    # Replace the installed kit in one rename, so the agent never sees half a kit.
    tmp="$(mktemp -d "$(p /opt/fedlab)/.kit.XXXXXX")"
    cp -R "$KIT_DIR/." "$tmp/"
    # Owned by root, readable by the service user: mktemp made the folder 0700, and the
    # unpacked kit keeps whatever modes and owner its archive had.
    chmod -R u=rwX,go=rX "$tmp"
    [ "$(id -u)" -ne 0 ] || chown -R 0:0 "$tmp"
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
    # Under a prefix the config's absolute paths point into it, so the staged install runs.
    python3 -I - "$KIT_DIR/device.json.template" "$PREFIX" > "$config.tmp" <<'PY'
import json, sys
config, prefix = json.load(open(sys.argv[1])), sys.argv[2].rstrip("/")
def inside(path):
    return prefix + path if prefix and isinstance(path, str) and path.startswith("/") else path
for field in ("kit_dir", "data_path", "state_dir"):
    config[field] = inside(config.get(field, ""))
if isinstance(config.get("transport"), dict) and "folder" in config["transport"]:
    config["transport"]["folder"] = inside(config["transport"]["folder"])
print(json.dumps(config, indent=1))
PY
    chmod 0644 "$config.tmp"
    mv "$config.tmp" "$config"
    log "wrote $config (edit transport.folder for this board; the device id is generated at first start)"
  fi
}

# State, exchange and data belong to the service user; the agent's rollback record is the
# kit version just installed (setup verified it is not older, or was told --allow-rollback).
install_state() {
  local group state data
  group="$(service_group)"
  state="$(state_dir)"
  run chown "$SERVICE_USER:$group" "$(p /var/lib/fedlab)" "$(p /var/lib/fedlab/state)" "$(p /var/lib/fedlab/exchange)" "$state"
  run chmod 0750 "$(p /var/lib/fedlab/state)" "$state"
  run chmod 0755 "$(p /var/lib/fedlab)" "$(p /var/lib/fedlab/exchange)"
  if [ -n "$KIT_VERSION" ]; then
    printf '{"kit_version": %s}\n' "$KIT_VERSION" > "$state/.kit_version.json.tmp"
    chmod 0644 "$state/.kit_version.json.tmp"
    mv "$state/.kit_version.json.tmp" "$state/kit_version.json"
    run chown "$SERVICE_USER:$group" "$state/kit_version.json"
  fi
  if [ -n "$DATA_FILE" ]; then
    data="$(python3 -I -c 'import json, sys; print(json.load(open(sys.argv[1]))["data_path"])' "$(p /etc/fedlab/device.json)")"
    [ "${DATA_FILE##*.}" = "${data##*.}" ] || die "--data $DATA_FILE: device.json expects a .${data##*.} file at $data"
    mkdir -p "$(dirname "$data")"
    install -m 0640 "$DATA_FILE" "$data"
    run chown "$SERVICE_USER:$group" "$data"
    log "data copied to $data"
  fi
}

install_python_env() {
  local venv wheel wheels kit
  venv=/opt/fedlab/venv
  kit="$(p /opt/fedlab/kit)"
  # From the installed (verified) copy only, and exactly one wheel.
  wheels=("$(p /opt/fedlab/kit)"/wheels/fedlab-*.whl)
  [ -f "${wheels[0]}" ] || die "no fedlab wheel in $(p /opt/fedlab/kit)/wheels"
  [ ${#wheels[@]} -eq 1 ] || die "more than one fedlab wheel in the kit: ${wheels[*]}"
  wheel="$(basename "${wheels[0]}")"
  if [ -x "$(p $venv)/bin/python" ]; then log "venv $venv exists"; else run python3 -m venv "$(p $venv)"; fi
  if [ "$KIT_WHEELS" = "vendored" ]; then
    # Offline, from the verified kit only, every wheel's SHA-256 pinned.
    run "$(p $venv)/bin/pip" install --disable-pip-version-check --no-cache-dir --no-index \
      --find-links "$kit/wheels" --require-hashes -r "$kit/requirements-device.txt"
    run "$(p $venv)/bin/pip" install --disable-pip-version-check --no-cache-dir --no-index \
      --no-deps --force-reinstall "$kit/wheels/$wheel"
  else
    run "$(p $venv)/bin/pip" install --disable-pip-version-check -r "$kit/requirements-device.txt"
    run "$(p $venv)/bin/pip" install --disable-pip-version-check --no-deps --force-reinstall "$kit/wheels/$wheel"
  fi
}

install_service() {
  local unit
  unit="$(p /etc/systemd/system/fedlab-agent.service)"
  mkdir -p "$(dirname "$unit")"
  install -m 0644 "$KIT_DIR/fedlab-agent.service" "$unit"
  sys_run systemctl daemon-reload
  sys_run systemctl enable --now fedlab-agent.service
}

# As the service user: a kit or folder it cannot read or write fails here, not in the
# service. Missing data is a warning (the agent waits for it), not a failed install.
run_doctor() {
  as_service_user "$(p /opt/fedlab/venv)/bin/python" -m fedlab.edge.doctor --config "$(p /etc/fedlab/device.json)"
}

# The agent itself, the same on every board. Argument: a step to run once the
# service user exists and before the service starts (Coral: udev rules, plugdev), or "".
install_agent() {
  create_service_user
  if [ -n "$1" ]; then "$1"; fi
  install_kit_files
  install_state
  install_python_env
  install_service
  run_doctor
  log "done"
}
