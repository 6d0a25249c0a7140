"""Precision as a recorded setting (run/precision.py) and model FLOPs against the roof (measure/flops.py)."""
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from noprop_bench import cli as run_bench
from noprop_bench.data import get_spec
from noprop_bench.measure.flops import (_product_timer, count_inference_flops, count_training_flops, fitted_size,
                                        matmul_roof)
from noprop_bench.run.precision import autocast
from noprop_bench.run.step import train_step
from noprop_bench.run.suites import expand, load_suite

TINY = ["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress",
        "--no-report", "--methods", "noprop-dt", "--set", "timesteps=2"]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "local_ce"


def test_precision_is_part_of_the_cell_key():
    suite = load_suite("quick") | {"methods": ["noprop-dt"], "precision": ["fp32", "bf16"]}
    fp32, bf16 = expand("quick", suite)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert fp32.id != bf16.id and fp32.config == bf16.config
    assert "/seed0/bf16" in bf16.label()


def test_a_resume_with_another_precision_runs_its_own_cells(tmp_path):
    out = tmp_path / "r"
    assert run_bench.main([*TINY, "--out", str(out)]) == 0
    assert run_bench.main([*TINY, "--precision", "bf16", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert sorted(df.groupby("precision")["cell_id"].nunique().items()) == [("bf16", 1), ("fp32", 1)]
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["roof_gflops"]) == {"bf16"} and meta["roof_gflops"]["bf16"] > 0  # this run's roof
    assert meta["roof_n"]["bf16"] in (256, 512, 1024, 2048)  # the product's size is recorded with it


def test_rows_carry_precision_flops_and_the_roof(tmp_path):
    out = tmp_path / "r"
    assert run_bench.main([*TINY, "--precision", "fp32,bf16", "--eval-points", "2", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["precision"]) == {"fp32", "bf16"}
    assert (df["train_flops_per_step"] > 0).all() and (df["train_gflops_per_s"] > 0).all()
    assert (df["eval_gflops_per_s"] > 0).all()
    # FLOPs per step do not depend on precision; the roof does, and each row has its own precision's
    assert df.groupby("precision")["train_flops_per_step"].first().nunique() == 1
    meta = json.loads((out / "metadata.json").read_text())
    for precision, roof in meta["roof_gflops"].items():
        assert (df[df["precision"] == precision]["roof_gflops"] == roof).all()
    assert "precision fp32,bf16 (suite: fp32)" in df["overrides"].iloc[0]
    assert "precision bf16 (protocol: fp32)" in df.loc[df["precision"] == "bf16", "scaled"].iloc[0]
    from noprop_bench.report import write_report
    md = (write_report(out) / "report.md").read_text()
    assert "## Efficiency: parameters and achieved FLOP/s" in md
    config = "epochs=1;timesteps=2"
    assert f"| digits | noprop-dt | bf16 | {config} | 1 |" in md and f"| digits | noprop-dt | fp32 | {config} | 1 |" in md
    assert f"| digits | test | noprop-dt | one-hot | {config} | bf16 | 1 |" in md  # Table 1 keeps precisions apart


def test_tf32_off_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("tf32 is valid on this machine")
    assert run_bench.main([*TINY, "--precision", "tf32", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "precision tf32 is a CUDA tensor-core mode; on cpu use --precision fp32 or bf16" in err
    assert err.count("\n") == 1 and not (tmp_path / "x").exists()


def test_unknown_precision_is_a_clear_error(tmp_path, capsys):
    assert run_bench.main([*TINY, "--precision", "fp16", "--out", str(tmp_path / "x")]) == 2
    assert "unknown precision 'fp16'; valid: fp32, torch-default, tf32, bf16" in capsys.readouterr().err


@pytest.fixture
def local_ce():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from noprop_bench_local_ce import LocalCE
    finally:
        sys.path.remove(str(EXAMPLE))
    return LocalCE


def test_the_flop_count_of_known_layers(local_ce, digits):
    """One hidden layer of h units and its classifier, on 16x16 digits (256 inputs), batch B:
    inference 2(256h + 10h) per image; a training step computes the forward, the weight gradients of both
    layers and the input gradient of the classifier only (the images need none): 4B(256h) + 6B(10h)."""
    h, B = 32, 16
    spec = get_spec("digits")
    method = local_ce(spec, local_ce.default_config("digits", timesteps=1, hidden=h), "cpu")
    assert count_inference_flops(method, digits.test, None, None, "fp32") == 2 * (256 * h + 10 * h)
    flops = count_training_flops(method, method.make_optimizer(), digits.train, B, "fp32")
    assert flops == 4 * B * 256 * h + 6 * B * 10 * h
    assert count_training_flops(method, method.make_optimizer(), digits.train, B, "bf16") == flops


def test_bf16_is_autocast_with_float32_master_weights_and_optimiser_state(local_ce, digits):
    spec = get_spec("digits")
    method = local_ce(spec, local_ce.default_config("digits", timesteps=1, hidden=8), "cpu")
    optimizer = method.make_optimizer()
    x, y = next(digits.train.batches(16, shuffle=False))
    with autocast("bf16", x.device):
        assert method.local_logits(x)[-1].dtype == torch.bfloat16
    train_step(method, optimizer, x, y, None, "bf16")
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in method.parameters())
    assert all(v.dtype == torch.float32 for s in optimizer.state.values() for v in s.values() if v.dim())


def test_the_roof_is_a_positive_rate_per_precision():
    assert matmul_roof(torch.device("cpu"), "fp32", n=256, seconds=0.01) > 0
    assert matmul_roof(torch.device("cpu"), "bf16", n=256, seconds=0.01) > 0


def test_the_roof_product_is_the_largest_that_takes_at_most_a_second():
    tried = []

    def at(gflops):  # a device whose n^3 product runs at `gflops`
        def time_product(n):
            tried.append(n)
            return 2 * n ** 3 / (gflops * 1e9)
        return time_product

    assert fitted_size(at(100), cap=2048) == 2048 and tried == [256, 512, 1024]  # a BLAS rate: the cap
    tried.clear()
    # an emulated precision at 1 GFLOP/s: 512^3 takes 0.27 s, so 1024^3 (2.1 s) is never run
    assert fitted_size(at(1), cap=2048) == 512 and tried == [256, 512]
    tried.clear()
    assert fitted_size(at(0.01), cap=2048) == 256 and tried == [256]  # the smallest size is the floor


def test_sizing_the_roof_leaves_the_random_stream_alone():
    state = torch.get_rng_state()
    assert _product_timer(torch.device("cpu"), "fp32")(256) > 0
    assert torch.equal(torch.get_rng_state(), state)  # a cell seeded before it draws what it would have
