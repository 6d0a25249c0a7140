"""A directory written by several invocations: the ledger ties each cell to the invocation it finished in,
and the report lists them with their machines and warns when the machines differ."""
import json

from conftest import TINY, run
from noprop_bench.report import sittings
from noprop_bench.run.results import read_ledger

ARGV = ["--suite", "quick", *TINY, "--train-limit", "150", "--set", "timesteps=2", "--eval-points", "2",
        "--device", "cpu"]


def test_each_cell_is_listed_under_the_invocation_it_finished_in(tmp_path):
    out = tmp_path / "r"
    assert run([*ARGV, "--methods", "noprop-dt", "--out", out, "--no-report"]) == 0
    assert run([*ARGV, "--out", out]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    first, second = meta["previous"][0]["started"], meta["started"]
    assert first != second
    ledger = {e["label"].split("/")[0]: e["sitting"] for e in read_ledger(out / "cells.jsonl").values()}
    assert ledger == {"noprop-dt": first, "backprop": second}
    report = (out / "report" / "report.md").read_text()
    listed = {line.split(",")[0].strip(" -"): line.rsplit(": ", 1)[1] for line in report.splitlines()
              if line.startswith("  - 20")}
    assert set(listed) == {first, second}
    assert listed[first].startswith("noprop-dt/") and listed[second].startswith("backprop/")
    assert "different machines" not in report and "(the last invocation)" in report

    meta["previous"][0]["machine"]["cpu"]["isa"] = ["avx2", "avx512f", "not-this-machine"]
    (out / "metadata.json").write_text(json.dumps(meta))
    assert run(["report", out]) == 0
    assert "**The cells ran on 2 different machines**" in (out / "report" / "report.md").read_text()


def test_one_invocation_adds_nothing_and_cells_of_an_unknown_sitting_say_so():
    machine = {"label": "CPU, 2 cores", "cpu": {"isa": ["avx2"]}, "torch": {"version": "2", "threads": 2}}
    one = {"started": "a", "machine": machine, "git": {"revision": "0123456789"}}
    assert sittings.lines(one, {}, {"c1"}) == []
    two = {**one, "started": "b", "previous": [one]}
    ledger = {"c1": {"label": "m/d/e/seed0", "error": None, "sitting": None},
              "c2": {"label": "n/d/e/seed0", "error": None, "sitting": "b"},
              "c3": {"label": "gone/d/e/seed0", "error": None, "sitting": "b"},
              "c4": {"label": "o/d/e/seed0", "error": None, "sitting": "z"}}  # metadata.json lost that one
    text = "\n".join(sittings.lines(two, ledger, {"c1", "c2", "c4"}))
    assert "  - a, revision 0123456, CPU, 2 cores (avx2), torch 2, 2 threads: none" in text
    assert "  - b, revision 0123456, CPU, 2 cores (avx2), torch 2, 2 threads: n/d/e/seed0" in text
    assert "not recorded (the ledger names no sitting): m/d/e/seed0" in text
    assert "  - z, not in metadata.json (its machine is unknown): o/d/e/seed0" in text
    assert "gone" not in text and "different machines" not in text


def test_a_cell_from_an_invocation_metadata_does_not_hold_is_listed_even_with_one_invocation():
    one = {"started": "a", "machine": {"label": "CPU"}, "git": {"revision": "0123456789"}}
    ledger = {"c1": {"label": "m/d/e/seed0", "error": None, "sitting": "a"},
              "c2": {"label": "n/d/e/seed0", "error": None, "sitting": "z"}}
    text = "\n".join(sittings.lines(one, ledger, {"c1", "c2"}))
    assert "  - a, revision 0123456, CPU, torch ?, ? threads: m/d/e/seed0" in text
    assert "  - z, not in metadata.json (its machine is unknown): n/d/e/seed0" in text
    assert sittings.lines(one, {"c1": ledger["c1"]}, {"c1"}) == []  # all in the one invocation: nothing
