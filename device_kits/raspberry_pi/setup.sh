#!/usr/bin/env bash
# Set up a Raspberry Pi (4, 5 or Zero 2 W; 64-bit Raspberry Pi OS Bookworm) as a fedlab client.
#
# Usage: sudo ./setup.sh [--kit DIR] [--trusted-key KEY] [--data FILE] [--dry-run] [--prefix DIR]
#
#   --kit DIR          the unpacked kit (default: the folder of this script)
#   --trusted-key KEY  the workbench's base64 public key (first install; afterwards the
#                      key pinned in /etc/fedlab/device.json is used)
#   --data FILE        copy the local training data into place (else copy it later: the
#                      doctor warns and the agent waits for it)
#   --allow-rollback   install a kit older than the installed one (lower kit_version)
#   --online-install   accept a kit without vendored wheels (downloads unpinned from PyPI)
#   --user NAME        the service user (default fedlab)
#   --dry-run          print the commands that change the system instead of running them
#   --prefix DIR       install under DIR instead of /; without --dry-run a real staged
#                      install (venv, owners, doctor as the service user), host untouched
#
# Before anything is installed the kit is verified: its signature with the pinned key,
# every file's SHA-256, no unlisted file, not older than the installed kit. Its wheels
# install offline and hash-pinned. Ends with the doctor run as the service user.
# Idempotent: running it again updates the kit and keeps /etc/fedlab/device.json.
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

# In a kit common.sh sits beside this script; in the repository it is one folder up.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMMON="$HERE/common.sh"
[ -f "$COMMON" ] || COMMON="$HERE/../common.sh"
# shellcheck source-path=SCRIPTDIR source=../common.sh
. "$COMMON"

configure_swap() {
  # A Zero 2 W has 512 MB of RAM: give it 1 GB of swap for pip installs and training.
  local model conf
  model="${FEDLAB_BOARD_MODEL:-}"
  if [ -z "$model" ] && [ -r /proc/device-tree/model ]; then model="$(tr -d '\0' < /proc/device-tree/model)"; fi
  case "$model" in
    *"Zero 2 W"*)
      conf="$(p /etc/dphys-swapfile)"
      mkdir -p "$(dirname "$conf")"
      if grep -q '^CONF_SWAPSIZE=1024$' "$conf" 2>/dev/null; then
        log "swap already 1024 MB"
      else
        if grep -q '^CONF_SWAPSIZE=' "$conf" 2>/dev/null; then
          sed -i 's/^CONF_SWAPSIZE=.*/CONF_SWAPSIZE=1024/' "$conf"
        else
          echo 'CONF_SWAPSIZE=1024' >> "$conf"
        fi
        sys_run dphys-swapfile setup
        sys_run dphys-swapfile swapon
        log "swap set to 1024 MB ($model)"
      fi
      ;;
    *) log "board: ${model:-unknown}; swap unchanged" ;;
  esac
}

main() {
  parse_common_args "$@"
  log "kit $KIT_DIR → prefix $PREFIX$([ "$DRY_RUN" -eq 1 ] && echo ' (dry run)')"
  check_platform
  install_apt_packages python3-venv python3-pip
  configure_swap
  install_agent ""
}

main "$@"
