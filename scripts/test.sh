#!/usr/bin/env bash
# Install everything the test suite needs (once) and run it: ruff, mypy, pytest.
# Works on a fresh Debian machine; as root it also installs the Debian packages the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
# Debian packages used by the real-part tests (added by the issues that need them).
DEBIAN_PACKAGES=(iproute2 chromium redis-server coturn)

install_debian_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "warning: missing Debian packages (${missing[*]}); run as root to install them" >&2
    return 0
  fi
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests start their own coturn/redis on loopback; never leave the distro services running
  # (coturn's default config is an unauthenticated TURN relay on every interface).
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now coturn redis-server >/dev/null 2>&1 || true
  fi
}

install_python_deps() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.deps-stamp" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing Python dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
  fi
}

install_debian_packages
install_python_deps

echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/pytest" "$@"
