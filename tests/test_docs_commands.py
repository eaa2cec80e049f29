"""Every ``python -m sithlib`` command that the README, the Reproduce page and the chapters
print for readers to copy must still work: it parses, and it names an experiment, a profile,
config fields, values, benchmarks and files that exist. The commands are read from the pages'
text, so renaming a field or an experiment fails here instead of on a reader's machine."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from sithlib import results
from sithlib.cli import build_parser, import_plugins
from sithlib.experiments import get_experiment
from sithlib.methods import available_methods, unregister_method

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "reproduce.md", "intro.md")
START = re.compile(r"-m sithlib ")
PLACEHOLDER = re.compile(r"^([A-Z][A-Z_]+|\.\.\.)$")  # NAME, EXPERIMENT, ...: slots for the reader


def texts():
    """(where, text) for each page and for every cell of every chapter notebook."""
    for name in PAGES:
        yield name, (ROOT / name).read_text()
    for path in sorted((ROOT / "chapters").rglob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            yield f"{path.relative_to(ROOT)} cell {i}", "".join(cell["source"])


def command_at(text: str, start: int) -> str:
    """The command that begins at ``start``: inside an inline code span it runs to the closing
    backtick (the span may wrap onto the next line); in a code block, to the end of the line,
    following backslash continuations."""
    line_start = text.rfind("\n", 0, start) + 1
    inline = text.count("`", line_start, start) % 2 == 1
    if inline:
        end = text.find("`", start)
        return text[start:end].replace("\n", " ")
    out, i = [], start
    while True:
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        line = text[i:end]
        if not line.rstrip().endswith("\\"):
            out.append(line.split(" #")[0])  # a shell comment after the command
            return " ".join(out)
        out.append(line.rstrip()[:-1])
        i = end + 1


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for where, text in texts():
        for match in START.finditer(text):
            argv = shlex.split(command_at(text, match.end()))
            if argv and not any(PLACEHOLDER.match(a) for a in argv):
                found.append((where, argv))
    return found


COMMANDS = commands()


def test_the_pages_print_commands_of_every_kind():
    kinds = {argv[0] for _, argv in COMMANDS}
    assert {"run", "bench", "verify", "list"} <= kinds
    # The sweeps the chapters invite readers to extend with --set are among them.
    assert sum("--set" in argv for _, argv in COMMANDS) >= 5


@pytest.mark.parametrize(("where", "argv"), COMMANDS,
                         ids=[f"{w}: {' '.join(a)[:60]}" for w, a in COMMANDS])
def test_printed_command_is_valid(where, argv):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `python -m sithlib {' '.join(argv)}` does not parse")
    if args.command == "bench":
        found = {p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py")}
        assert set(args.names) <= found, f"{where}: unknown benchmark in {args.names}"
    if args.command != "run":
        return
    assert args.device in (None, "cpu") or args.device.startswith("cuda"), where
    assert bool(args.experiment) != args.all, f"{where}: name one experiment or --all"
    if args.all:
        results.check_profile(args.profile, results.RUN_PROFILES)
        return
    before = set(available_methods())
    try:
        import_plugins([str(ROOT / p) if p.endswith(".py") else p for p in args.imports or ()])
        # Unknown fields, malformed values and settings the config rejects all raise here.
        results.resolve_config(get_experiment(args.experiment), args.profile,
                               results.parse_overrides(args.set))
    finally:
        for name in set(available_methods()) - before:
            unregister_method(name)
