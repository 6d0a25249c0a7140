"""No code path may unpickle, or torch.load, without the restrictions: a scan of the package's source."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "noprop_bench").rglob("*.py"))
RULES = {
    "unrestricted pickle": lambda line: re.search(r"\bpickle\.(load|loads|Unpickler)\b|\bnp\.load\(.*allow_pickle=True", line),
    "torch.load without weights_only=True": lambda line: "torch.load(" in line and "weights_only=True" not in line,
}


def offenders(files: dict[str, str], rule: str) -> list[str]:
    return [f"{name}:{i}" for name, text in files.items() if not name.endswith("safe_pickle.py")
            for i, line in enumerate(text.splitlines(), 1) if RULES[rule](line)]


@pytest.mark.parametrize("rule", RULES)
def test_the_package_has_no_unrestricted_loads(rule):
    files = {str(p.relative_to(ROOT)): p.read_text() for p in SOURCES}
    assert any(name.endswith("safe_pickle.py") for name in files) and len(files) > 20  # the scan sees the code
    assert offenders(files, rule) == [], f"{rule}: read through noprop_bench.data.safe_pickle.load or weights_only=True"


@pytest.mark.parametrize("rule,line", [
    ("unrestricted pickle", "batch = pickle.load(f)"),
    ("unrestricted pickle", "x = np.load(path, allow_pickle=True)"),
    ("torch.load without weights_only=True", "state = torch.load(path)"),
])
def test_the_scan_catches_an_offending_line(rule, line):
    assert offenders({"x.py": f"import torch\n{line}\n", "safe.py": "torch.load(p, weights_only=True)\n"}, rule) == ["x.py:2"]
