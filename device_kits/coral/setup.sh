#!/usr/bin/env bash
# Set up a Coral USB Accelerator on a Raspberry Pi 4/5 (64-bit Raspberry Pi OS Bookworm,
# Python 3.11) as a fedlab client. The Coral Dev Board is not supported (see README.md).
#
# Usage: sudo ./setup.sh [--board usb] [--kit DIR] [--trusted-key KEY] [--data FILE]
#                        [--dry-run] [--prefix DIR]
#
#   --board usb        the USB Accelerator (the only board supported; devboard is refused)
#   --kit DIR          the unpacked kit (default: the folder of this script)
#   --trusted-key KEY  the workbench's base64 public key (first install; afterwards the
#                      key pinned in /etc/fedlab/device.json is used)
#   --data FILE        copy the local training data into place (else later: the agent waits)
#   --allow-rollback   install a kit older than the installed one (lower kit_version)
#   --online-install   accept a kit without vendored wheels (downloads unpinned from PyPI)
#   --user NAME        the service user (default fedlab)
#   --dry-run          print the commands that change the system instead of running them
#   --prefix DIR       install under DIR instead of / (see raspberry_pi/setup.sh)
#
# Verifies the kit first (signature with the pinned key, every hash, no unlisted file, no
# rollback), then adds Coral's apt repository, installs the Edge TPU runtime
# (libedgetpu1-std), udev rules so the service user can open the accelerator, then the
# agent as on a Raspberry Pi. Idempotent: running it again changes nothing already in place.
set -euo pipefail

BOARD="usb"
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

DEVBOARD_REFUSED="the Coral Dev Board is not supported: it runs Mendel Linux (Debian 10, Python 3.7), for which ai-edge-litert (the LiteRT runtime the agent needs) has no wheels, and the agent is not written for Coral's own tflite_runtime/pycoral. Use a Coral USB Accelerator on a Raspberry Pi 4/5 with 64-bit Raspberry Pi OS Bookworm (--board usb)"

# In a kit common.sh sits beside this script; in the repository it is one folder up.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMMON="$HERE/common.sh"
[ -f "$COMMON" ] || COMMON="$HERE/../common.sh"
# shellcheck source-path=SCRIPTDIR source=../common.sh
. "$COMMON"

CORAL_LIST="deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main"
CORAL_KEY_URL="https://packages.cloud.google.com/apt/doc/apt-key.gpg"

add_coral_repository() {
  local list keyring
  list="$(p /etc/apt/sources.list.d/coral-edgetpu.list)"
  keyring="$(p /usr/share/keyrings/coral-edgetpu.gpg)"
  if [ -f "$list" ] && grep -qF "$CORAL_LIST" "$list"; then
    log "Coral apt repository present"
  else
    mkdir -p "$(dirname "$list")" "$(dirname "$keyring")"
    echo "$CORAL_LIST" > "$list"
    sys_run sh -c "curl -fsSL $CORAL_KEY_URL | gpg --dearmor --yes -o $keyring"
    log "Coral apt repository added"
  fi
}

install_udev_rules() {
  local rules
  rules="$(p /etc/udev/rules.d/99-fedlab-edgetpu.rules)"
  mkdir -p "$(dirname "$rules")"
  cat > "$rules.tmp" <<'RULES'
# Coral USB Accelerator, before and after its firmware is loaded: readable by plugdev.
SUBSYSTEM=="usb", ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", MODE="0664", GROUP="plugdev"
SUBSYSTEM=="usb", ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302", MODE="0664", GROUP="plugdev"
# Coral PCIe / Dev Board Edge TPU.
SUBSYSTEM=="apex", MODE="0660", GROUP="plugdev"
RULES
  if cmp -s "$rules.tmp" "$rules"; then
    rm -f "$rules.tmp"; log "udev rules present"
  else
    mv "$rules.tmp" "$rules"
    sys_run udevadm control --reload-rules
    sys_run udevadm trigger
    log "udev rules installed"
  fi
  if id -nG "$SERVICE_USER" 2>/dev/null | grep -qw plugdev; then
    log "$SERVICE_USER is in plugdev"
  else
    sys_run usermod -aG plugdev "$SERVICE_USER"
  fi
}

main() {
  # The board is checked before the kit: nothing is verified or installed for a board
  # that cannot run it.
  local arg previous=""
  for arg in "$@"; do
    if [ "$previous" = "--board" ]; then
      case "$arg" in
        usb) ;;
        devboard) die "$DEVBOARD_REFUSED" ;;
        *) die "--board must be usb (the Dev Board is not supported), got $arg" ;;
      esac
    fi
    previous="$arg"
  done
  parse_common_args "$@"
  log "Coral ($BOARD) kit $KIT_DIR → prefix $PREFIX$([ "$DRY_RUN" -eq 1 ] && echo ' (dry run)')"
  check_platform
  install_apt_packages curl gnupg python3-venv python3-pip
  add_coral_repository
  install_apt_packages libedgetpu1-std
  install_agent install_udev_rules
}

main "$@"
