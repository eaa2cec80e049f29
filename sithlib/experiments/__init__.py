"""Experiments: one module per chapter group, the only layer that knows the papers' settings.

Each module defines ``NAME``, ``VERSION`` (bump it when the code changes what the experiment
computes, so committed results turn stale), ``TITLE``, ``CHAPTER``, a frozen ``Config``
dataclass, ``PROFILES = {"quick": Config(...), "paper": Config(...)}``,
``run(cfg, device) -> {"metrics": DataFrame, "curves": DataFrame | None}`` and plot functions.
"""

from __future__ import annotations

from types import ModuleType

from sithlib.experiments import infonce_sphere, vmf_concentration

EXPERIMENTS: dict[str, ModuleType] = {m.NAME: m for m in (vmf_concentration, infonce_sphere)}


def get_experiment(name: str) -> ModuleType:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; allowed: {', '.join(sorted(EXPERIMENTS))}"
        ) from None
