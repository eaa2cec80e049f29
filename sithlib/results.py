"""The results store: every file the book reads or writes goes through this module.

A result lives in one folder::

    metrics.csv   tidy: one row per (setting, seed, metric)
    curves.csv    training curves, subsampled (optional)
    config.json   experiment, VERSION, profile, resolved config and its hash
    env.json      provenance: sithlib version, git commit, torch / CUDA, device,
                  date, wall time (with the reused work, `reused_s`)

Paper-profile results are committed under ``results/<experiment>/`` and listed in
``results/MANIFEST.json`` with their sha256. Quick-profile results are cached by config hash
and device type under ``.cache/results/`` (git-ignored). A result whose config hash differs
from the hash of the current code's config is stale: it is never shown as current.

Profiles (the book's Reproduce page): ``auto`` (paper results when fresh, else quick with a visible
banner), ``cached`` (paper results only, anything else is an error), ``quick`` (small CPU run)
and ``paper`` (the committed paper result, or a paper-scale run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import numbers
import os
import platform
import re
import subprocess
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import sithlib

PROFILES = ("auto", "cached", "quick", "paper")
RUN_PROFILES = ("quick", "paper")
SIZE_BUDGET_BYTES = 50 * 1024 * 1024
METRICS_COLUMNS = ("metric", "value", "seed")
RESULT_FILES = ("metrics.csv", "curves.csv", "config.json", "env.json")


def _duration(seconds) -> str:
    """A wall time as a reader takes it in: "8.4 s", "254 s", "3691 s (61.5 min)"."""
    if not isinstance(seconds, (int, float)):
        return "? s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" + (f" ({seconds / 60:.1f} min)" if seconds >= 600 else "")


class ResultsError(Exception):
    """A result cannot be used; the message names the file or field and what to do."""


class StaleResultError(ResultsError):
    pass


class MissingResultError(ResultsError):
    pass


class CorruptResultError(ResultsError):
    pass


# ----------------------------------------------------------------------------- locations


def repo_root() -> Path:
    """The repository holding ``results/`` (override with ``SITH_ROOT``)."""
    if "SITH_ROOT" in os.environ:
        return Path(os.environ["SITH_ROOT"]).resolve()
    here = Path(sithlib.__file__).resolve().parents[1]
    return here if (here / "_toc.yml").exists() else Path.cwd()


def results_dir() -> Path:
    """The committed results store: ``results/``, or ``$SITH_RESULTS_DIR``."""
    return Path(os.environ.get("SITH_RESULTS_DIR", repo_root() / "results"))


def cache_dir() -> Path:
    """Results of non-published runs: ``.cache/results/``, or ``$SITH_CACHE_DIR``. Finished
    grid cells and checkpoints go beside it, in ``cells/`` and ``checkpoints/`` of its parent
    folder, so point ``SITH_CACHE_DIR`` at a ``results`` folder inside a scratch folder."""
    return Path(os.environ.get("SITH_CACHE_DIR", repo_root() / ".cache" / "results"))


# ----------------------------------------------------------------------------- configs


def check_profile(profile: str, allowed: tuple[str, ...] = PROFILES) -> str:
    if profile not in allowed:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(allowed)}")
    return profile


def config_hash(experiment: str, version: int, config) -> str:
    """sha256 of the canonical JSON of (experiment, VERSION, config): the staleness key.

    A config (or a sweep's cell) that names a method added with
    ``sithlib.methods.register_method``, in a field called ``method`` or ``methods`` or one its
    experiment lists in ``METHOD_FIELDS``, also hashes that method's code, which no ``VERSION``
    tracks. Other fields are never read for method names, so registering a method cannot
    change the hash of a config that does not train it.
    """
    body = {"experiment": experiment, "version": version, "config": _as_dict(config)}
    code = _registered_code(experiment, body["config"])
    if code:  # only then, so that every other hash stays what it was
        body["registered_methods"] = code
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _registered_code(experiment: str, config: dict) -> dict[str, str]:
    from sithlib.experiments import EXPERIMENTS
    from sithlib.methods import BUILTIN_METHODS, METHODS, method_fingerprint

    fields = {"method", "methods", *getattr(EXPERIMENTS.get(experiment), "METHOD_FIELDS", ())}
    names = set()
    for value in (config.get(f) for f in fields):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, str) and item in METHODS and item not in BUILTIN_METHODS:
                names.add(item)
    return {name: method_fingerprint(name) for name in sorted(names)}


def _as_dict(config) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def _shape(hint) -> tuple[type, int | None]:
    """(item type, required length or None) of a tuple field's hint such as tuple[int, ...]."""
    args = typing.get_args(hint)
    items = {a for a in args if a is not Ellipsis} or {str}
    (item,) = items
    return item, None if not args or Ellipsis in args else len(args)


def _check_length(given: str, hint, n: int) -> None:
    length = _shape(hint)[1]
    if n == 0:
        raise ValueError(f"{given}: give at least one value")
    if length is not None and n != length:
        raise ValueError(f"{given}: expected {length} values, got {n}")


def _coerce(field: dataclasses.Field, hint, raw: str, given: str | None = None):
    """Turn the string of ``--set key=value`` into the field's type."""
    given = given or f"--set {field.name}={raw}"
    if typing.get_origin(hint) in (tuple, list):
        parts = [p for p in raw.strip("()[] ").split(",") if p.strip()]
        _check_length(given, hint, len(parts))
        return tuple(_coerce(field, _shape(hint)[0], p.strip(), given) for p in parts)
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{given}: expected true or false, got {raw!r}")
    try:
        return hint(raw) if hint in (int, float, str) else type(field.default)(raw)
    except ValueError:
        raise ValueError(f"{given}: expected a value of type "
                         f"{getattr(hint, '__name__', hint)}, got {raw!r}") from None


def _typed(name: str, hint, value):
    """A Python override (``load_or_run(name, {"n": 1000})``) checked against the field's type:
    an int field takes an int (not a bool), a float field a real number, a tuple field a
    non-empty tuple or list of such."""
    given = f"override {name}={value!r}"
    if typing.get_origin(hint) in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{given}: expected a tuple of {_shape(hint)[0].__name__}")
        _check_length(given, hint, len(value))
        return tuple(_typed(name, _shape(hint)[0], v) for v in value)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(hint, lambda v: True)
    if not ok(value):
        raise ValueError(f"{given}: expected a value of type {getattr(hint, '__name__', hint)}")
    return value  # as given: an int for a float field hashes as before


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """``["steps=100", "lr=1e-3"]`` -> ``{"steps": "100", "lr": "1e-3"}`` with clear errors."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"malformed --set {pair!r}: expected key=value, e.g. --set seeds=3")
        out[key.strip()] = value.strip()
    return out


def resolve_config(module, profile: str, overrides: dict | None = None):
    """The experiment's config for a run profile, with ``overrides`` (strings or values).

    Unknown fields, values of the wrong type and values outside the field's
    :func:`field_domain` raise ValueError naming the field and what it allows, as does the
    experiment's optional ``check(cfg)``."""
    check_profile(profile, RUN_PROFILES)
    cfg = _override(module, module.PROFILES[profile], overrides)
    if hasattr(module, "check"):
        module.check(cfg)
    return cfg


def _override(module, base, overrides: dict | None):
    if not overrides:
        return base
    fields = {f.name: f for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(type(base))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(
                f"unknown config field {key!r} for experiment {module.NAME}; "
                f"allowed: {', '.join(fields)}"
            )
        changes[key] = (_coerce(fields[key], hints[key], value) if isinstance(value, str)
                        and hints[key] is not str else _typed(key, hints[key], value))
        _check_domain(module, key, changes[key])
    return dataclasses.replace(base, **changes)


def _numbers(value) -> list:
    items = value if isinstance(value, (tuple, list)) else (value,)
    return [v for v in items if isinstance(v, numbers.Real) and not isinstance(v, bool)]


def field_domain(module, name: str) -> str | None:
    """The interval an override of the config field ``name`` must lie in, e.g. ``"(0, inf)"``
    (for a tuple field, each of its values); None where it is unbounded or not a number.

    An experiment's ``Config`` may declare ``DOMAINS = {"ema_tau0": "[0, 1]"}``. A numeric
    field it does not declare keeps the sign that every profile gives it: positive where each
    profile's value is (counts, sizes, steps, rates, scales), non-negative where one profile
    sets it to 0 (a seed; 0 for "off"). So ``--set seeds=0`` or ``--set lr=-1`` is an input
    error that names the field, not an empty table or a traceback several minutes later.
    """
    declared = getattr(type(module.PROFILES["quick"]), "DOMAINS", {})
    if name in declared:
        if not _INTERVAL.fullmatch(declared[name]):
            raise ValueError(f"{module.NAME}.Config.DOMAINS[{name!r}] = {declared[name]!r} is "
                             "not an interval such as '[0, 1]' or '(0, inf)'")
        return declared[name]
    seen = [v for cfg in module.PROFILES.values() for v in _numbers(getattr(cfg, name, None))
            if math.isfinite(v)]
    if not seen or min(seen) < 0:
        return None
    return "(0, inf)" if min(seen) > 0 else "[0, inf)"


_INTERVAL = re.compile(r"[\[(]-?(inf|\d+(\.\d+)?), -?(inf|\d+(\.\d+)?)[\])]")


def in_domain(value: float, domain: str) -> bool:
    """Whether ``value`` lies in an interval written as ``"[0, 1]"``, ``"(0, inf)"``, ..."""
    low, high = (float(x) for x in domain[1:-1].split(","))
    above = value > low or (domain[0] == "[" and value == low)
    below = value < high or (domain[-1] == "]" and value == high)
    return above and below  # NaN is in no interval


def _check_domain(module, key: str, value) -> None:
    if key.endswith("precision"):  # read by the engine only once training starts
        from sithlib.train import PRECISIONS

        if value not in PRECISIONS:
            raise ValueError(f"--set {key}: must be one of {', '.join(PRECISIONS)}, "
                             f"got {value!r}")
    domain = field_domain(module, key)
    if domain is None:
        return
    bad = [v for v in _numbers(value) if not in_domain(v, domain)]
    if bad:
        words = {"(0, inf)": "> 0", "[0, inf)": ">= 0", "[1, inf)": ">= 1"}
        allowed = words.get(domain, f"in {domain}")
        which = "each value" if isinstance(value, (tuple, list)) else "the value"
        raise ValueError(f"--set {key}: {which} must be {allowed} for experiment "
                         f"{module.NAME}, got {bad[0]!r}")


# ----------------------------------------------------------------------------- atomic I/O


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _fsync_dir(folder: Path) -> None:
    """Make the renames and removals in ``folder`` durable, in the order they were made."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# Seconds that earlier calls spent on the work the current run reuses (finished grid cells,
# training resumed from a checkpoint). `run_experiment` adds them to the run's own wall time,
# so that a result's wall time is what it cost, however many calls made it.
_earlier_s = [0.0]
# Cached cells of an older sithlib record no time; a run that reuses them cannot say its cost.
_untimed_cells = [0]


class Checkpoint:
    """Training state on disk for ``sithlib.train``: written atomically, read back safely.

    Checkpoints live in the git-ignored cache (``.cache/checkpoints/``) and are never committed.
    A checkpoint made for another config is ignored, so a changed config starts afresh. Each
    one also keeps the seconds spent on the run so far, counted from this object's creation
    plus what the loaded checkpoint had spent.
    """

    def __init__(self, path: Path, key: str = ""):
        self.path, self.key = Path(path), key
        self._started, self._loaded_s = time.perf_counter(), 0.0

    def save(self, state: dict) -> None:
        import io

        import torch

        spent = self._loaded_s + time.perf_counter() - self._started
        buffer = io.BytesIO()
        torch.save({"key": self.key, "state": state, "spent_s": spent}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def load(self) -> dict | None:
        import torch

        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a truncated or foreign file
            raise CorruptResultError(f"{self.path}: unreadable checkpoint ({err}); delete it to "
                                     "start the run afresh") from None
        # torch.load reads any tensor file; one that `save` did not write is no checkpoint.
        if not isinstance(saved, dict) or not {"key", "state"} <= saved.keys():
            found = (f"keys {', '.join(map(str, saved)) or 'none'}" if isinstance(saved, dict)
                     else f"a {type(saved).__name__}")
            raise CorruptResultError(f"{self.path}: not a sithlib checkpoint (expected a dict "
                                     f"with keys key and state, and optionally spent_s; found "
                                     f"{found}); delete it to start the run afresh")
        if saved["key"] != self.key:
            return None
        spent = saved.get("spent_s", 0.0)  # absent in checkpoints of an older sithlib
        if isinstance(spent, bool) or not isinstance(spent, (int, float)):
            raise CorruptResultError(f"{self.path}: spent_s is {spent!r}, expected a number of "
                                     "seconds; delete it to start the run afresh")
        self._loaded_s = float(spent)
        _earlier_s[0] += self._loaded_s
        return saved["state"]

    def clear(self) -> None:
        """Delete the checkpoint; inside ``run_experiment``, only once the result is written,
        so a run killed between a part's training and the result's last file resumes from it."""
        if _pending_clears[0] is not None:
            _pending_clears[0].append(self)
        else:
            self.path.unlink(missing_ok=True)


# Checkpoints an experiment has finished with, kept until run_experiment has written the result.
_pending_clears: list[list[Checkpoint] | None] = [None]


@contextlib.contextmanager
def _clears_deferred():
    """Collect the checkpoints cleared inside the block instead of deleting them."""
    _pending_clears[0] = kept = []
    try:
        yield kept
    finally:
        _pending_clears[0] = None


# The device of the run in progress. Experiments call run_grid and checkpoint_for without it,
# so run_experiment sets it here (see `running_on`) for the caches to be keyed by it.
_run_device: list[str | None] = [None]


@contextlib.contextmanager
def running_on(device: str):
    """Key the grid cells and checkpoints made inside the block by ``device`` (see
    ``device_key``); ``run_experiment`` wraps the experiment's ``run`` in it."""
    previous, _run_device[0] = _run_device[0], str(device)
    try:
        yield
    finally:
        _run_device[0] = previous


def current_device() -> str:
    """The device of the run in progress; outside ``running_on``, the one ``run_experiment``
    picks by default."""
    return _run_device[0] or default_device()


def device_key(key: str, device: str | None = None) -> str:
    """A cache key (a config hash) for work done on ``device`` (default: ``current_device()``).

    A CPU and a GPU run of one config give different numbers (prefetch depth, TF32 and bf16 act
    only on a GPU), so they never share cells, checkpoints or cached results. The device type
    is enough: cuda:0 and cuda:1 compute alike. The CPU keeps the bare hash, so caches made
    before devices were keyed stay found by CPU runs (the book build). ``config_hash``, the
    staleness key of committed results, is unchanged.
    """
    import torch

    try:
        kind = torch.device(device or current_device()).type
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N") from None
    return key if kind == "cpu" else f"{key}-{kind}"


def checkpoint_for(experiment: str, cfg, part: str = "run") -> Checkpoint:
    """The checkpoint of one training run of an experiment, keyed by the config hash and the
    type of the device of the run in progress (``device_key``)."""
    from sithlib.experiments import get_experiment

    module = get_experiment(experiment)
    key = device_key(config_hash(module.NAME, module.VERSION, cfg))
    path = cache_dir().parent / "checkpoints" / module.NAME / f"{key}-{part}.pt"
    return Checkpoint(path, key)


def run_grid(experiment: str, cells, run_cell,
             cache: bool = True) -> dict[str, pd.DataFrame | None]:
    """Run a sweep cell by cell; a finished cell is read back from the cache, never rerun.

    Parameters
    ----------
    experiment : str
        The experiment's NAME; its VERSION is part of every cell's key, so a code change that
        bumps it reruns the grid.
    cells : sequence of dict
        One JSON-serialisable mapping per grid point, holding everything that determines its
        numbers (the grid values and the shared settings). Extending a grid (``--set``) adds
        cells and only those run.
    run_cell : callable
        ``run_cell(cell) -> {"metrics": DataFrame, "curves": DataFrame or None}``; the frames
        should carry the cell's grid values as columns.
    cache : bool
        False runs every cell and writes nothing (an experiment's ``cache_cells`` switch),
        with the same concatenation.

    Returns
    -------
    dict
        ``{"metrics": ..., "curves": ...}``: the cells' tables concatenated in grid order
        (``curves`` is None when no cell has curves).

    Notes
    -----
    Each finished cell is written atomically to ``.cache/cells/<experiment>/<key>/`` with a
    ``done.json`` written last, so an interrupted sweep resumes at the first unfinished cell.
    The key is the cell's hash and the type of the device of the run in progress
    (``device_key``): a GPU run never reuses a cell a CPU run made, nor the reverse.
    ``done.json`` also records the seconds the cell cost; a cell read back from the cache adds
    them to the run's wall time (see ``run_experiment``).
    """
    from sithlib.experiments import get_experiment

    if not cache:
        return _concat_cells([run_cell(cell) for cell in cells])
    module = get_experiment(experiment)
    root = cache_dir().parent / "cells" / module.NAME
    parts = []
    for cell in cells:
        folder = root / device_key(config_hash(module.NAME, module.VERSION, cell))
        done = folder / "done.json"
        if done.exists():
            record = _read_json(done)
            if "wall_time_s" in record:
                _earlier_s[0] += float(record["wall_time_s"])
            else:
                _untimed_cells[0] += 1
        else:
            start, earlier = time.perf_counter(), _earlier_s[0]
            fresh = {k: v for k, v in run_cell(cell).items() if v is not None and len(v)}
            for name, frame in fresh.items():
                atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
            # What the cell cost, including training resumed from an earlier call's checkpoint.
            spent = time.perf_counter() - start + _earlier_s[0] - earlier
            record = {"cell": cell, "tables": sorted(fresh), "wall_time_s": round(spent, 3),
                      "device": current_device()}
            atomic_write_text(done, _json_text(record))
        # Always read back from disk, so a fresh sweep and a resumed one give identical frames.
        names = record.get("tables")
        if not isinstance(names, list):
            raise CorruptResultError(f"{done}: no list of tables; delete {folder} to rerun")
        parts.append({n: _read_csv(folder / f"{n}.csv", METRICS_COLUMNS if n == "metrics" else ())
                      for n in names})
    return _concat_cells(parts)


def _concat_cells(parts: list[dict]) -> dict[str, pd.DataFrame | None]:
    """The cells' tables concatenated in grid order; None for a table no cell has."""
    frames = {name: [p[name] for p in parts if p.get(name) is not None and len(p[name])]
              for name in ("metrics", "curves")}
    return {name: pd.concat(f, ignore_index=True) if f else None for name, f in frames.items()}


# ----------------------------------------------------------------------------- provenance


def _git_commit() -> str:
    """HEAD's hash, with ``-dirty`` when the code differs from it. Where the tree is a copy
    without its git history (a lent GPU machine), ``SITH_GIT_COMMIT`` names the commit the
    copy was made from; otherwise "unknown"."""
    unknown = os.environ.get("SITH_GIT_COMMIT", "unknown")
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
            timeout=10,
        )
        # Dirty means code or configuration differ from the commit, a new Python file included
        # (a fork's experiment or method not yet committed); result files written by other
        # runs (results/) and untracked notes or data do not change what this run computes.
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", ".", ":!results"],
            cwd=repo_root(), capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return unknown
    if out.returncode != 0:
        return unknown
    dirty = any(not line.startswith("??") or line.rstrip().endswith(".py")
                for line in status.stdout.splitlines())
    return out.stdout.strip() + ("-dirty" if dirty else "")


def short_commit(commit: str) -> str:
    """A commit as shown on the site: 12 hex digits, keeping the ``-dirty`` mark of a run made
    with uncommitted code or configuration (cutting the full string to 12 would drop it)."""
    dirty = commit.endswith("-dirty")
    return commit.removesuffix("-dirty")[:12] + ("-dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _package_versions(names) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def environment(device: str, wall_time_s: float) -> dict:
    import torch

    cuda = torch.cuda.is_available() and str(device).startswith("cuda")
    return {
        "sithlib_version": sithlib.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # The numerics outside torch: metrics fit with scikit-learn and scipy, tables with pandas.
        "packages": _package_versions(("numpy", "scipy", "scikit-learn", "pandas")),
        "cuda": torch.version.cuda if cuda else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "wall_time_s": round(wall_time_s, 3),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- Result


@dataclass
class Result:
    """One experiment's tables and provenance, as the chapters read them."""

    experiment: str
    profile: str
    metrics: pd.DataFrame
    curves: pd.DataFrame | None
    config: dict
    env: dict
    path: Path
    banner: str | None = None

    @property
    def paper_grade(self) -> bool:
        return self.profile == "paper" and self.banner is None

    def provenance(self) -> str:
        e = self.env
        return (
            f"{self.experiment}, profile {self.profile}, config {self.config['config_hash']}, "
            f"commit {short_commit(e.get('git_commit', '?'))}, {e.get('device_name', '?')} "
            f"({e.get('device', '?')}), {_duration(e.get('wall_time_s'))}"
            + (f" and {e['untimed_cells']} cached grid cells of unrecorded cost"
               if e.get("untimed_cells") else "") + ", "
            f"{e.get('date', '?')[:10]}"
        )

    def _repr_html_(self) -> str:
        # The banner is the visible warning that the numbers are not paper-grade.
        import html

        text = f"<p>Results: {html.escape(self.provenance())}.</p>"
        if self.banner:
            return (
                '<div class="admonition warning"><p class="admonition-title">'
                f"Not paper-grade numbers</p><p>{html.escape(self.banner)}</p>{text}</div>"
            )
        return ('<div class="admonition note"><p class="admonition-title">Provenance</p>'
                f"{text}</div>")

    def __repr__(self) -> str:
        head = f"Result({self.provenance()})"
        return head + (f"\nWARNING: {self.banner}" if self.banner else "")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptResultError(f"{path}: missing (every result needs it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptResultError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CorruptResultError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise CorruptResultError(f"{path}: missing (every result needs it)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CorruptResultError(f"{path}: not a readable CSV ({err})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CorruptResultError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    if "value" in required and not pd.api.types.is_numeric_dtype(frame["value"]):
        raise CorruptResultError(f"{path}: column 'value' holds non-numeric entries")
    return frame


def read_result(folder: Path) -> Result:
    """Read and validate a result folder; any problem raises CorruptResultError naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingResultError(f"{folder}: no result folder")
    if not (folder / "config.json").exists():
        # write_result removes config.json first and writes it last: its absence means a write
        # never finished, and the other files may mix two runs.
        raise CorruptResultError(f"{folder / 'config.json'}: missing, so the result is "
                                 "incomplete (an interrupted write); rerun the experiment")
    config = _read_json(folder / "config.json")
    for key in ("experiment", "version", "profile", "config", "config_hash"):
        if key not in config:
            raise CorruptResultError(f"{folder / 'config.json'}: missing field {key!r}")
    env = _read_json(folder / "env.json")
    metrics = _read_csv(folder / "metrics.csv", METRICS_COLUMNS)
    curves_path = folder / "curves.csv"
    curves = _read_csv(curves_path, ("step",)) if curves_path.exists() else None
    return Result(config["experiment"], config["profile"], metrics, curves, config, env, folder)


def write_result(folder: Path, experiment: str, version: int, profile: str, config,
                 tables: dict[str, pd.DataFrame], env: dict) -> Result:
    """Write one result folder; each file atomically, config.json last (it marks completion).

    A rewrite first removes the old config.json, so a write that dies half-way leaves a folder
    that reads as incomplete, never one that mixes the new files with the old.
    """
    folder = Path(folder)
    metrics = tables["metrics"]
    missing = [c for c in METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics table lacks column(s) {', '.join(missing)} (tidy format)")
    if (folder / "config.json").exists():
        (folder / "config.json").unlink(missing_ok=True)  # another writer may remove it first
        _fsync_dir(folder)  # the removal must reach the disk before any new file does
    atomic_write_text(folder / "metrics.csv", metrics.to_csv(index=False))
    curves = tables.get("curves")
    if curves is not None:
        atomic_write_text(folder / "curves.csv", curves.to_csv(index=False))
    else:
        (folder / "curves.csv").unlink(missing_ok=True)
    atomic_write_text(folder / "env.json", _json_text(env))
    meta = {
        "experiment": experiment,
        "version": version,
        "profile": profile,
        "config": _as_dict(config),
        "config_hash": config_hash(experiment, version, config),
    }
    atomic_write_text(folder / "config.json", _json_text(meta))
    return read_result(folder)


# ----------------------------------------------------------------------------- runs


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_experiment(experiment: str, profile: str = "quick", overrides: dict | None = None,
                   device: str | None = None, out: Path | None = None) -> Result:
    """Run one experiment and write its result folder (paper: ``results/``; quick: the cache)."""
    from sithlib.experiments import get_experiment

    module = get_experiment(experiment)
    check_profile(profile, RUN_PROFILES)
    cfg = resolve_config(module, profile, overrides)
    if out is not None:
        check_out(out, module.NAME)
    device = device or default_device()
    _earlier_s[0], _untimed_cells[0] = 0.0, 0
    start = time.perf_counter()
    from sithlib.train import full_fp32  # TF32 only where a training run asks for it

    with running_on(device), full_fp32(), _clears_deferred() as done:
        tables = module.run(cfg, device=device)
    # Work reused from earlier calls counts too: a result's wall time is what it cost.
    env = environment(device, time.perf_counter() - start + _earlier_s[0])
    env["reused_s"] = round(_earlier_s[0], 3)
    if _untimed_cells[0]:
        env["untimed_cells"] = _untimed_cells[0]  # the wall time is then a lower bound
    publish = out is None and profile == "paper" and not overrides
    if out is not None:
        folder = Path(out)
    else:
        folder = results_dir() / module.NAME if publish else cache_folder(module, cfg, device)
    result = write_result(folder, module.NAME, module.VERSION, profile, cfg, tables, env)
    for checkpoint in done:  # the result is safe: the training state can go
        checkpoint.clear()
    if publish:
        update_manifest()
    return result


def check_out(out, experiment: str) -> Path:
    """The folder ``--out`` names, checked before any work: a folder (or a path that can be
    made one) that is not inside the published results, nor holds another experiment's result.
    Published results are written only by a paper run without overrides or ``--out``."""
    folder = Path(out)
    published = results_dir().resolve()
    if folder.resolve() == published or published in folder.resolve().parents:
        raise ValueError(f"--out {out}: inside the published results ({results_dir()}); "
                         "choose a folder elsewhere (a paper run without --set and --out "
                         "writes there itself)")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if (folder / "config.json").exists():
        try:
            found = _read_json(folder / "config.json").get("experiment")
        except CorruptResultError:
            found = None
        if found != experiment:
            what = f"a result of experiment {found!r}" if found else "a config.json"
            raise ValueError(f"--out {out}: holds {what}, which this run of {experiment!r} "
                             "would replace; choose an empty folder")
    parent = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot create or write in {parent}")
    return folder


def cache_folder(module, cfg, device: str | None = None) -> Path:
    """Where unpublished results (quick, or any config with overrides) are cached: by config
    hash and device type (``device_key``; ``device`` defaults to ``current_device()``)."""
    return cache_dir() / module.NAME / device_key(config_hash(module.NAME, module.VERSION, cfg),
                                                  device)


def regenerate_command(experiment: str) -> str:
    return f"python -m sithlib run {experiment} --profile paper"


def paper_status(experiment: str) -> tuple[str, Result | None, str]:
    """('fresh' | 'stale' | 'missing', result or None, explanation) for the committed result."""
    from sithlib.experiments import get_experiment

    module = get_experiment(experiment)
    folder = results_dir() / module.NAME
    if not (folder / "config.json").exists():
        return "missing", None, f"no paper result at {folder}"
    result = read_result(folder)
    want = config_hash(module.NAME, module.VERSION, module.PROFILES["paper"])
    have = result.config["config_hash"]
    if have != want or result.config["profile"] != "paper":
        why = (f"{folder} was made with config {have} (VERSION {result.config['version']}), "
               f"the current paper config is {want} (VERSION {module.VERSION})")
        return "stale", result, why
    return "fresh", result, ""


def load_or_run(experiment: str, config: dict | None = None, profile: str = "auto",
                device: str | None = None) -> Result:
    """What a chapter calls: the experiment's result for ``profile``.

    ``config`` holds overrides on top of the profile's config (a custom study). ``auto``
    returns the committed paper result when it is fresh, otherwise runs (or reuses) the quick
    profile and attaches a banner saying so and how to regenerate. ``cached`` raises unless
    a fresh paper result is committed. Quick results are cached by config hash and device type.
    """
    from sithlib.experiments import get_experiment

    module = get_experiment(experiment)
    check_profile(profile)
    if profile == "cached" and config:
        raise ValueError("profile 'cached' reads committed paper results only; it takes no config")
    reason = "a custom configuration was requested"
    if profile in ("auto", "cached", "paper") and not config:
        status, result, why = paper_status(module.NAME)
        if status == "fresh":
            return result
        if profile == "cached":
            cls = StaleResultError if status == "stale" else MissingResultError
            raise cls(f"{why}; regenerate with: {regenerate_command(module.NAME)}")
        reason = "no paper-profile result is committed" if status == "missing" else (
            f"the committed paper result is stale ({why})")
    run_profile = "paper" if profile == "paper" else "quick"
    cfg = resolve_config(module, run_profile, config)
    device = device or default_device()
    folder = cache_folder(module, cfg, device) if (run_profile == "quick" or config) else None
    result = None
    if folder is not None and (folder / "config.json").exists():
        try:
            result = read_result(folder)
        except CorruptResultError:
            result = None  # a broken cache entry is recomputed, never shown
    if result is None:
        result = run_experiment(module.NAME, run_profile, config, device, out=folder)
    if profile == "auto" and result.profile != "paper":
        result.banner = (
            f"These numbers come from the quick profile (small CPU run), because {reason}. "
            f"They show the code path, not the paper-scale science. On a GPU, regenerate with: "
            f"{regenerate_command(module.NAME)}"
        )
    return result


# ----------------------------------------------------------------------------- benchmarks


def benchmarks_dir() -> Path:
    return results_dir() / "benchmarks"


def benchmark_main(table, description: str, argv=None) -> pd.DataFrame:
    """The command line of a benchmark whose ``table(quick=, device=)`` (the function
    ``python -m sithlib bench`` calls) returns a tidy table:
    ``--device``, ``--quick`` and ``--threads``; prints the table wide, stores nothing
    (``python -m sithlib bench NAME`` stores it)."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    df = table(quick=args.quick, device=args.device)
    print(f"# {df.attrs}")
    print(df.pivot(index="case", columns="metric", values="value").loc[df.case.unique()]
          .to_string(float_format=lambda v: f"{v:.4g}"))
    return df


def best_seconds(fn, repeats: int, sync=None) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` after one untimed warm-up call;
    ``sync`` (e.g. ``torch.cuda.synchronize``) brackets each call so queued GPU work counts."""
    fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return min(times)


def hardware_slug(env: dict) -> str:
    """'cpu' or the GPU's name as a folder name ('gpu-nvidia-h100-80gb-hbm3')."""
    if not env.get("cuda"):
        return "cpu"
    name = "".join(c if c.isalnum() else "-" for c in str(env["device_name"]).lower())
    return "gpu-" + "-".join(filter(None, name.split("-")))


def write_benchmark(name: str, table: pd.DataFrame, env: dict, config: dict) -> Path:
    """Store one benchmark run (one table per benchmark and hardware), update the manifest and
    say which it did: wrote the table, or kept the complete one an interrupted run met."""
    for column in ("case", "metric", "value"):
        if column not in table.columns:
            raise ValueError(f"benchmark table lacks column {column!r} (tidy: case, metric, value)")
    folder = benchmarks_dir() / name / hardware_slug(env)
    stored = folder / "config.json"
    if (config.get("interrupted") and stored.exists()
            and not _read_json(stored).get("interrupted")):
        # A run cut short by a time limit never replaces a complete table of the same hardware.
        print(f"kept the complete table in {folder}: this run was interrupted")
        return folder
    atomic_write_text(folder / "table.csv", table.to_csv(index=False))
    atomic_write_text(folder / "env.json", _json_text(env))
    atomic_write_text(folder / "config.json", _json_text({"benchmark": name, **config}))
    update_manifest()
    print(f"wrote {folder}")
    return folder


def read_benchmarks() -> list[dict]:
    """Every stored benchmark run: name, hardware, table, env and config."""
    runs = []
    for table in sorted(benchmarks_dir().glob("*/*/table.csv")):
        folder = table.parent
        runs.append({"name": folder.parent.name, "hardware": folder.name,
                     "table": _read_csv(table, ("case", "metric", "value")),
                     "env": _read_json(folder / "env.json"),
                     "config": _read_json(folder / "config.json")})
    return runs


# ----------------------------------------------------------------------------- manifest


def _result_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/config.json"))


def build_manifest(root: Path | None = None) -> dict:
    root = Path(root or results_dir())
    entries = {}
    for folder in _result_folders(root):
        config = read_result(folder).config
        files = {
            f.name: sha256_file(f) for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".")
        }
        entries[folder.name] = {"config_hash": config["config_hash"],
                                "version": config["version"], "files": files}
    bench = {str(f.relative_to(root)): sha256_file(f)
             for f in sorted((root / "benchmarks").rglob("*")) if f.is_file()}
    return {"sithlib_version": sithlib.__version__, "experiments": entries, "benchmarks": bench}


def update_manifest(root: Path | None = None) -> Path:
    root = Path(root or results_dir())
    path = root / "MANIFEST.json"
    atomic_write_text(path, _json_text(build_manifest(root)))
    return path


def verify(root: Path | None = None) -> tuple[list[str], list[str]]:
    """Check the committed results: (problems, notes). Problems make ``verify`` fail.

    Problems: corrupt files, sha256 or config hash differing from the manifest, files not in
    the manifest, pickles or checkpoints, the 50 MB budget exceeded, stale results of
    experiments the code still has. Notes: experiments with no paper result yet.
    """
    from sithlib.experiments import EXPERIMENTS

    root = Path(root or results_dir())
    if not root.is_dir():
        return [f"{root}: the results folder does not exist or is not a folder"], []
    problems: list[str] = []
    notes: list[str] = []
    manifest_path = root / "MANIFEST.json"
    manifest = {"experiments": {}}
    if manifest_path.exists():
        try:
            manifest = _read_json(manifest_path)
        except CorruptResultError as err:
            problems.append(str(err))
    # A manifest of the wrong shape is a problem to report, not a traceback.
    for key in ("experiments", "benchmarks"):
        if not isinstance(manifest.get(key, {}), dict):
            problems.append(f"{manifest_path}: {key!r} must be a JSON object")
            manifest[key] = {}
    for name, entry in list(manifest.get("experiments", {}).items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("files", {}), dict):
            problems.append(f"{manifest_path}: the entry of {name!r} must be an object with "
                            "an object 'files'")
            manifest["experiments"][name] = {"files": {}}
    listed = manifest.get("experiments", {})
    total = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            total += path.stat().st_size
            if path.suffix in (".pkl", ".pickle", ".pt", ".pth", ".ckpt"):
                problems.append(f"{path}: pickles and checkpoints are never committed")
            elif path.name.endswith(".tmp"):
                problems.append(f"{path}: left by an interrupted write; delete it")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "benchmarks"):
        if not (folder / "config.json").exists() and any(folder.iterdir()):
            problems.append(f"{folder}: files but no config.json, an interrupted write; rerun "
                            f"the experiment or delete the folder")
    if total > SIZE_BUDGET_BYTES:
        problems.append(f"{root}: {total / 2**20:.1f} MB exceeds the 50 MB budget")
    folders = {f.name: f for f in _result_folders(root)}
    for name in sorted(set(folders) | set(listed)):
        if name not in folders:
            problems.append(f"{manifest_path}: lists {name!r} but {root / name} has no result")
            continue
        folder = folders[name]
        try:
            result = read_result(folder)
        except ResultsError as err:
            problems.append(str(err))
            continue
        entry = listed.get(name)
        if entry is None:
            problems.append(f"{folder}: not in {manifest_path}; check the files, then run "
                            "`python -m sithlib verify --fix`")
            continue
        for fname, digest in entry.get("files", {}).items():
            f = folder / fname
            if not f.exists():
                problems.append(f"{f}: listed in the manifest but missing")
            elif sha256_file(f) != digest:
                problems.append(f"{f}: sha256 differs from {manifest_path} (edited or corrupt)")
        for f in folder.iterdir():
            if f.is_file() and not f.name.startswith(".") and f.name not in entry.get("files", {}):
                problems.append(f"{f}: not listed in {manifest_path}")
        if entry.get("config_hash") != result.config["config_hash"]:
            problems.append(f"{folder / 'config.json'}: config hash differs from the manifest")
        if name in EXPERIMENTS:
            status, _, why = paper_status(name)
            if status == "stale":
                problems.append(f"stale: {why}; regenerate with: {regenerate_command(name)}")
        else:
            notes.append(f"{folder}: experiment {name!r} is no longer in sithlib.experiments")
    listed_bench = manifest.get("benchmarks", {})
    on_disk = {str(f.relative_to(root)) for f in (root / "benchmarks").rglob("*") if f.is_file()}
    for rel in sorted(on_disk | set(listed_bench)):
        if rel not in listed_bench:
            problems.append(f"{root / rel}: not listed in {manifest_path}")
        elif rel not in on_disk:
            problems.append(f"{root / rel}: listed in the manifest but missing")
        elif sha256_file(root / rel) != listed_bench[rel]:
            problems.append(f"{root / rel}: sha256 differs from {manifest_path} "
                            "(edited or corrupt)")
    for name in EXPERIMENTS:
        if name not in folders:
            notes.append(f"{name}: no paper result committed yet ({regenerate_command(name)})")
    return problems, notes


def status_rows() -> list[dict]:
    """One row per experiment: what the book shows and where it came from (intro's table)."""
    from sithlib.experiments import EXPERIMENTS

    rows = []
    for name, module in EXPERIMENTS.items():
        try:
            status, result, _ = paper_status(name)
        except ResultsError:
            status, result = "corrupt", None
        row = {"experiment": name, "chapter": module.CHAPTER, "title": module.TITLE,
               "grade": "paper" if status == "fresh" else "quick",
               "paper_result": status, "commit": "", "device": ""}
        if status == "fresh" and result is not None:
            row["commit"] = short_commit(result.env.get("git_commit", ""))
            row["device"] = result.env.get("device_name", "")
        rows.append(row)
    return rows
