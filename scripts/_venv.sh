# shellcheck shell=bash
# Shared by scripts/tenure and scripts/test: make sure .venv exists and matches
# pyproject.toml. Sourced, not run. A stamp file holds the hash of the
# pyproject.toml the venv was installed from; a different hash (or a missing or
# broken venv) means reinstall. A lock keeps two scripts started at once from
# installing over each other.

tenure_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tenure_venv="$tenure_root/.venv"
tenure_stamp="$tenure_venv/.tenure-installed"

_tenure_say() { printf '==> %s\n' "$*" >&2; }

_tenure_pick_python() {
  local candidate
  for candidate in "${TENURE_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  _tenure_say "Tenure needs Python >= 3.11 (set TENURE_PYTHON to choose one)"
  return 1
}

_tenure_make_venv() {
  local python
  python="$(_tenure_pick_python)" || return 1
  _tenure_say "creating .venv with $python"
  if ! "$python" -m venv "$tenure_venv" 2>/dev/null; then
    # Debian ships venv/ensurepip separately (python3-venv).
    rm -rf "$tenure_venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      local minor
      minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      _tenure_say "installing python$minor-venv with apt-get"
      apt-get update -qq &&
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$minor-venv" ||
          DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } || return 1
      "$python" -m venv "$tenure_venv" || return 1
    else
      _tenure_say "'$python -m venv' failed: install your distribution's python3-venv package"
      return 1
    fi
  fi
}

_tenure_venv_fresh() {
  [ -x "$tenure_venv/bin/python" ] &&
    "$tenure_venv/bin/python" -c '' 2>/dev/null &&
    [ -f "$tenure_stamp" ] &&
    [ "$(cat "$tenure_stamp")" = "$(sha256sum "$tenure_root/pyproject.toml" | cut -d' ' -f1)" ]
}

_tenure_install() {
  if [ -x "$tenure_venv/bin/python" ] && ! "$tenure_venv/bin/python" -c '' 2>/dev/null; then
    _tenure_say ".venv is broken (its Python moved?); recreating it"
    rm -rf "$tenure_venv"
  fi
  [ -x "$tenure_venv/bin/python" ] || _tenure_make_venv || return 1
  _tenure_say "installing Tenure and its dev tools into .venv (pyproject.toml changed or first run)"
  # A newer pip is welcome but not required (Debian's suffices for editable installs).
  "$tenure_venv/bin/python" -m pip install -qq --upgrade pip || true
  "$tenure_venv/bin/python" -m pip install -qq -e "$tenure_root[dev]" || return 1
  sha256sum "$tenure_root/pyproject.toml" | cut -d' ' -f1 >"$tenure_stamp"
}

# ensure_venv: returns 0 once .venv matches pyproject.toml.
ensure_venv() {
  _tenure_venv_fresh && return 0
  mkdir -p "$tenure_venv"
  if command -v flock >/dev/null 2>&1; then
    (
      flock 9
      _tenure_venv_fresh || _tenure_install
    ) 9>"$tenure_venv/.lock"
  else
    _tenure_install
  fi
}
