"""run_bench.py in-process: files written, determinism, and every error path a user can hit."""
import importlib.metadata
import json

import pandas as pd
import pytest
import torch

from noprop_bench import cli as run_bench
from noprop_bench.run.results import COLUMNS, TIMING_COLUMNS
from noprop_bench.methods import METHODS

TINY = ["--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]


def run(argv):
    return run_bench.main([str(a) for a in argv])


def test_tiny_run_writes_tidy_rows_and_metadata(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["--suite", "quick", *TINY, "--epochs", "2", "--inference-runs", "2", "--seeds", "3", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == COLUMNS
    # 2 methods x 2 epochs x 1 evaluation setting x 2 inference runs
    assert len(df) == 8
    assert set(df["method"]) == {"noprop-dt", "backprop"} and set(df["seed"]) == {3}
    assert sorted(df["inference_run"].unique()) == [0, 1] and sorted(df["epoch"].unique()) == [1, 2]
    assert df["test_acc"].between(0, 100).all() and (df["train_time_s"] > 0).all()
    first, second = (df[(df.method == "noprop-dt") & (df.epoch == e)].iloc[0] for e in (1, 2))
    assert second["cum_train_time_s"] == pytest.approx(first["train_time_s"] + second["train_time_s"])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["suite"] == "quick" and meta["finished"] and meta["failed"] == {}
    assert {"revision", "dirty"} <= set(meta["git"])
    assert meta["packages"]["torch"] == importlib.metadata.version("torch")
    assert meta["device"]["type"] == "cpu" and meta["command"][1:3] == ["--suite", "quick"]
    assert set(meta["cells"]) == set(df["cell_id"])
    cell = next(iter(meta["cells"].values()))
    assert cell["config"]["epochs"] == 2 and cell["train_limit"] == 200
    summary = capsys.readouterr().out
    assert "noprop-dt" in summary and "backprop" in summary and "test_acc" in summary
    # the report is written at the end of every run and its path printed
    assert f"report: {out / 'report' / 'report.md'}" in summary
    assert (out / "report" / "accuracy_vs_time.png").is_file() and (out / "report" / "time_to_accuracy.csv").is_file()


def test_the_default_run_is_a_small_figure_3(tmp_path, capsys):
    """No arguments: at least 4 methods (DT, back-prop, CT, FM), 5+ evaluation points each, one-hot MNIST,
    scaled by design and saying so."""
    from noprop_bench.run.suites import eval_steps, expand, load_suite
    assert run_bench.build_parser().parse_args([]).suite == run_bench.DEFAULT_SUITE
    suite = load_suite(run_bench.DEFAULT_SUITE)
    cells = expand(run_bench.DEFAULT_SUITE, suite)
    assert {"noprop-dt", "backprop", "noprop-ct", "noprop-fm"} <= {c.method for c in cells}
    assert all(len(eval_steps(c, c.train_limit)) >= 5 for c in cells)
    assert {c.dataset for c in cells} == {"mnist"} and {c.embedding for c in cells} == {"one-hot"}
    assert "MNIST subset" in suite["scaled_from"]
    # the same suite on digits, tiny, end to end: its report says it is scaled by design
    out = tmp_path / "r"
    assert run(["--datasets", "digits", "--train-limit", "100", "--test-limit", "50", "--set", "epochs=1",
                "--set", "timesteps=2", "--no-progress", "--out", out]) == 0
    md = (out / "report" / "report.md").read_text()
    assert "**Scaled by design** (suite fig3-small)" in md and "## Time to accuracy" in md


def test_same_seed_twice_gives_identical_rows(tmp_path):
    frames = []
    for name in ("a", "b"):
        assert run(["--suite", "quick", *TINY, "--out", tmp_path / name]) == 0
        frames.append(pd.read_csv(tmp_path / name / "results.csv").drop(columns=TIMING_COLUMNS))
    pd.testing.assert_frame_equal(*frames)


def test_another_seed_gives_other_rows(tmp_path):
    accs = []
    for seed in (0, 1):
        assert run(["--suite", "quick", *TINY, "--methods", "noprop-dt", "--seeds", seed, "--out", tmp_path / str(seed)]) == 0
        accs.append(pd.read_csv(tmp_path / str(seed) / "results.csv")["train_loss"].item())
    assert accs[0] != accs[1]


def test_default_suite_runs_on_real_mnist(tmp_path):
    """The README's main command, on a tiny subset: real MNIST is fetched (offline source) and used."""
    out = tmp_path / "q"
    assert run(["--train-limit", "256", "--test-limit", "100", "--epochs", "1", "--no-progress", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["dataset"]) == {"mnist"} and set(df["n_train"]) == {256} and set(df["suite"]) == {"fig3-small"}


@pytest.mark.parametrize("argv,message", [
    (["--methods", "dfa"], "unknown method 'dfa'; valid methods: " + ", ".join(METHODS)),
    (["--suite", "table9"], "unknown suite 'table9'; valid suites: ci, fig3-small, memory, pace, paper-fig3, paper-table1, paper-table2, parallel, quick, steps"),
    (["--embeddings", "dim=20"], "unknown embedding 'dim=20'; valid embeddings: one-hot, dim20, prototype"),
    (["--datasets", "svhn"], "unknown data set 'svhn'; valid data sets: mnist"),
    (["--set", "learning_rate=1"], "unknown config key 'learning_rate' for methods noprop-dt, backprop, noprop-ct, noprop-fm, adjoint; valid keys: a_init,"),
    (["--set", "lr=-1"], "config 'lr' must be > 0, got -1"),
    (["--set", "lr=abc"], "config 'lr' expects a number (float), got 'abc'"),
    (["--set", "epochs=1.5"], "config 'epochs' expects an integer (int), got 1.5"),
    (["--set", "noprop-dt.embed_state=3"], "config 'embed_state' expects a string (str), got 3"),
    (["--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
], ids=["method", "suite", "embedding", "dataset", "config-key", "config-value", "config-type-float",
        "config-type-int", "config-type-str", "device"])
def test_bad_input_is_a_clear_error(tmp_path, capsys, argv, message):
    assert run([*argv, "--out", tmp_path / "x"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert run(["--device", "cuda", "--out", tmp_path / "x"]) == 2
    assert "CUDA is not available here" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--seeds", "a"], ["--train-limit", "-3"], ["--set", "lr"]])
def test_malformed_options_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run(argv)
    assert e.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_a_foreign_results_file_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.csv").write_text("precious\n")
    assert run(["--suite", "quick", *TINY, "--out", out]) == 2
    assert "cannot be resumed; pass --fresh" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == "precious\n"


def test_a_diverging_cell_is_reported_and_keeps_earlier_rows(tmp_path, monkeypatch, capsys):
    cls = METHODS["backprop"]
    calls = {}  # per model: the FLOP count's copy makes one call of its own
    original = cls.loss

    def loss_that_diverges_in_epoch_2(self, x, y, stage):
        calls[id(self)] = calls.get(id(self), 0) + 1
        loss, terms = original(self, x, y, stage)
        return (loss * float("nan"), terms) if calls[id(self)] > 2 else (loss, terms)  # 2 steps per epoch

    monkeypatch.setattr(cls, "loss", loss_that_diverges_in_epoch_2)
    out = tmp_path / "div"
    argv = ["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "50",
            "--set", "batch_size=100", "--epochs", "3", "--no-progress", "--out", out,
            "--no-memory-probe"]  # the probe's own loss calls (on a copy) would shift the count above
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert "backprop/digits/one-hot/seed0 diverged by epoch 2" in err and "lower learning rate" in err
    df = pd.read_csv(out / "results.csv")
    assert sorted(df[df.method == "backprop"]["epoch"]) == [1]
    assert sorted(df[df.method == "noprop-dt"]["epoch"]) == [1, 2, 3]  # the other cell still ran
    meta = json.loads((out / "metadata.json").read_text())
    assert list(meta["failed"].values())[0].startswith("backprop/digits/one-hot/seed0 diverged")


def test_list_shows_suites_methods_datasets_and_embeddings(capsys):
    assert run(["--list"]) == 0
    text = capsys.readouterr().out
    for word in ("quick", "ci", *METHODS, "cifar100", "prototype"):
        assert word in text


def test_an_integer_for_a_float_key_is_the_same_cell_as_the_float():
    from noprop_bench.methods import get_method
    cls = get_method("noprop-dt")
    a, b = cls.default_config("mnist", lr=1), cls.default_config("mnist", lr=1.0)
    assert a == b and isinstance(a.lr, float)
