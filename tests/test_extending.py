"""A reader's own method: register_method, the example under examples/, the results-store hash
of its code, the Platonic experiment and ``python -m sithlib run --import``."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sithlib import cli, methods
from sithlib.experiments import platonic
from sithlib.methods import (
    BUILTIN_METHODS,
    Method,
    available_methods,
    build_method,
    method_fingerprint,
    register_method,
    unregister_method,
)
from sithlib.models import MLP
from sithlib.results import config_hash

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "alignment_uniformity.py"


@pytest.fixture
def align_uniform():
    """The example's method class, registered for one test and forgotten afterwards."""
    cli.import_plugins([str(EXAMPLE)])  # registers it (or finds it registered by an earlier test)
    cls = __import__("sys").modules["sithlib_plugin_alignment_uniformity"].AlignUniform
    register_method(cls, replace=True)
    yield cls
    unregister_method("align_uniform")


@dataclass(frozen=True)
class _Cfg:
    weight: float = 1.0


def _method(name: str, **attrs) -> type[Method]:
    return type("Custom", (Method,), {"name": name, "config_class": _Cfg, **attrs})


def test_registration_is_validated():
    with pytest.raises(TypeError, match="subclass of sithlib.methods.Method"):
        register_method(object)
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_method(_method("My Method"))
    with pytest.raises(ValueError, match="built-in"):
        register_method(_method("byol"))
    with pytest.raises(TypeError, match="frozen dataclass"):
        register_method(_method("loose", config_class=dict))
    with pytest.raises(ValueError, match="needs must be"):
        register_method(_method("odd", needs="labels"))
    with pytest.raises(ValueError, match="built-in method and cannot"):
        unregister_method("simclr")
    with pytest.raises(ValueError, match="no registered method 'ghost'"):
        unregister_method("ghost")
    first = register_method(_method("custom_a"))
    try:
        assert available_methods()[-1] == "custom_a"
        with pytest.raises(ValueError, match="already registered; pass replace=True"):
            register_method(_method("custom_a"))
        assert register_method(replace=True)(second := _method("custom_a")) is second
        assert methods.METHODS["custom_a"] is second is not first
    finally:
        unregister_method("custom_a")
    assert available_methods() == BUILTIN_METHODS


def test_display_names_come_from_the_method_classes():
    """One source: a class's ``label`` (else its name); METHOD_LABELS reads it live, so a
    method registered after import shows its own label in every chapter's tables."""
    import pandas as pd

    from sithlib.experiments import METHOD_LABELS
    assert METHOD_LABELS["barlow_twins"] == "Barlow Twins" and METHOD_LABELS["simclr"] == "SimCLR"
    assert METHOD_LABELS["stability"] == "stability" == methods.method_label("stability")
    assert methods.method_label("raw x") == "raw x" and "raw x" not in METHOD_LABELS
    assert list(METHOD_LABELS) == list(available_methods())
    register_method(_method("custom_b", label="Custom B"))
    try:
        assert METHOD_LABELS["custom_b"] == "Custom B" == platonic.label("custom_b")
        frame = pd.DataFrame({"r2": [1.0, 0.5, 0.2]}, index=["vicreg", "custom_b", "raw x"])
        shown = ["VICReg", "Custom B", "raw x"]
        assert list(frame.rename(index=METHOD_LABELS).index) == shown
        assert list(pd.Series(frame.index).replace(METHOD_LABELS)) == shown
    finally:
        unregister_method("custom_b")
    assert "custom_b" not in METHOD_LABELS and methods.method_label("custom_b") == "custom_b"


def test_example_loss_matches_the_equation(align_uniform):
    """Against Wang & Isola's two terms written as plain loops over pairs."""
    gen = torch.Generator().manual_seed(0)
    method = build_method("align_uniform", MLP([5, 16, 4], generator=gen),
                          {"lambd": 0.7, "t": 3.0})
    x_a, x_b = torch.randn(2, 12, 5, generator=gen, dtype=torch.float64).unbind(0)
    method = method.double()
    loss, logs = method(x_a, x_b)
    with torch.no_grad():
        u_a, u_b = (h / h.norm(dim=1, keepdim=True) for h in (method.embed(x_a),
                                                               method.embed(x_b)))
    align = sum(float((u_a[i] - u_b[i]).square().sum()) for i in range(12)) / 12

    def log_potential(u):
        terms = [math.exp(-3.0 * float((u[i] - u[j]).square().sum()))
                 for i, j in itertools.combinations(range(12), 2)]
        return math.log(sum(terms) / len(terms))

    uniform = (log_potential(u_a) + log_potential(u_b)) / 2
    assert float(loss.detach()) == pytest.approx(align + 0.7 * uniform, rel=1e-10)
    assert float(logs["uniformity"]) == pytest.approx(uniform, rel=1e-10)
    s = torch.cat([u_a, u_b]).mean(0).norm()
    assert float(logs["center_norm"]) == pytest.approx(float(s), rel=1e-6)
    with pytest.raises(ValueError, match="t must be > 0"):
        build_method("align_uniform", MLP([5, 4]), {"t": -1.0})


