"""Project conventions: dependency files agree, notebooks carry no outputs, the TOC resolves."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}
NOTEBOOKS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _spec(requirement: str) -> str:
    return requirement.strip()[len(_name(requirement)):].replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {_name(r): _spec(r) for r in reqs}


def conda_requirements() -> dict[str, str]:
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    out = {}
    for dep in deps:
        for req in dep["pip"] if isinstance(dep, dict) else [dep]:
            if req.startswith("-") or _name(req) in ("python", "pip"):
                continue
            name = _name(req)
            out[CONDA_TO_PYPI.get(name, name)] = _spec(req)
    return out


def test_environment_yml_agrees_with_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_constraints_pin_every_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    missing = [n for n in pyproject_requirements() if n not in pins]
    assert not missing, f"constraints.txt lacks pins for {missing}; run `make constraints`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear outputs before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_has_hidden_parameters_cell_reading_profile(path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert "remove-cell" in params[0].metadata["tags"]
    assert 'os.environ.get("SITH_PROFILE", "auto")' in params[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


TRAINING = re.compile(r"\.backward\(|torch\.optim\b|\.zero_grad\(|\bopt(imi[sz]er)?\.step\(")


def test_no_training_loops_in_notebooks():
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not TRAINING.search(cell.source), (
                    f"{path.name}: training belongs in sithlib.experiments, not in a cell")


def test_training_pattern_catches_loops_not_words():
    assert TRAINING.search("loss.backward()") and TRAINING.search("torch.optim.Adam(p)")
    assert TRAINING.search("optimizer.step()") and TRAINING.search("opt.zero_grad()")
    assert not TRAINING.search('sweep(metrics, "optimizer", config)')


def test_toc_files_exist_and_template_is_not_listed():
    import importlib.util

    spec = importlib.util.spec_from_file_location("book", ROOT / "tools" / "book.py")
    book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book)
    files = book.toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    assert files[0] == "intro" and "chapters/_template" not in files
    for name in files:
        assert book.resolve(name).exists()


def test_every_experiment_names_an_existing_chapter():
    from sithlib.experiments import EXPERIMENTS

    for name, module in EXPERIMENTS.items():
        assert (ROOT / f"{module.CHAPTER}.ipynb").exists(), name
        assert set(module.PROFILES) == {"quick", "paper"}


def test_citations_resolve_in_references_bib():
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "references.bib").read_text()))
    sources = [p.read_text() for p in ROOT.glob("*.md")] + [p.read_text() for p in NOTEBOOKS]
    cited = set()
    for text in sources:
        for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", text):
            cited |= {k.strip() for k in group.split(",")}
    assert cited and cited <= keys, f"unknown citation keys: {sorted(cited - keys)}"
