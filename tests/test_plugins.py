"""Methods from outside the tree, registered through the `noprop_bench.methods` entry-point group.

Each test builds an installed distribution the way pip leaves one (a *.dist-info folder with METADATA and
entry_points.txt next to the module) in a temporary folder on the path, so the real entry-point
mechanism of importlib.metadata finds it; nothing is installed into the project's environment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from noprop_bench.methods import BUILTIN
from noprop_bench.methods.plugins import contract_problem, load_plugins

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "local_ce" / "noprop_bench_local_ce.py"


def fake_install(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str | Path]) -> Path:
    """A distribution as pip installs it: modules plus NAME-VERSION.dist-info with its entry points."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[noprop_bench.methods]\n{lines}\n")
    for name, source in modules.items():
        if isinstance(source, Path):
            shutil.copy(source, site / f"{name}.py")
        else:
            (site / f"{name}.py").write_text(source)
    return site


def bench(site: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "NOPROP_BENCH_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


TINY = ["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]


@pytest.mark.slow  # runs the CLI in a subprocess: seconds
def test_an_outside_method_runs_reports_and_is_checked_like_a_built_in(tmp_path):
    site = fake_install(tmp_path / "site", "noprop-bench-local-ce", {"local-ce": "noprop_bench_local_ce:LocalCE"},
                        {"noprop_bench_local_ce": EXAMPLE})
    listed = bench(site, "list")
    assert "local-ce" in listed.stdout and "[plugin from noprop-bench-local-ce: noprop_bench_local_ce:LocalCE]" in listed.stdout
    out = tmp_path / "run"
    ran = bench(site, *TINY, "--methods", "local-ce,noprop-dt", "--set", "noprop-dt.timesteps=2", "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"local-ce", "noprop-dt"}
    local = df[df["method"] == "local-ce"]
    assert (local["inference_steps"] == 3).all() and (local["solver"] == "forward").all()
    assert local["test_acc"].iloc[-1] > 10  # 10 classes: it learned something in one epoch
    diag = pd.read_csv(out / "diagnostics.csv")
    assert set(diag[diag["method"] == "local-ce"]["block"].dropna()) == {1, 2, 3}
    assert (out / "report" / "report.md").read_text().count("| local-ce |") >= 2  # Table 1 and Table 2
    # an unscaled run (digits is smaller than quick's limits), so check gates the method's cell
    gated = tmp_path / "gated"
    assert bench(site, "--suite", "quick", "--datasets", "digits", "--methods", "local-ce", "--no-progress",
                 "--no-report", "--out", str(gated)).returncode == 0
    thresholds = tmp_path / "thresholds.csv"
    thresholds.write_text("suite,method,dataset,embedding,min_test_acc\nquick,local-ce,digits,one-hot,99.9\n")
    checked = bench(site, "check", str(gated), "--thresholds", str(thresholds))
    assert checked.returncode == 1 and "FAIL  quick: local-ce/digits/one-hot/seed0" in checked.stdout


BROKEN = {
    "import-fails": ("noprop_bench_bad_import:Method", "raise ImportError('needs a package that is not installed')\n",
                     "failed to import (ImportError: needs a package that is not installed)"),
    "not-a-method": ("noprop_bench_not_a_method:thing", "thing = 42\n",
                     "does not implement the method interface: it is 42, not a subclass of noprop_bench.methods.base.Method"),
    "no-loss": ("noprop_bench_no_loss:NoLoss",
                "from noprop_bench.methods.base import Method\n"
                "class NoLoss(Method):\n    name = 'no-loss'\n    default_solver = 'x'\n"
                "    def predict(self, x, steps=None, solver=None):\n        return x\n",
                "does not implement the method interface: it does not implement loss()"),
    "wrong-name": ("noprop_bench_wrong_name:W",
                   "from noprop_bench.methods.base import Method\n"
                   "class W(Method):\n    name = 'other'\n", "its class attribute name is 'other'"),
    "backprop": ("noprop_bench_shadow:Backprop", "from noprop_bench.methods.backprop import Backprop\n",
                 "the name 'backprop' is already taken"),
}


@pytest.fixture
def broken_site(tmp_path):
    entry = {name: target for name, (target, _, _) in BROKEN.items()}
    modules = {target.split(":")[0]: source for target, source, _ in BROKEN.values()}
    return fake_install(tmp_path / "site", "noprop-bench-broken", entry, modules)


def test_each_broken_entry_point_is_one_line_naming_its_distribution(broken_site, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_site))
    found, broken = load_plugins(BUILTIN)
    assert found == {}
    assert set(broken) == set(BROKEN)
    for name, (_, _, reason) in BROKEN.items():
        assert broken[name].startswith(f"method '{name}' from distribution noprop-bench-broken 0.1.0")
        assert reason in broken[name] and "\n" not in broken[name]


@pytest.mark.slow  # runs the CLI in a subprocess: seconds
def test_broken_plugins_leave_the_built_in_methods_running(broken_site, tmp_path):
    ran = bench(broken_site, *TINY, "--methods", "noprop-dt", "--set", "timesteps=2", "--out", str(tmp_path / "r"))
    assert ran.returncode == 0, ran.stderr
    assert "warning: method 'import-fails' from distribution noprop-bench-broken 0.1.0" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert set(pd.read_csv(tmp_path / "r" / "results.csv")["method"]) == {"noprop-dt"}


def test_asking_for_a_broken_plugin_is_a_one_line_error_exit_2(broken_site, tmp_path):
    ran = bench(broken_site, *TINY, "--methods", "import-fails", "--out", str(tmp_path / "r"))
    assert ran.returncode == 2
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("error: method 'import-fails' from distribution noprop-bench-broken 0.1.0")
    assert "Traceback" not in ran.stderr and not (tmp_path / "r").exists()


def test_the_example_plugin_meets_the_contract():
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        from noprop_bench_local_ce import LocalCE
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    assert contract_problem(LocalCE, "local-ce") is None
    assert "not the entry-point name" in contract_problem(LocalCE, "local")
