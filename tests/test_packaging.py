"""A plain, non-editable `pip install .` into a fresh prefix works from any directory: only `noprop_bench`
lands at the top level, the console script runs, reports and checks, and nothing is read from or written to
the install location."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("setuptools")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built from a copy of its sources (the build writes beside them) and installed, without
    its dependencies (they come from the test environment) and without the network, into a new folder."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "noprop_bench", src / "noprop_bench", ignore=shutil.ignore_patterns("__pycache__"))
    target = base / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return target


def _cli(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOPROP_BENCH_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)  # ahead of the test environment's editable install
    return subprocess.run([sys.executable, str(installed / "bin" / "noprop-bench"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # builds and installs the package: tens of seconds
def test_a_plain_install_runs_reports_and_checks_from_another_directory(installed, tmp_path):
    top = {p.name for p in installed.iterdir()}
    assert {n for n in top if not n.endswith(".dist-info")} == {"noprop_bench", "bin"}, top
    resources = installed / "noprop_bench" / "resources"
    assert (resources / "suites" / "fig3-small.toml").is_file() and (resources / "paper_table1.csv").is_file()
    assert (resources / "thresholds.csv").is_file()
    before = sorted(str(p.relative_to(installed)) for p in installed.rglob("*") if "__pycache__" not in p.parts)

    work = tmp_path / "elsewhere"
    work.mkdir()
    version = _cli(installed, work, "--version")
    assert version.returncode == 0 and version.stdout.startswith("noprop-bench "), version.stderr
    listed = _cli(installed, work, "list")
    assert listed.returncode == 0 and "paper-table1" in listed.stdout

    (work / "gate.toml").write_text(
        'description = "back-prop on a small digits subset"\nmethods = ["backprop"]\ndatasets = ["digits"]\n'
        'embeddings = ["one-hot"]\nseeds = [0]\ninference_runs = 1\ntrain_limit = 200\ntest_limit = 100\n'
        '[config]\nepochs = 1\n')
    (work / "floors.csv").write_text("suite,method,dataset,embedding,min_test_acc\ngate,backprop,digits,one-hot,1\n")
    run = _cli(installed, work, "run", "--suite", "gate.toml", "--no-progress", "--no-memory-probe", "--out", "r")
    assert run.returncode == 0, run.stderr[-3000:]
    df = pd.read_csv(work / "r" / "results.csv")
    assert set(df["method"]) == {"backprop"} and len(df) == 1
    (work / "r" / "report" / "report.md").unlink()
    report = _cli(installed, work, "report", "r")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| backprop |" in (work / "r" / "report" / "report.md").read_text()  # report works from the installed package
    check = _cli(installed, work, "check", "r", "--thresholds", "floors.csv")
    assert check.returncode == 0 and "backprop" in check.stdout, check.stdout + check.stderr
    packaged = _cli(installed, work, "check", "r")  # the packaged floors have no row for this suite
    assert packaged.returncode == 2 and "no cell could be checked" in packaged.stderr, packaged.stderr
    assert packaged.stderr.count("\n") == 1 and "Traceback" not in packaged.stderr

    # a run without --out writes under the working directory, never under the install
    default = _cli(installed, work, "run", "--suite", "quick", "--datasets", "digits", "--methods", "backprop",
                   "--epochs", "1", "--train-limit", "200", "--test-limit", "100", "--no-progress",
                   "--no-memory-probe", "--no-report")
    assert default.returncode == 0, default.stderr[-3000:]
    assert list((work / "results" / "runs").glob("quick-*/results.csv"))
    after = sorted(str(p.relative_to(installed)) for p in installed.rglob("*") if "__pycache__" not in p.parts)
    assert after == before
