"""Experiments: one module per chapter group, the only layer that knows the papers' settings.

Each module defines ``NAME``, ``VERSION`` (bump it when the code changes what the experiment
computes, so committed results turn stale), ``TITLE``, ``CHAPTER`` (its notebook's path
without ``.ipynb``, e.g. ``"chapters/01_sith/05_platonic"``), a frozen ``Config``
dataclass, ``PROFILES = {"quick": Config(...), "paper": Config(...)}``,
``run(cfg, device) -> {"metrics": DataFrame, "curves": DataFrame | None}`` and plot functions.
Optional: ``check(cfg)``, checks that depend on more than the config (such as the methods a
reader registered), run by ``resolve_config`` before any work starts; ``METHOD_FIELDS``,
config fields besides ``method`` / ``methods`` that may name registered methods, whose code
the results store then hashes.

Modules are discovered: a new file in this package that defines ``NAME`` is an experiment
(``python -m sithlib list`` shows it), so a fork adds a study without touching a registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from types import ModuleType

# Display names of methods and scores, and pieces of computed sentences, for readers' own
# tables and text.
from sithlib.experiments._tables import (
    METHOD_LABELS,
    METRIC_LABELS,
    and_join,
    count_of,
    number,
    number_word,
    tex_sci,
)

__all__ = ["EXPERIMENTS", "METHOD_LABELS", "METRIC_LABELS", "and_join", "count_of", "number",
           "number_word", "get_experiment", "shrink", "tex_sci", "trains"]


REQUIRED = ("NAME", "VERSION", "TITLE", "CHAPTER", "Config", "PROFILES", "run")


def _discover() -> dict[str, ModuleType]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME"):
            missing = [a for a in REQUIRED if not hasattr(module, a)]
            if missing:
                raise AttributeError(
                    f"experiment module {module.__file__} defines NAME but not "
                    f"{', '.join(missing)}; an experiment needs {', '.join(REQUIRED)} "
                    "(see the docstring of sithlib.experiments)")
            if module.NAME in found:
                raise RuntimeError(f"two experiment modules share the NAME {module.NAME!r}")
            found[module.NAME] = module
    # Reading order: the status table and `list` follow the book's chapters.
    return dict(sorted(found.items(), key=lambda kv: (kv[1].CHAPTER, kv[0])))


EXPERIMENTS: dict[str, ModuleType] = _discover()


def get_experiment(name: str) -> ModuleType:
    """The experiment module registered as ``name`` (a ValueError lists the names)."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; allowed: {', '.join(sorted(EXPERIMENTS))}"
        ) from None


def trains(name: str) -> bool:
    """Whether the experiment trains: it imports the engine's ``train``, or calls code of an
    experiment that does (the others are numerical checks)."""
    import sithlib.train

    trainers = {m.__name__ for m in EXPERIMENTS.values()
                if getattr(m, "train", None) is sithlib.train.train}
    module = get_experiment(name)
    return module.__name__ in trainers or any(
        getattr(v, "__module__", None) in trainers for v in vars(module).values())


def shrink(cfg, *, training: bool = True):
    """``cfg`` with small evaluation sets and, with ``training``, 4 steps and 2 seeds.

    Everything else (network widths, batch sizes, grids, methods) is unchanged, so the paper
    configuration's code paths run on a CPU in minutes: ``tools/paper_smoke.py`` catches crashes
    before GPU time is spent, ``benchmarks/bench_cost.py`` (``training=False``) counts what the
    paper profile's training costs.
    """
    small = {}
    for f in dataclasses.fields(cfg):
        v, name = getattr(cfg, f.name), f.name
        if not isinstance(v, int) or isinstance(v, bool):
            continue
        if training and name.endswith("steps"):
            small[name] = min(v, 4)
        elif training and ("eval_every" in name or name == "checkpoint_every"):
            small[name] = min(v, 2) if v else v
        elif training and name.endswith("evals"):
            small[name] = min(v, 2)
        elif training and name in ("seeds", "image_seeds"):
            small[name] = min(v, 2)
        elif name == "n":  # sample counts of experiments without training steps
            small[name] = min(v, 2000)
        elif name == "n_anchors":  # per-anchor measurements after training (vicreg_assumptions)
            small[name] = min(v, 3)
        elif name == "n_views":  # must stay above the normality tests' dimension + 1
            small[name] = min(v, 32)
        elif name.startswith(("n_eval", "vec_n_eval", "img_n_eval", "image_eval", "n_test",
                              "n_bank", "n_probe", "n_nonlinear")):
            small[name] = min(v, 512)
    return dataclasses.replace(cfg, **small)
