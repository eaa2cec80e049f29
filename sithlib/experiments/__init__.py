"""Experiments: one module per chapter group, the only layer that knows the papers' settings.

Each module defines ``NAME``, ``VERSION`` (bump it when the code changes what the experiment
computes, so committed results turn stale), ``TITLE``, ``CHAPTER``, a frozen ``Config``
dataclass, ``PROFILES = {"quick": Config(...), "paper": Config(...)}``,
``run(cfg, device) -> {"metrics": DataFrame, "curves": DataFrame | None}`` and plot functions.

Modules are discovered: a new file in this package that defines ``NAME`` is an experiment
(``python -m sithlib list`` shows it), so a fork adds a study without touching a registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def _discover() -> dict[str, ModuleType]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME"):
            if module.NAME in found:
                raise RuntimeError(f"two experiment modules share the NAME {module.NAME!r}")
            found[module.NAME] = module
    # Reading order: the status table and `list` follow the book's chapters.
    return dict(sorted(found.items(), key=lambda kv: (kv[1].CHAPTER, kv[0])))


EXPERIMENTS: dict[str, ModuleType] = _discover()


def get_experiment(name: str) -> ModuleType:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; allowed: {', '.join(sorted(EXPERIMENTS))}"
        ) from None
