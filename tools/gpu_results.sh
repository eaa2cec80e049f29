#!/usr/bin/env bash
# Paper-profile results on a GPU machine that is lent for a limited time (one call of at most
# ~10 minutes, nothing kept between calls but what the call returns).
#
#   bash tools/gpu_results.sh SECONDS [EXPERIMENT ...]
#
# Restores the state of a previous call from .gpu_state/state.tgz (if present), runs the named
# experiments (default: every missing or stale one, in tools/gpu_order.py's order) for at most
# SECONDS, then packs results/ into $OUT/results.tgz and the resumable state (finished grid
# cells, checkpoints) into $OUT/state.tgz (.gpu_state/ without $OUT; see tools/pack_state.py).
# Unpack both in the repository, commit results/, and carry .gpu_state/state.tgz into the next
# call: finished cells are not rerun, checkpoints resume.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: tools/gpu_results.sh SECONDS [EXPERIMENT ...]}
shift
out=${OUT:-.gpu_state}
mkdir -p "$out"
[ -f .gpu_state/state.tgz ] && tar xzf .gpu_state/state.tgz
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 SITH_PROGRESS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
targets=("$@")
# One process per experiment (not `run --all`), so that a crash costs only its own turn.
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(python3 tools/gpu_order.py)
echo "order: ${targets[*]}"
deadline=$((SECONDS + seconds))
rc=0
for target in "${targets[@]}"; do
    left=$((deadline - SECONDS - 30))  # 30 s stay for packing what was made
    [ "$left" -le 10 ] && { echo "budget spent before $target"; rc=124; break; }
    # SIGINT lets Python unwind; checkpoints and finished cells are already on disk.
    timeout -s INT -k 20 "$left" python3 -m sithlib run "$target" --profile paper \
        --device "${SITH_DEVICE:-cuda}"
    status=$?
    if [ $status -eq 124 ] || [ $status -eq 137 ] || [ $status -eq 130 ]; then
        echo "stopped at $target: out of time (exit $status)"; rc=$status; break
    fi
    # A crash in one experiment must not cost the others their turn.
    [ $status -ne 0 ] && { echo "FAILED: $target (exit $status); going on"; rc=$status; }
done
# results.tgz always; state.tgz with as many whole cells and checkpoints as fit the 16 MiB a
# lent machine returns per file.
python3 tools/pack_state.py "$out"
python3 -m sithlib list || true
exit $rc
