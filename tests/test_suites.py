"""Suites as data: the paper suites expand to the paper's cells with Table 3 settings; a cell's plan
(evaluation points, settings, cost); departures from the paper's protocol and from the suite as written
say so in every row; --dry-run runs and writes nothing."""
import json

import pandas as pd
import pytest

from noprop_bench import paths
from noprop_bench import cli as run_bench
from noprop_bench.data import DATASETS, load_data
from noprop_bench.run.plan import Cell, departures, make_plan
from noprop_bench.run.suites import available_suites, expand, load_suite
from noprop_bench.methods import METHODS, get_method

TINY = ["--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]


def run(argv):
    return run_bench.main([str(a) for a in argv])


@pytest.mark.parametrize("name", sorted(available_suites()))
def test_every_suite_expands(name):
    cells = expand(name, load_suite(name))
    assert cells and len({c.id for c in cells}) == len(cells)


def test_paper_table1_is_every_table1_row_with_table3_settings():
    cells = expand("paper-table1", load_suite("paper-table1"))
    paper = pd.read_csv(paths.resource("paper_table1.csv"), comment="#")
    ours = {(c.method, c.embedding, c.dataset) for c in cells}
    assert ours == set(map(tuple, paper[["method", "embedding", "dataset"]].drop_duplicates().values))
    assert len(cells) == len(ours) * 3  # three seeds each
    for c in cells:
        assert c.config == get_method(c.method).default_config(c.dataset, embedding=c.embedding)
        assert c.inference_runs == 5 and c.train_accuracy and c.seed in (0, 1, 2)
        assert c.overrides == () and departures(c) == () and c.config_label() == ""
    table3 = {(c.method, c.dataset): (c.config.epochs, c.config.timesteps, c.config.optimizer) for c in cells}
    assert table3[("noprop-dt", "mnist")] == (100, 10, "adamw")
    assert table3[("adjoint", "cifar10")] == (4, 1000, "adamw")
    assert table3[("noprop-ct", "cifar100")] == (1000, 1000, "adam")
    assert table3[("noprop-fm", "cifar10")] == (500, 1000, "adam")


def test_dry_run_lists_the_cells_and_their_cost_and_writes_nothing(tmp_path, capsys):
    assert run(["--suite", "paper-table1", "--dry-run", "--out", tmp_path / "x"]) == 0
    out = capsys.readouterr().out
    assert "129 cell(s), 129 to run" in out  # 117 of v1's Table 1 and v2's 12 Tiny ImageNet cells
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.split()[:2] == ["method", "dataset"])
    table = [dict(zip(header, line.split())) for line in lines if len(line.split()) == len(header)][1:]
    ct = [r for r in table if (r["method"], r["dataset"]) == ("noprop-ct", "cifar100")]
    assert len(ct) == 9 and all((r["precision"], r["epochs"], r["batch"], r["optim"], r["lr"], r["wd"], r["T"],
                                 r["runs"], r["protocol"]) == ("fp32", "1000", "128", "adam", "0.001", "0.001", "1000",
                                                               "5", "paper") for r in ct)
    assert not (tmp_path / "x").exists()


def test_cost_counts_steps_points_and_evaluations():
    cfg = METHODS["noprop-ct"].default_config("mnist", epochs=3)
    cell = Cell("s", "noprop-ct", "mnist", 0, cfg, train_limit=1000, test_limit=100, inference_runs=2,
                inference_steps=(10,), solvers=("rk4",), eval_points=4, train_accuracy=True)
    cost = make_plan(cell).cost()
    assert cost["train_steps"] == 3 * 8 and cost["eval_points"] == 4
    assert cost["train_nfe"] == 3 * 1000  # one CT network evaluation per training image
    per_eval = 1000 * 2  # 1000 ancestral steps x 2 runs
    assert cost["eval_nfe"] == 100 * (3 * per_eval + per_eval + 10 * 4 * 2) + 1000 * per_eval


