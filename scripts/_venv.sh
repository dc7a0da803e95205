# Sourced by scripts/serve and scripts/test: make .venv and install the project into it when needed.
# Reinstalls only when pyproject.toml (or the extras asked for) changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LUNOGRAM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1" stamp want
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    local manifests=("$ROOT/pyproject.toml")
    if [ -f "$ROOT/sdk/python/pyproject.toml" ]; then manifests+=("$ROOT/sdk/python/pyproject.toml"); fi
    want="$(cat "${manifests[@]}" | sha256sum | cut -c1-16)-$extras"
    stamp="$VENV/.lunogram-installed"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "installing Lunogram into $VENV ..." >&2
        local specs=("-e" "$ROOT$extras")
        if [ -f "$ROOT/sdk/python/pyproject.toml" ]; then specs+=("-e" "$ROOT/sdk/python"); fi
        "$VENV/bin/python" -m pip install --quiet "${specs[@]}"
        echo "$want" > "$stamp"
    fi
    # Byte-compile the project's own sources (pip compiles what it installs, not an editable project's):
    # with PYTHONDONTWRITEBYTECODE set, as it is in many containers, every process otherwise compiled ~130
    # modules at start, 0.4 s of CPU per server, CLI command and test server. Only stale files are redone.
    local sources=("$ROOT/src")
    if [ -d "$ROOT/sdk/python/src" ]; then sources+=("$ROOT/sdk/python/src"); fi
    "$VENV/bin/python" -m compileall -q -j 0 "${sources[@]}" >/dev/null
}
