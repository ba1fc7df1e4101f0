#!/usr/bin/env bash
# Creates or updates the project's virtual environment at .venv (Python 3.11: dm-reverb 0.14.0
# has wheels only up to 3.11) and installs the package with its dev extra, constrained to the
# known-good set in requirements.lock (pyproject.toml declares compatible ranges; the lock pins
# the exact versions we test). Idempotent: re-runs only reinstall when pyproject.toml or
# requirements.lock changed. Also makes sure headless MuJoCo rendering (EGL) works.
#
#   bash tools/setup_env.sh          install / update .venv from the lock
#   bash tools/setup_env.sh --lock   resolve pyproject.toml's ranges in .venv (no lock), then write
#                                    the resulting set to requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
LOCK=requirements.lock
MODE=${1:-}
case "$MODE" in
  ""|--lock) ;;
  *) echo "usage: bash tools/setup_env.sh [--lock]" >&2; exit 2 ;;
esac
stamp() { echo "$VENV/.installed-$(cat pyproject.toml "$LOCK" 2>/dev/null | sha1sum | cut -c1-12)"; }

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

drop_stale_mujoco() {
  # mujoco 4 is split into mujoco + mujoco-core + mujoco-studio, all writing into the `mujoco`
  # package folder; going back to a single-wheel mujoco 3 must remove all three first, or the
  # leftovers of 4.x break (or, uninstalled later, delete files of) the 3.x package.
  if compgen -G "$VENV/lib/python3.11/site-packages/mujoco_core-*.dist-info" >/dev/null &&
     ! grep -qi '^mujoco-core==' "$LOCK"; then
    "$VENV/bin/python" -m pip uninstall --quiet -y mujoco mujoco-core mujoco-studio
  fi
}

ensure_egl
if [ ! -x "$VENV/bin/python" ]; then
  "$(pick_python)" -m venv "$VENV"
fi

if [ "$MODE" = --lock ]; then
  drop_stale_mujoco
  "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
  "$VENV/bin/python" -m pip check
  {
    echo "# The known-good dependency set of vlarft (python 3.11, linux x86_64): tools/setup_env.sh installs"
    echo "# it as constraints. Regenerate with: bash tools/setup_env.sh --lock"
    "$VENV/bin/python" -m pip freeze --exclude-editable
  } > "$LOCK"
  rm -f "$VENV"/.installed-*
  touch "$(stamp)"
  echo "wrote $LOCK ($(grep -vc '^#' "$LOCK") packages)" >&2
elif [ ! -f "$(stamp)" ]; then
  drop_stale_mujoco
  "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install --quiet -c "$LOCK" -e '.[dev]'
  rm -f "$VENV"/.installed-*
  touch "$(stamp)"
fi