def test_hash_covers_registered_code_and_nothing_else(align_uniform):
    cfg = platonic.PROFILES["quick"]
    # Built-in methods only: the hash is the one of (experiment, VERSION, config) as before.
    body = {"experiment": "platonic", "version": platonic.VERSION,
            "config": dataclasses.asdict(cfg)}
    old = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert config_hash("platonic", platonic.VERSION, cfg) == old.hexdigest()[:16]
    assert method_fingerprint("byol") == ""
    ours = dataclasses.replace(cfg, methods=("infonce", "align_uniform"))
    body["config"] = dataclasses.asdict(ours)
    plain = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert config_hash("platonic", platonic.VERSION, ours) != plain.hexdigest()[:16]
    assert len(method_fingerprint("align_uniform")) == 16


def test_a_sweep_cell_naming_a_registered_method_hashes_its_code(align_uniform):
    """A reader's own sweep keys its cells by ``method`` without declaring METHOD_FIELDS: the
    cell's hash still follows the method's code, so an edited method is trained again."""
    cell = {"method": "align_uniform", "seed": 0}
    body = {"experiment": "platonic", "version": platonic.VERSION, "config": cell}
    plain = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert config_hash("platonic", platonic.VERSION, cell) != plain.hexdigest()[:16]
    builtin = {"method": "byol", "seed": 0}
    body["config"] = builtin
    plain = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert config_hash("platonic", platonic.VERSION, builtin) == plain.hexdigest()[:16]


def test_registering_a_method_leaves_configs_that_do_not_train_it_alone():
    """Only fields called method / methods or listed in METHOD_FIELDS are read for method
    names: a method named like a string of a committed config does not make it stale."""
    from sithlib.experiments import identifiability_classes
    from sithlib.results import paper_status

    cfg = identifiability_classes.PROFILES["paper"]
    name = next(v for v in cfg.classes if v.isidentifier() and v == v.lower())
    before = config_hash("identifiability_classes", identifiability_classes.VERSION, cfg)
    status = paper_status("identifiability_classes")[0]
    register_method(_method(name))
    try:
        assert config_hash("identifiability_classes", identifiability_classes.VERSION,
                           cfg) == before
        assert paper_status("identifiability_classes")[0] == status
    finally:
        unregister_method(name)


def test_hash_follows_an_edited_helper_in_the_methods_file(tmp_path):
    """The fingerprint covers the whole file of the class, read when it is registered."""
    source = EXAMPLE.read_text().replace(
        "from sithlib.metrics import center_vector",
        "from sithlib.metrics import center_vector\n\nWEIGHT = 1.0")
    cfg = dataclasses.replace(platonic.PROFILES["quick"], methods=("infonce", "align_uniform"))
    hashes = []
    try:
        for weight in ("1.0", "2.0", "1.0"):
            plugin = tmp_path / f"edit_{len(hashes)}.py"
            plugin.write_text(source.replace("WEIGHT = 1.0", f"WEIGHT = {weight}").replace(
                "@register_method\n", "@register_method(replace=True)\n"))
            cli.import_plugins([str(plugin)])
            hashes.append(config_hash("platonic", platonic.VERSION, cfg))
            plugin.write_text("# edited after registration: not the code that runs\n")
            assert config_hash("platonic", platonic.VERSION, cfg) == hashes[-1]
    finally:
        unregister_method("align_uniform")
    assert hashes[0] != hashes[1] and hashes[0] == hashes[2]


def test_platonic_trains_a_registered_method(align_uniform):
    cfg = dataclasses.replace(
        platonic.PROFILES["quick"], methods=("infonce", "align_uniform"), steps=30,
        eval_every=15, n_eval=300, n_nonlinear=150, hidden=(16,), batch_size=64, n_samples=100,
        seeds=2, lrs=("align_uniform:1e-2",))
    assert platonic.method_lrs(cfg)["align_uniform"] == 1e-2
    out = platonic.run(cfg)
    table = platonic.summary_table(out["metrics"])
    assert list(table.index) == ["InfoNCE", "align + uniform", "raw x"]
    assert table.loc["align + uniform", "seeds"] == 2
    knn = platonic.similarity_matrix(out["metrics"])
    assert list(knn.index) == ["infonce", "align_uniform", "latent z", "raw x"]
    assert 0 <= knn.loc["infonce", "align_uniform"] <= 1
    assert set(out["curves"].model) == {"infonce", "align_uniform"}


def test_cli_imports_a_plugin(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SITH_PROGRESS", "0")
    (tmp_path / "needs_more.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for item, message in (("nope.py", "--import nope.py: no such file"),
                          ("no_such_module_xyz", "--import no_such_module_xyz: no module"),
                          ("needs_more", "it imports 'no_such_dependency_xyz', which is not")):
        assert cli.main(["run", "platonic", "--import", item]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    # A method nobody registered is an input error found before any work starts.
    assert cli.main(["run", "platonic", "--set", "methods=infonce,align_uniform"]) == 2
    out, err = capsys.readouterr()
    assert "running" not in out and "--import FILE" in err and "align_uniform" in err
    try:
        code = cli.main(["run", "platonic", "--import", str(EXAMPLE), "--out",
                         str(tmp_path / "out"), "--set", "methods=align_uniform",
                         "--set", "steps=10", "--set", "eval_every=5", "--set", "seeds=1",
                         "--set", "n_eval=200", "--set", "n_nonlinear=100"])
        assert code == 0, capsys.readouterr().err
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert config["config"]["methods"] == ["align_uniform"]
    finally:
        unregister_method("align_uniform")
