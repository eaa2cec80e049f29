"""Evaluation cost: seconds per call of the metrics the paper profiles score with.

The identifiability and Platonic chapters score n = 10,000 held-out samples (d = 10) with every
metric, for every seed, class or method pair, so evaluation, not training, sets the wall time
of the experiments that do not train. Cases, best of several repeats after a warm-up:

- one row per metric of ``sithlib.metrics`` at the paper's sizes (kernel ridge on its first
  4,000 rows, as ``identifiability_classes`` does);
- ``neighbour sets``: the k = 10 nearest neighbours of every sample, as ``mutual_knn`` finds
  them (``torch.topk``'s k-th value, then the stable-sort tie rule), against the rule written
  directly, a full stable sort of every row; the two give identical sets.

Usage::

    python benchmarks/bench_metrics.py [--device cpu|cuda] [--quick] [--threads N]
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from sithlib.metrics import cka_linear, mardia_test, mcc, mutual_knn, r2_linear, r2_nonlinear
from sithlib.metrics.similarity import _sorted_neighbours
from sithlib.results import benchmark_main, best_seconds


def _full_sort(sim: torch.Tensor, k: int) -> torch.Tensor:
    """The tie rule written directly: each row's first k of a stable descending sort."""
    return torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]


def table(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """The table of ``python -m sithlib bench metrics``: columns case, metric, value (seconds,
    and for the neighbour sets also ratio_full_sort_to_ours); sizes and repeats in ``attrs``."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n, d, k, m = (2000, 10, 10, 1000) if quick else (10_000, 10, 10, 4000)
    repeats = 1 if quick else 3
    gen = torch.Generator(device=dev).manual_seed(0)
    z = torch.randn(n, d, generator=gen, device=dev, dtype=torch.float64)
    h = torch.tanh(z @ torch.randn(d, d, generator=gen, device=dev, dtype=torch.float64))
    rows = []
    calls = {
        "r2_linear": lambda: r2_linear(h, z),
        f"r2_nonlinear (kernel ridge, n = {m})": lambda: r2_nonlinear(h[:m], z[:m],
                                                                        method="kernel_ridge"),
        "mcc (Pearson)": lambda: mcc(h, z),
        "cka_linear": lambda: cka_linear(h, z),
        "mutual_knn": lambda: mutual_knn(h, z, k=k),
        "mardia_test": lambda: mardia_test(h),
    }
    for case, fn in calls.items():
        rows.append({"case": case, "metric": "seconds", "value": best_seconds(fn, repeats, sync)})
    x = F.normalize(h, dim=1)
    if not torch.equal(_sorted_neighbours(x, k, 4096), _sorted_neighbours(x, k, 4096, _full_sort)):
        raise AssertionError("neighbour sets differ from the stable sort's")
    ours = best_seconds(lambda: _sorted_neighbours(x, k, 4096), repeats, sync)
    full = best_seconds(lambda: _sorted_neighbours(x, k, 4096, _full_sort), repeats, sync)
    rows += [{"case": "neighbour sets (topk + tie rule)", "metric": "seconds", "value": ours},
             {"case": "neighbour sets (full stable sort)", "metric": "seconds", "value": full},
             {"case": "neighbour sets (topk + tie rule)", "metric": "ratio_full_sort_to_ours",
              "value": full / ours}]
    df = pd.DataFrame(rows, columns=["case", "metric", "value"])
    df.attrs.update(n=n, d=d, k=k, repeats=repeats, threads=torch.get_num_threads())
    return df


if __name__ == "__main__":
    benchmark_main(table, __doc__.splitlines()[0])
