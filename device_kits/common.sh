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
  wheels=("$KIT_DIR"/wheels/fedlab-*.whl)
  [ -f "${wheels[0]}" ] || die "no fedlab wheel in $KIT_DIR/wheels"
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
