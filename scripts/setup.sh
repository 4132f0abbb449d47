#!/usr/bin/env bash
# Builds everything Nudge needs on a fresh machine, from pinned lock files; does nothing
# that is already done. Called by `make setup` (and so by `make run` and `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

find_python() {  # find_python 3.11 → a python of that minor version
  local want=$1 candidate
  for candidate in "python$want" "$HOME/.pyenv/versions/$want"*/bin/python"$want" \
                   /root/.pyenv/versions/"$want"*/bin/python"$want" /usr/bin/python"$want"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "setup: Python $want not found (install it, e.g. with pyenv)" >&2; return 1
}

lock_stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

build_venv() {  # build_venv DIR PYTHON STAMP LOCKFILE [extra uv args...]
  local dir=$1 python=$2 stamp=$3 lock=$4; shift 4
  if [ -f "$dir/.lock-stamp" ] && [ "$(cat "$dir/.lock-stamp")" = "$stamp" ]; then
    return 0
  fi
  say "building $dir from $lock ($("$python" --version))"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check uv==0.13.8
  "$dir/bin/uv" pip install --quiet --python "$dir/bin/python" -r "$lock" "$@"
  echo "$stamp" > "$dir/.lock-stamp"
}

# 1. Debian packages, unless present: the Redis server, the tz database (the contact
#    rules read its zone.tab for the time zones of each country), and Debian's chromium,
#    which Playwright drives in the browser tests (no browser download from the internet).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -f /usr/share/zoneinfo/zone.tab ] || missing+=(tzdata)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} from Debian's packages"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Our environment (Python 3.11, current libraries).
PY311=$(find_python 3.11)
build_venv .venv "$PY311" "$(lock_stamp requirements.lock pyproject.toml)" requirements.lock
if ! .venv/bin/python -c 'import service.cli' 2>/dev/null || [ ! -x .venv/bin/nudge ]; then
  .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
fi

# 3. The engine's environment (Python 3.10, rasa 3.6.21).
PY310=$(find_python 3.10)
build_venv .venv-engine "$PY310" "$(lock_stamp engine/requirements.lock)" engine/requirements.lock

say "ready"
