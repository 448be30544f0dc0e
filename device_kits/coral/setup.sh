#!/usr/bin/env bash
# Set up a Coral board as a fedlab client: the USB Accelerator on a Raspberry Pi (64-bit
# Raspberry Pi OS Bookworm), or the Coral Dev Board.
#
# Usage: sudo ./setup.sh [--board usb|devboard] [--kit DIR] [--trusted-key KEY] [--dry-run]
#                        [--prefix DIR]
#
#   --board            usb (default): USB Accelerator; devboard: the Dev Board's PCIe Edge TPU
#   --kit DIR          the unpacked kit (default: the folder of this script)
#   --trusted-key KEY  the workbench's base64 public key (first install; afterwards the
#                      key pinned in /etc/fedlab/device.json is used)
#   --allow-rollback   install a kit older than the installed one
#   --dry-run          print the commands that change the system instead of running them
#   --prefix DIR       install files under DIR instead of / (with --dry-run: a test install)
#
# Verifies the kit first (signature with the pinned key, every hash, no unlisted file, no
# rollback), then adds Coral's apt repository, installs the Edge TPU runtime
# (libedgetpu1-std), udev rules so the service user can open the accelerator, then the
# agent as on a Raspberry Pi. Idempotent: running it again changes nothing already in place.
set -euo pipefail

BOARD="usb"
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

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
    run sh -c "curl -fsSL $CORAL_KEY_URL | gpg --dearmor --yes -o $keyring"
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
    run udevadm control --reload-rules
    run udevadm trigger
    log "udev rules installed"
  fi
  if id -nG "$SERVICE_USER" 2>/dev/null | grep -qw plugdev; then
    log "$SERVICE_USER is in plugdev"
  else
    run usermod -aG plugdev "$SERVICE_USER"
  fi
}

main() {
  parse_common_args "$@"
  case "$BOARD" in usb|devboard) ;; *) die "--board must be usb or devboard, got $BOARD" ;; esac
  log "Coral ($BOARD) kit $KIT_DIR → prefix $PREFIX$([ "$DRY_RUN" -eq 1 ] && echo ' (dry run)')"
  check_platform
  install_apt_packages curl gnupg python3-venv python3-pip
  add_coral_repository
  if [ "$BOARD" = "usb" ]; then
    install_apt_packages libedgetpu1-std
  else
    log "Dev Board: Mendel Linux ships the Edge TPU driver and runtime"
  fi
  install_agent install_udev_rules
}

main "$@"
