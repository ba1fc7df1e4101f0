#!/usr/bin/env bash
# Creates or updates the project's virtual environment at .venv (Python 3.11: dm-reverb 0.14.0
# has wheels only up to 3.11) and installs the pinned dependency set. Idempotent: re-runs only
# reinstall when pyproject.toml changed. Also makes sure headless MuJoCo rendering (EGL) works.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (dm-reverb 0.14.0 ships wheels for 3.9-3.11 only); set PYTHON=/path/to/python3.11" >&2
  return 1
}

ensure_egl() {
  # MuJoCo renders offscreen through EGL (Mesa). Stock Debian images have it; install if not.
  if ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Mesa EGL for headless rendering (libegl1, libegl-mesa0, libgl1-mesa-dri)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
  else
    echo "warning: libEGL.so.1 not found; install Mesa EGL (Debian: libegl1 libegl-mesa0) for headless MuJoCo" >&2
  fi
}

ensure_egl
if [ ! -x "$VENV/bin/python" ]; then
  "$(pick_python)" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
