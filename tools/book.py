"""Build the website: execute every chapter in _toc.yml with papermill, then jupyter-book 1.x.

Usage: python tools/book.py [--profile auto|cached|quick|paper]

The chapters are executed into a staging copy of the book (``_build/staging``), never in place,
so the committed notebooks stay without outputs. A failing cell fails the command and its error
is printed. The site is built with ``-W -n --keep-going`` (any warning fails) into
``_build/html``, and the pages are scanned for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
STAGING = BUILD / "staging"
# Folders the pages use as they are: the site's CSS, and the example files a page includes.
STAGED_DIRS = ("_static", "examples")
PAGES = ("_config.yml", "_toc.yml", "references.bib")
FAIL_MARKERS = ("Traceback (most recent call last)", "PapermillExecutionError")


def toc_files(toc: dict) -> list[str]:
    """Every file named in a jb-book _toc.yml, in reading order."""
    found = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                found.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return found


def resolve(name: str) -> Path:
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / f"{name}{suffix}"
        if path.is_file():
            return path
    raise SystemExit(f"_toc.yml lists {name!r} but no {name}.ipynb or {name}.md exists")


def execute(source: Path, target: Path, profile: str) -> str | None:
    """Run one chapter; return None on success or the failing cell's error as text."""
    target.parent.mkdir(parents=True, exist_ok=True)
    env_profile = os.environ.get("SITH_PROFILE")
    os.environ["SITH_PROFILE"] = profile
    os.environ["SITH_PROGRESS"] = "0"  # progress bars belong in terminals, not on the website
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters={"profile": profile}, kernel_name="python3",
            cwd=str(source.parent), progress_bar=False, log_output=False,
            # The kernel's own log (an unencrypted-TCP notice, a KeyboardInterrupt from its
            # shutdown) is not about the chapter; a failing cell still surfaces above.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except papermill.PapermillExecutionError as err:
        return f"cell {err.exec_count}: {err.ename}: {err.evalue}\n" + "".join(err.traceback)
    finally:
        if env_profile is None:
            os.environ.pop("SITH_PROFILE", None)
        else:
            os.environ["SITH_PROFILE"] = env_profile
    # Papermill's injected-parameters cell is plumbing, not content: hide it like `parameters`.
    nb = nbformat.read(target, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out['ename']}: {out['evalue']}"
    nbformat.write(nb, target)
    return None


def chapter_title(source: Path) -> str:
    """The first level-1 heading of a notebook."""
    for cell in nbformat.read(source, as_version=4).cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else ():
            if line.startswith("# "):
                return line[2:].strip()
    return source.stem


def status_table(profile: str, chapters: list[str]) -> str:
    """One row per chapter and experiment, in reading order; a chapter without an experiment
    computes its numbers while the book is built."""
    from sithlib.results import status_rows

    by_chapter: dict[str, list[dict]] = {}
    for row in status_rows():
        by_chapter.setdefault(row["chapter"], []).append(row)
    lines = ["| chapter | experiment | numbers shown | paper result | commit | device |",
             "|---|---|---|---|---|---|"]
    for chapter in chapters:
        link = f"[{chapter_title(resolve(chapter))}]({chapter}.ipynb)"
        rows = by_chapter.get(chapter)
        if not rows:
            lines.append(f"| {link} | - | computed in the build | - | - | - |")
        for k, row in enumerate(rows or ()):
            grade = "quick" if profile == "quick" else row["grade"]
            if profile == "cached" and row["grade"] != "paper":
                grade = "missing"
            device = row["device"].replace("(R)", "").replace("(TM)", "") or "-"
            lines.append(f"| {link if k == 0 else ''} | `{row['experiment']}` | **{grade}** | "
                         f"{row['paper_result']} | {(row['commit'] or '-')[:7]} | {device} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("PROFILE", "auto"),
                        choices=("auto", "cached", "quick", "paper"))
    args = parser.parse_args()

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    if STAGING.exists():
        shutil.rmtree(STAGING)
    STAGING.mkdir(parents=True)
    for name in PAGES:
        shutil.copy2(ROOT / name, STAGING / name)
    for folder in STAGED_DIRS:
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, STAGING / folder)

    failures = {}
    for name in toc_files(toc):
        source = resolve(name)
        target = STAGING / source.relative_to(ROOT)
        if source.suffix != ".ipynb":
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            continue
        start = time.perf_counter()
        error = execute(source, target, args.profile)
        took = time.perf_counter() - start
        print(f"{'FAILED' if error else 'ok':>6}  {name}  ({took:.1f} s, profile {args.profile})",
              flush=True)
        if error:
            failures[name] = error
    chapters = [n for n in toc_files(toc) if n.startswith("chapters/")
                and not n.startswith("chapters/99_appendix")]
    (STAGING / "_status.md").write_text(status_table(args.profile, chapters))
    if failures:
        for name, error in failures.items():
            print(f"\n===== {name} failed =====\n{error}", file=sys.stderr)
        return 1

    build = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(STAGING), "--builder",
         "html", "-W", "-n", "--keep-going"], cwd=ROOT,
    )
    if build.returncode != 0:
        print("jupyter-book build failed (warnings count as errors: see above)", file=sys.stderr)
        return build.returncode
    html = BUILD / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(STAGING / "_build" / "html", html)
    bad = [str(p.relative_to(html)) for p in html.rglob("*.html")
           if any(m in p.read_text(errors="replace") for m in FAIL_MARKERS)]
    if bad:
        print(f"pages with a traceback: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"site: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
