#!/usr/bin/env bash
# Installs the project into a virtual environment (default .venv) with the exact versions of
# constraints.txt. Used by `make`; run it by hand to rebuild a venv: bash tools/install.sh [VENV]
#
# Why not one `pip install -c constraints.txt -e .[book,test]`: torch's CUDA build and its nvidia
# wheels are ~4 GB installed, and pip keeps every wheel it downloads until its command ends, so
# that one command needed ~7 GB of free disk at its peak and ran a CI machine out of space.
# Here the heavy wheels go in one command each (peak: what is installed plus one wheel), and
# every requirement is already pinned by the freeze, so pip resolves nothing (--no-deps).
# Without an NVIDIA driver, triton (0.9 GB) is left out: it generates torch.compile's GPU kernels
# and the CPU compiler does not use it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
py=$venv/bin/python
pip=("$py" -m pip install --quiet --no-cache-dir --disable-pip-version-check)

test -x "$py" || "${PYTHON:-python3}" -m venv "$venv"
"${pip[@]}" --upgrade "pip>=24"

skip='^(#|$)'
command -v nvidia-smi >/dev/null 2>&1 || skip='^(#|$|triton==)'
heavy='^(torch|nvidia-[a-z0-9-]+|cuda-[a-z-]+)=='
reqs=$(grep -v -E "$skip" constraints.txt)
for req in $(grep -E "$heavy" <<<"$reqs"); do
    "${pip[@]}" --no-deps "$req"
done
grep -v -E "$heavy" <<<"$reqs" >"$venv/requirements-rest.txt"
"${pip[@]}" --no-deps -r "$venv/requirements-rest.txt"
"${pip[@]}" --no-deps -e .

# A dependency added to pyproject.toml but not yet frozen (make constraints) would be missing
# silently under --no-deps: pip check names it. Triton's absence is the one intended gap.
if ! problems=$("$py" -m pip check 2>&1); then
    problems=$(grep -v -E '^torch [^ ]+ requires triton' <<<"$problems" || true)
    if [ -n "$problems" ]; then
        echo "$problems" >&2
        echo "install: requirements missing from constraints.txt; run make constraints" >&2
        exit 1
    fi
fi
