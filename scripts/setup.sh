#!/usr/bin/env bash
# Idempotent set-up: .venv with pinned deps (CPU torch), Debian's Fashion-MNIST,
# chromium (headless, for the status page test), iproute2 (shaped links), iptables (NAT
# traversal test), pinned npm tools (solcjs, anvil) under tools/node_modules. Re-running is
# fast: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Python virtual environment and pinned dependencies.
stamp=.venv/.p2pfl-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing pinned dependencies (CPU torch 2.13.0)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c requirements.lock "torch==2.13.0"
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[dev]"
  echo "$want" > "$stamp"
else
  log ".venv up to date"
fi

# 2. Fashion-MNIST from Debian (real 60k/10k IDX files; no download at run time).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
   && ! ls /usr/share/datasets/fashion-mnist/*train-images* >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing dataset-fashion-mnist from Debian"
  $SUDO apt-get update -qq || log "apt-get update failed; trying install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || log "WARNING: could not install dataset-fashion-mnist; Fashion-MNIST runs will fail with a clear error"
else
  log "Fashion-MNIST present"
fi

# 3. Headless Chromium from Debian: the status page's browser test loads the page in it.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing chromium from Debian (status page browser test)"
  $SUDO apt-get update -qq || log "apt-get update failed; trying install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    || log "WARNING: could not install chromium; the status page browser test will fail with a clear error"
else
  log "chromium present"
fi

# 4. iproute2 (ip, tc) from Debian: shaped-link runs put node processes in network
#    namespaces on veth pairs with tbf ([network] namespaces, as root; sim.netns).
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing iproute2 from Debian (network namespaces, tbf)"
  $SUDO apt-get update -qq || log "apt-get update failed; trying install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 >/dev/null \
    || log "WARNING: could not install iproute2; shaped-link runs will fail with a clear error"
else
  log "iproute2 present"
fi

# 5. iptables from Debian: the NAT traversal test puts nodes behind MASQUERADE in network
#    namespaces (sim.netns.NatNetwork, as root).
if ! command -v iptables >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing iptables from Debian (NAT traversal test)"
  $SUDO apt-get update -qq || log "apt-get update failed; trying install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iptables >/dev/null \
    || log "WARNING: could not install iptables; the NAT traversal test will fail with a clear error"
else
  log "iptables present"
fi

# 6. Pinned Node tools (solcjs, anvil) under tools/, gitignored.
if command -v npm >/dev/null 2>&1; then
  nstamp=tools/node_modules/.p2pfl-installed
  nwant=$(sha256sum tools/package.json tools/package-lock.json | sha256sum | cut -d' ' -f1)
  if [ ! -f "$nstamp" ] || [ "$(cat "$nstamp")" != "$nwant" ]; then
    log "installing solc and anvil from npm (pinned)"
    (cd tools && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$nwant" > "$nstamp"
  else
    log "npm tools up to date"
  fi
else
  log "WARNING: npm not found; anvil (multi-process runs) and contract recompilation unavailable"
fi
log "done"
