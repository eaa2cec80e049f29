"""tools/book.py: a failing cell fails the build and its error is shown; parameters are hidden."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("book", ROOT / "tools" / "book.py")
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "auto"')
    params.metadata["tags"] = ["parameters", "remove-cell"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_failing_cell_is_reported(tmp_path):
    source = _notebook(tmp_path / "bad.ipynb", "x = 1", "1 / 0")
    error = book.execute(source, tmp_path / "out" / "bad.ipynb", "quick")
    assert error is not None and "ZeroDivisionError" in error and "division by zero" in error


def test_profile_is_injected_and_hidden(tmp_path):
    code = "import os\nprint(profile, os.environ['SITH_PROFILE'])"
    source = _notebook(tmp_path / "ok.ipynb", code)
    target = tmp_path / "out" / "ok.ipynb"
    assert book.execute(source, target, "quick") is None
    nb = nbformat.read(target, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert nb.cells[-1].outputs[0]["text"].strip() == "quick quick"


def test_toc_files_walks_parts_chapters_and_sections():
    toc = {"root": "intro", "parts": [{"chapters": [
        {"file": "a", "sections": [{"file": "a1"}]}, {"file": "b"}]}]}
    assert book.toc_files(toc) == ["intro", "a", "a1", "b"]


def test_files_a_page_includes_are_staged_with_the_book():
    """The site builds from a staging copy: a ``literalinclude`` target must exist and lie in
    a folder that tools/book.py copies there."""
    import re

    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [ROOT / f"{name}.md" for name in book.toc_files(toc) if (ROOT / f"{name}.md").exists()]
    found = 0
    for page in pages:
        for target in re.findall(r"```\{literalinclude\}\s+(\S+)", page.read_text()):
            path = (page.parent / target).resolve()
            assert path.is_file(), f"{page.name} includes {target}, which does not exist"
            assert path.relative_to(ROOT).parts[0] in book.STAGED_DIRS, (
                f"{page.name} includes {target}, outside the staged folders {book.STAGED_DIRS}")
            found += 1
    assert found >= 1  # the Reproduce page's example method


def test_paper_book_smoke_runs_a_chapter_on_paper_shaped_results(monkeypatch, capsys):
    """tools/paper_book_smoke.py: a paper config shrunk to a few steps, filed as the paper
    result in a scratch folder, and its chapter executed against it with profile `cached`."""
    # The tool points these at its scratch folder; monkeypatch puts them back afterwards.
    for name in ("SITH_RESULTS_DIR", "SITH_CACHE_DIR", "SITH_PROGRESS"):
        monkeypatch.setenv(name, "")
    path = ROOT / "tools" / "paper_book_smoke.py"
    smoke_spec = importlib.util.spec_from_file_location("paper_book_smoke", path)
    smoke = importlib.util.module_from_spec(smoke_spec)
    smoke_spec.loader.exec_module(smoke)
    assert smoke.main(["platonic"]) == 0
    out = capsys.readouterr().out
    assert "platonic" in out and "ok  chapters/01_sith/05_platonic" in out
    assert "every chapter ran on paper-shaped results" in out


def test_status_table_lists_every_chapter_once_in_reading_order():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = [n for n in book.toc_files(toc) if n.startswith("chapters/0")]
    table = book.status_table("quick", chapters)
    links = [line.split("](")[1].split(")")[0] for line in table.splitlines() if "](" in line]
    assert links == [f"{c}.ipynb" for c in chapters]
    image = next(line for line in table.splitlines() if "02_image_dgp" in line)
    assert "computed in the build" in image  # a chapter without an experiment
    assert "**paper**" not in table  # the quick profile shows quick numbers everywhere
    assert book.chapter_title(ROOT / "chapters/00_foundations/01_vmf.ipynb") \
        == "The von Mises–Fisher conditional"


def test_glued_markdown_is_parsed_as_myst():
    """`{glue:md}` parses commonmark unless told `:myst`, and then shows `$...$` and
    `{cite}` as raw text: every glued Markdown in the chapters asks for MyST."""
    import re

    for path in sorted((ROOT / "chapters").glob("*/*.ipynb")):
        text = "".join("".join(c.source) for c in nbformat.read(path, as_version=4).cells
                       if c.cell_type == "markdown")
        plain = [k for k in re.findall(r"\{glue:md\}`([^`]*)`", text) if not k.endswith(":myst")]
        assert not plain, f"{path.name}: {{glue:md}} without :myst for {plain}"


def test_table_fit_checks_every_page_and_nothing_else(tmp_path):
    """tools/table_fit.py (run by hand, with a browser) loads the site's pages, not its
    assets, source copies or indexes, at the width asked for."""
    spec = importlib.util.spec_from_file_location("table_fit", ROOT / "tools" / "table_fit.py")
    table_fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table_fit)
    for page in ("intro.html", "chapters/01_sith/05_platonic.html", "_static/x.html",
                 "_sources/intro.html", "genindex.html", "search.html", "_table_fit.html"):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("<html></html>")
    assert table_fit.pages(tmp_path) == ["chapters/01_sith/05_platonic.html", "intro.html"]
    check = table_fit.check_page(tmp_path, 1200)
    assert ('const pages = ["chapters/01_sith/05_platonic.html", "intro.html"], width = 1200'
            in check)
