"""The experiments whose paper result is missing or stale, cheapest first, one per line; then
those whose fresh paper result was made on a CPU, in the book's order.

A lent GPU's call is short, so the cheap experiments go first: more of them finish and get
committed. The cost of an experiment is guessed from the counts of ``bench_cost`` (committed
under results/benchmarks/cost/): its kernel launches at LAUNCH_S each plus its training FLOPs
at FLOPS per second. The guess only orders the queue; nothing is published from it.
Experiments without counts (they do not train) come first, in the book's order. An experiment
whose work after training outweighs its training (measurements, probes) says so with
``MEASURE_GPU_S``, its own guess of those seconds, which is added.

The experiments that do not train have paper results made on a CPU; they come last, so that a
GPU with time to spare remakes them too: the book's regeneration budget (one hour on one H100,
ten minutes an experiment) is judged on GPU wall times.

    python tools/gpu_order.py
"""

from __future__ import annotations

LAUNCH_S = 8e-6  # an eager PyTorch operator from Python, launch-bound
FLOPS = 2e14  # TF32 / bf16 matmuls of moderate size on an H100 or H200


def order() -> list[str]:
    from sithlib.experiments import EXPERIMENTS
    from sithlib.results import paper_status, read_benchmarks

    cost = next((r for r in read_benchmarks() if r["name"] == "cost"), None)
    counts = (cost["table"].pivot_table(index="case", columns="metric", values="value")
              if cost else None)

    def guess(name: str) -> float:
        if counts is None or name not in counts.index:
            return 0.0
        row = counts.loc[name]
        return (row["launches"] * LAUNCH_S + row["train_tflop"] * 1e12 / FLOPS
                + getattr(EXPERIMENTS[name], "MEASURE_GPU_S", 0.0))

    status = {n: paper_status(n) for n in EXPERIMENTS}
    todo = [n for n, (state, _, _) in status.items() if state != "fresh"]
    on_cpu = [n for n, (state, result, _) in status.items() if state == "fresh"
              and not str(result.env.get("device", "")).startswith("cuda")]
    return sorted(todo, key=guess) + on_cpu  # sorted is stable: ties keep the book's order


if __name__ == "__main__":
    print("\n".join(order()))
