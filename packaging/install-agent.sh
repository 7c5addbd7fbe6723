#!/usr/bin/env bash
# Install the edgefleet agent on a Debian / Raspberry Pi OS / Ubuntu device as a systemd service.
#
#   sudo ./install-agent.sh --bundle DIR            # DIR from `edgefleet devices register ID --profile P --out DIR`
#   sudo ./install-agent.sh --bundle DIR --source edgefleet-0.1.0-py3-none-any.whl   # offline: a wheel or source dir
#
# What it does: apt-installs python3-venv; creates the system user `edgefleet`; creates
# /opt/edgefleet/venv with `edgefleet[agent]` (Python 3.9+, no torch); copies the bundle to
# /etc/edgefleet (password 0640 root:edgefleet); installs and starts edgefleet-agent.service.
# Applications that call the model join the `edgefleet` group (socket /run/edgefleet/serve.sock).
# --root DIR installs into a staging tree and --no-system skips apt, useradd and systemctl (tests, images).
set -euo pipefail

ROOT=""
BUNDLE=""
SOURCE="edgefleet[agent]"
SYSTEM=1
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "$0")" && pwd)"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="$2"; shift 2 ;;
    --source) SOURCE="$2"; shift 2 ;;
    --root) ROOT="$2"; shift 2 ;;
    --no-system) SYSTEM=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option $1" >&2; usage 2 ;;
  esac
done
[ -n "$BUNDLE" ] || { echo "error: --bundle DIR is required (from edgefleet devices register --out DIR)" >&2; exit 2; }
for f in agent.toml password controller.pub; do
  [ -f "$BUNDLE/$f" ] || { echo "error: $BUNDLE/$f is missing: is this an enrollment bundle?" >&2; exit 2; }
done
if [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then echo "error: run as root (or with --root DIR --no-system)" >&2; exit 2; fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || { echo "error: $PYTHON is older than 3.9; the agent needs Python 3.9+" >&2; exit 2; }

if [ "$SYSTEM" = 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
  getent group edgefleet >/dev/null || groupadd --system edgefleet
  id edgefleet >/dev/null 2>&1 || useradd --system --gid edgefleet --home-dir /var/lib/edgefleet \
    --no-create-home --shell /usr/sbin/nologin edgefleet
fi

VENV="$ROOT/opt/edgefleet/venv"
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
case "$SOURCE" in
  *.whl) "$VENV/bin/pip" install -q --disable-pip-version-check "${SOURCE}[agent]" ;;
  edgefleet*) "$VENV/bin/pip" install -q --disable-pip-version-check "$SOURCE" ;;
  *) "$VENV/bin/pip" install -q --disable-pip-version-check "${SOURCE}[agent]" ;;
esac

ETC="$ROOT/etc/edgefleet"
mkdir -p "$ETC" "$ROOT/var/lib/edgefleet"
install -m 0644 "$BUNDLE/agent.toml" "$BUNDLE/controller.pub" "$ETC/"
[ -f "$BUNDLE/ca.pem" ] && install -m 0644 "$BUNDLE/ca.pem" "$ETC/"
install -m 0640 "$BUNDLE/password" "$ETC/password"
# the agent keeps its state where systemd's StateDirectory= puts it
sed -i 's|^data_dir = .*|data_dir = "/var/lib/edgefleet"|' "$ETC/agent.toml"
mkdir -p "$ROOT/etc/systemd/system"
install -m 0644 "$HERE/systemd/edgefleet-agent.service" "$ROOT/etc/systemd/system/edgefleet-agent.service"

if [ "$SYSTEM" = 1 ]; then
  chown -R root:edgefleet "$ETC"
  chmod 0750 "$ETC"
  systemctl daemon-reload
  systemctl enable --now edgefleet-agent.service
  echo "edgefleet-agent started: journalctl -u edgefleet-agent -f"
else
  echo "installed under ${ROOT:-/} (no system changes)"
fi