def test_evaluation_points_every_epoch_or_evenly_spaced():
    cfg = METHODS["noprop-dt"].default_config("digits", epochs=3)
    per_epoch = 10 * 2  # T stages x ceil(200 / 128) batches
    plan = make_plan(Cell("s", "noprop-dt", "digits", 0, cfg), 200)
    assert plan.points == (20, 40, 60) and plan.steps_per_epoch == per_epoch
    assert make_plan(Cell("s", "noprop-dt", "digits", 0, cfg, eval_points=4), 200).points == (15, 30, 45, 60)
    assert make_plan(Cell("s", "noprop-dt", "digits", 0, cfg, eval_points=500), 200).points == tuple(range(1, 3 * per_epoch + 1))
    assert [plan.epoch_at(p) for p in (15, 20, 30)] == [0.75, 1, 1.5]


def test_sweep_settings_skip_the_default_and_rules_a_method_lacks():
    cfg = METHODS["noprop-fm"].default_config("mnist", timesteps=20)
    cell = Cell("s", "noprop-fm", "mnist", 0, cfg, inference_steps=(2, 20), solvers=("ancestral", "euler", "rk4"))
    assert make_plan(cell).final_settings == ((2, "euler"), (2, "rk4"), (20, "rk4"))
    assert make_plan(cell).settings_at(5) == [("default", (20, "euler"))]  # not the last point: no sweep
    dt = Cell("s", "noprop-dt", "mnist", 0, METHODS["noprop-dt"].default_config("mnist"), inference_steps=(2,))
    assert make_plan(dt).final_settings == ()


def test_exclude_and_bad_suite_values_are_clear_errors():
    suite = load_suite("ci") | {"methods": ["noprop-dt", "backprop"], "exclude": [{"method": "backprop"}]}
    assert {c.method for c in expand("x", suite)} == {"noprop-dt"}
    with pytest.raises(ValueError, match="bad exclude entry .*'colour'"):
        expand("x", suite | {"exclude": [{"colour": "red"}]})
    with pytest.raises(ValueError, match="every cell is excluded"):
        expand("x", suite | {"exclude": [{"dataset": "mnist"}]})
    with pytest.raises(ValueError, match="eval_points must be a positive integer, got 0"):
        expand("x", suite | {"eval_points": 0})
    with pytest.raises(ValueError, match="train_accuracy must be true or false"):
        expand("x", suite | {"train_accuracy": "yes"})


def test_a_set_key_applies_to_the_methods_that_have_it():
    cells = expand("x", load_suite("ci") | {"methods": ["noprop-dt", "backprop"]}, overrides={"eta": 0.5})
    assert {c.method: getattr(c.config, "eta", None) for c in cells} == {"noprop-dt": 0.5, "backprop": None}
    with pytest.raises(ValueError, match="unknown config key 'etta' for methods noprop-dt, backprop; valid keys:"):
        expand("x", load_suite("ci") | {"methods": ["noprop-dt", "backprop"]}, overrides={"etta": 0.5})


def test_a_method_scoped_set_applies_to_that_method_only():
    suite = load_suite("quick") | {"methods": ["noprop-dt", "noprop-ct"]}
    cells = expand("x", suite, overrides={"noprop-ct.timesteps": 20, "epochs": 3})
    assert {c.method: (c.config.timesteps, c.config.epochs) for c in cells} == {"noprop-dt": (10, 3), "noprop-ct": (20, 3)}
    with pytest.raises(ValueError, match="'adjoint' is not a method of this run; methods: noprop-dt, noprop-ct"):
        expand("x", suite, overrides={"adjoint.timesteps": 20})
    with pytest.raises(ValueError, match="unknown config key 'eta' for method noprop-fm; valid keys:"):
        expand("x", suite | {"methods": ["noprop-fm"]}, overrides={"noprop-fm.eta": 1.0})


def test_suite_size_is_the_declared_dataset_size(digits):
    assert (len(digits.train), len(digits.test)) == (DATASETS["digits"].n_train, DATASETS["digits"].n_test)


