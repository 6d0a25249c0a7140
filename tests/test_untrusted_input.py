"""Guards for issue 6: no code path may unpickle or torch.load without the restrictions."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("bench", "methods") for p in (ROOT / d).rglob("*.py")] + [ROOT / "run_bench.py"]


def test_only_the_restricted_unpickler_reads_pickles():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES if p.name != "safe_pickle.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\bpickle\.(load|loads|Unpickler)\b|\bnp\.load\(.*allow_pickle=True", line)]
    assert offenders == [], "read pickles through bench.safe_pickle.load"


def test_every_torch_load_is_weights_only():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "torch.load(" in line and "weights_only=True" not in line]
    assert offenders == [], "load checkpoints and caches with torch.load(..., weights_only=True)"


def test_the_guards_see_the_code():
    assert any(p.name == "safe_pickle.py" for p in SOURCES) and len(SOURCES) > 10
