#!/usr/bin/env bash
# Everything a lent GPU is needed for, in one call of at most SECONDS (a lent machine's call
# lasts ~10 minutes and a session's GPU time ~15, so one prepared call beats several):
#
#   bash tools/gpu_session.sh SECONDS [EXPERIMENT ...]
#
# 1. the GPU tests (`pytest -m gpu`), log in $OUT/gpu_tests.txt;
# 2. the training, DGP and vision benchmarks on CUDA (stored under results/benchmarks/);
# 3. paper results for the rest of the time (tools/gpu_results.sh): the named experiments, or
#    every missing or stale one, cheapest first by the committed cost counts.
# Everything comes back in $OUT/results.tgz and $OUT/state.tgz: unpack both in the repository
# and commit results/. Where the copy of the tree has no git history, prefix the call with
# SITH_GIT_COMMIT=<the hash of the clean commit it was copied from> (the results' provenance).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: tools/gpu_session.sh SECONDS [EXPERIMENT ...]}
shift
targets=("$@")
out=${OUT:-.gpu_state}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 SITH_PROGRESS=0
if ! git rev-parse HEAD >/dev/null 2>&1 && [ -z "${SITH_GIT_COMMIT:-}" ]; then
    echo "warning: no git history here and SITH_GIT_COMMIT unset: results record commit unknown"
fi
deadline=$((SECONDS + seconds))
left() { echo $((deadline - SECONDS)); }
# A step's cap, cut so that a minute stays for the paper results' packing at the end.
cap() { local most=$(( $(left) - 60 )); echo $(( $1 < most ? $1 : most )); }

# Each step has a cap, so a hang cannot eat the call; later sessions skip what already ran
# (SITH_SKIP="tests bench" leaves the time to the paper results).
skip=" ${SITH_SKIP:-} "
if [[ $skip != *" tests "* ]]; then
    echo "== GPU tests"
    # Only the files with GPU tests: the others import the book's tools (nbformat, papermill),
    # which the lent machine lacks.
    # SIGINT, not SIGTERM: pytest still prints its summary and the failures' tracebacks.
    limit=$(cap 150)
    if [ "$limit" -gt 10 ]; then
        timeout -s INT -k 10 "$limit" python3 -m pytest -q -rA -m gpu -p no:cacheprovider \
            $(grep -l "pytest.mark.gpu" tests/test_*.py) >"$out/gpu_tests.txt" 2>&1
        echo "pytest -m gpu: exit $?"; tail -5 "$out/gpu_tests.txt"
    fi
fi
if [[ $skip != *" bench "* ]]; then
    for bench in "train 180" "dgp 40" "vision 60"; do
        set -- $bench
        limit=$(cap "$2")
        [ "$limit" -gt 10 ] || { echo "== bench $1: no time left"; continue; }
        echo "== bench $1"
        timeout -s INT -k 10 "$limit" \
            python3 -m sithlib bench "$1" --device "${SITH_DEVICE:-cuda}" 2>&1 | tail -25
    done
fi

echo "== paper results ($(left) s left)"
bash tools/gpu_results.sh "$(left)" "${targets[@]}"  # none named: gpu_order.py's queue
