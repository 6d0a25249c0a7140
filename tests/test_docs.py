"""The documentation covers the current code: every CLI option, results and diagnostics column, diagnostic,
suite key and config key is named in the docs; the site builds strictly; code, suites, tests and docs carry
no issue numbers or development history; the README stays a front page."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from noprop_bench import cli
from noprop_bench.measure.diagnostics import DIAG_COLUMNS
from noprop_bench.run.results import COLUMNS
from noprop_bench.run.suites import SUITE_KEYS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _doc(name: str) -> str:
    return (DOCS / name).read_text()


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def test_every_cli_option_is_documented():
    text = _doc("cli.md")
    missing = sorted(o for o in _options(cli.build_parser()) if f"`{o}" not in text)
    assert not missing, f"docs/cli.md does not describe {missing}"


@pytest.mark.parametrize("columns, page", [(COLUMNS, "outputs.md"), (DIAG_COLUMNS, "outputs.md"),
                                           (sorted(SUITE_KEYS), "suites.md")])
def test_every_column_and_suite_key_is_documented(columns, page):
    text = _doc(page)
    missing = [c for c in columns if f"`{c}`" not in text]
    assert not missing, f"docs/{page} does not describe {missing}"


def test_every_diagnostic_the_code_writes_is_documented():
    written = set()
    for path in (ROOT / "noprop_bench").rglob("*.py"):
        written |= set(re.findall(r'"diagnostic":\s*f?"([a-z_]+)', path.read_text()))
    # block-parallel NoProp-DT names its rows f"worker_{key}" and f"parent_{key}" from its timing keys
    if {"worker_", "parent_"} <= written:
        written -= {"worker_", "parent_"}
        written |= {f"worker_{k}" for k in ("busy_s", "cpu_s", "wait_s", "steps")} | {"parent_wall_s", "parent_cpu_s"}
    assert {"pred_classes", "block_acc", "gamma"} <= written  # the scan finds them
    text = _doc("outputs.md")
    missing = sorted(d for d in written if f"`{d}`" not in text)
    assert not missing, f"docs/outputs.md does not describe the diagnostics {missing}"


def test_every_config_key_of_every_method_is_documented():
    from noprop_bench.methods import BUILTIN
    text = _doc("methods.md") + _doc("choices.md")
    missing = {}
    for name, cls in BUILTIN.items():
        absent = sorted(k for k in cls.config_keys() if f"`{k}`" not in text)
        if absent:
            missing[name] = absent
    assert not missing, f"docs/methods.md and docs/choices.md do not describe {missing}"


HISTORY = re.compile("|".join([r"\b[Ii]ssue #?\d+", r"\bthe default " + "then" + r"\b", r"\bwhen I " + "stopped" + r"\b",
                                r"\bno longer the " + "default" + r"\b"]))


def test_no_issue_numbers_or_development_history_in_code_suites_tests_or_docs():
    places = [*(ROOT / "noprop_bench").rglob("*.py"), *(ROOT / "noprop_bench").rglob("*.toml"),
              *(ROOT / "tests").rglob("*.py"), *DOCS.rglob("*.md"), ROOT / "README.md",
              *(ROOT / "examples").rglob("*.py"), *(ROOT / "bin").iterdir()]
    hits = []
    for path in places:
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_the_history_scan_catches_what_it_names(tmp_path):
    n = 7  # built here so that this file holds no issue number of its own
    assert HISTORY.search(f"# Learning pace (issue {n}): every method") and HISTORY.search(f"Issue {n} asked for it")
    assert not HISTORY.search("a tissue 3 sample") and not HISTORY.search("see the issues tracker")


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_table = text[text.index("|"):].split("\n\n")[0]
    assert "paper" in first_table.splitlines()[0].lower() and "status" in first_table.splitlines()[0].lower()
    for command in ("bin/bench", "bin/test"):
        assert f"\n{command}" in text
    for link in re.findall(r"\]\(((?!https?:)[^)#]+)", text):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


@pytest.mark.slow  # builds the whole site: seconds to tens of seconds
def test_the_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "choices" / "index.html").is_file()
