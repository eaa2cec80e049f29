"""Image DGP throughput: images per second for rendering and for augmentation, at 32 and 64 px.

Cases, for one batch of B images on one device (best of several repeats after a warm-up):

- ``render Npx``: ``sithlib.dgp.images.render`` of fresh latents (latent sampling included);
- ``latent pairs Npx``: ``sample_pairs``, i.e. anchors and their latent-space positives
  (Normal conditional on every continuous latent), both rendered; counted as 2B images;
- ``augment Npx (recipe)``: one view per image with ``sithlib.dgp.augment.augment``, per-sample
  random parameters, for SimCLR's ImageNet recipe and BYOL's first view (blur p = 1).

Usage::

    python benchmarks/bench_vision.py [--device cpu|cuda] [--quick] [--threads N]
"""

from __future__ import annotations

import platform

import pandas as pd
import torch

from sithlib.dgp.augment import augment
from sithlib.dgp.images import render, sample_latents, sample_pairs
from sithlib.results import benchmark_main, best_seconds


def run(device: str = "cpu", quick: bool = False) -> pd.DataFrame:
    """Throughput table with columns case, metric, value (metrics: images_per_s,
    ms_per_batch); the device name is in ``df.attrs``, the batch size and repeats in
    ``df.attrs["config"]``, which is stored with the table."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batch = (1024 if quick else 4096) * (8 if cuda else 1)
    repeats = 2 if quick else 5
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []

    def add(case, seconds, images):
        rows.append({"case": case, "metric": "images_per_s", "value": images / seconds})
        rows.append({"case": case, "metric": "ms_per_batch", "value": 1e3 * seconds})

    for size in (32, 64):
        t = best_seconds(
            lambda s=size: render(sample_latents(batch, generator=gen, device=dev), s), repeats,
            sync)
        add(f"render {size}px", t, batch)
        t = best_seconds(lambda s=size: sample_pairs(batch, s, generator=gen, device=dev),
                         repeats, sync)
        add(f"latent pairs {size}px", t, 2 * batch)
        x = render(sample_latents(batch, generator=gen, device=dev), size)
        for name in ("simclr", "byol_1"):
            t = best_seconds(lambda x=x, name=name: augment(x, name, generator=gen), repeats, sync)
            add(f"augment {size}px ({name})", t, batch)
    df = pd.DataFrame(rows, columns=["case", "metric", "value"])
    df.attrs.update(device=(
        torch.cuda.get_device_name(dev) if cuda else platform.processor() or platform.machine()),
        threads=torch.get_num_threads(), torch=torch.__version__,
        config={"batch": batch, "repeats": repeats})  # stored with the table
    return df


def table(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """The entry point of ``python -m sithlib bench vision``."""
    return run(device=device, quick=quick)


if __name__ == "__main__":
    benchmark_main(table, __doc__.splitlines()[0])