def test_a_changed_suite_and_a_departure_from_the_protocol_say_so_in_every_row(tmp_path, capsys):
    out = tmp_path / "s"
    assert run(["--suite", "quick", *TINY, "--epochs", "2", "--seeds", "1", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv", dtype=str).fillna("")
    for changed in ("epochs 2 (suite: 1)", "train-limit 200 (suite: 6000)", "seeds 1 (suite: 0)"):
        assert df["overrides"].str.contains(changed, regex=False).all()
    for departure in ("epochs 2 (default 100)", "train-limit 200 (paper: the full split)",
                      "data set digits is not in Table 3"):
        assert df["scaled"].str.contains(departure, regex=False).all()
    assert (df["config"] == "epochs=2").all()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["changed_from_suite"] and meta["paper_protocol"] is False
    assert "changed from the suite as written: seeds 1 (suite: 0)" in capsys.readouterr().err


def test_a_paper_cell_has_no_departures_and_each_change_is_one():
    cfg = METHODS["noprop-ct"].default_config("cifar10")
    cell = Cell("s", "noprop-ct", "cifar10", 2, cfg, eval_points=20, inference_runs=5)
    assert departures(cell) == ()  # seeds, evaluation points and inference runs are not departures
    changed = Cell("s", "noprop-ct", "cifar10", 2, METHODS["noprop-ct"].default_config("cifar10", epochs=3, lr=5e-4),
                   train_limit=100, precision="bf16")
    assert departures(changed) == ("epochs 3 (default 500)", "lr 0.0005 (default 0.001)",
                                   "train-limit 100 (paper: the full split)", "precision bf16 (protocol: fp32)")
    variant = Cell("s", "noprop-ct-reweighted", "mnist", 0, METHODS["noprop-ct-reweighted"].default_config("mnist"))
    assert departures(variant) == ("method noprop-ct-reweighted is not in the paper",)


def test_selecting_cells_is_not_scaling(tmp_path):
    args = run_bench.build_parser().parse_args(["run", "--suite", "paper-table1", "--methods", "noprop-dt",
                                                "--datasets", "mnist", "--embeddings", "one-hot"])
    suite, settings, changed = run_bench.suite_with_overrides(args)
    assert changed == () and settings == {}
    cells = expand("paper-table1", suite, settings, changed)
    assert [c.id for c in cells] == [c.id for c in expand("paper-table1", load_suite("paper-table1"))
                                     if (c.method, c.dataset, c.embedding) == ("noprop-dt", "mnist", "one-hot")]


def test_eval_points_write_rows_with_fractional_epochs_and_the_sweep_at_the_end(tmp_path):
    out = tmp_path / "e"
    assert run(["--suite", "quick", *TINY, "--methods", "noprop-fm", "--epochs", "2", "--eval-points", "3",
                "--set", "timesteps=4", "--inference-steps", "2", "--solvers", "euler,rk4", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv")
    default = df[df["eval_setting"] == "default"]
    assert list(default["step"]) == [1, 3, 4] and list(default["epoch"]) == [0.5, 1.5, 2]
    assert default["cum_train_time_s"].is_monotonic_increasing
    sweep = df[df["eval_setting"] == "sweep"]
    assert set(sweep["step"]) == {4}
    assert sorted(zip(sweep["inference_steps"], sweep["solver"], sweep["nfe"])) == [(2, "euler", 2), (2, "rk4", 8)]


def test_train_accuracy_is_measured_at_the_end_only(tmp_path):
    base = load_suite("quick") | {"datasets": ["digits"], "train_limit": 200, "test_limit": 100,
                               "methods": ["noprop-dt"], "train_accuracy": True, "config": {"epochs": 2}}
    from noprop_bench.run.runner import RunOptions, run_cells
    import torch
    (outcome,) = run_cells(expand("x", base), RunOptions(torch.device("cpu"), progress=False))
    rows = pd.DataFrame(outcome.rows)
    assert rows.loc[rows["epoch"] == 1, "train_acc"].isna().all()
    assert rows.loc[rows["epoch"] == 2, "train_acc"].between(0, 100).all()
    data = load_data("digits", "cpu", train_limit=200, test_limit=100)
    assert rows["n_train"].iloc[0] == len(data.train)
