"""A newcomer's first screen: building the project, as `pip install -e .` and `pip install .` do, prints
no setuptools warning, and the built wheel carries the suites."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("setuptools")


@pytest.mark.parametrize("hook", ["build_editable", "build_wheel"])
def test_the_build_prints_no_setuptools_warning(tmp_path, hook):
    # the PEP 517 hook pip calls, in the project directory (as pip runs it), writing the wheel to tmp_path
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(tmp_path)!r}))"
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "Warning" not in text, text[-3000:]
    (wheel,) = tmp_path.glob("noprop_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    if hook == "build_wheel":
        assert "noprop_bench/resources/suites/fig3-small.toml" in names and "noprop_bench/resources/paper_table1.csv" in names
