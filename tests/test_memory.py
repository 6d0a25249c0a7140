"""Table 2 on any machine: the tensor-memory probe, its split, the memory-vs-T grid and the report's
Table 2."""
import pandas as pd
import pytest
import torch

from noprop_bench import cli as run_bench
from noprop_bench.data import load_data
from noprop_bench.measure.memory import TensorMemory, probe_training_memory
from noprop_bench.run.results import TIMING_COLUMNS
from noprop_bench.report.memory import compute as table2
from noprop_bench.run.suites import expand, load_suite
from noprop_bench.methods import get_method

F32 = 4


def test_peak_and_live_bytes_of_a_sequence_computed_by_hand():
    with TensorMemory() as mem:
        a = torch.empty(1000)          # 4000 B
        b = torch.empty(2000)          # 12000 B live: the peak
        view = b[:10]                  # a view allocates nothing
        b.add_(1)                      # nor does an in-place op
        view.mul_(2)
        del a                          # 8000 B live
        c = torch.empty(500)           # 10000 B live
    assert mem.peak == 12000 and mem.live == 10000
    assert mem.at_peak == {"parameters": 0, "gradients": 0, "optimizer_state": 0, "activations": 12000}
    del b, c, view


def test_forward_and_backward_peak_computed_by_hand():
    """loss = (x * w).sum(), w a parameter of n floats, x [b, n]. The peak is in backward, while
    sum(0) of grad * x writes w's gradient: x, grad * x, w, w.grad, the loss and its gradient."""
    b, n = 64, 100
    w = torch.zeros(n, requires_grad=True)
    with TensorMemory() as mem:
        mem.track(w, "parameters")
        hook = w.register_post_accumulate_grad_hook(lambda p: mem.track(p.grad, "gradients"))
        x = torch.randn(b, n)
        (x * w).sum().backward()
    hook.remove()
    assert mem.peak == (2 * b * n + 2 * n) * F32 + 2 * F32
    assert mem.totals["gradients"] == n * F32 and mem.totals["parameters"] == n * F32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensor_peak_matches_max_memory_allocated_on_cuda():
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with TensorMemory() as mem:
        a = torch.empty(1 << 20, device="cuda")
        b = torch.empty(1 << 21, device="cuda")
        del a
        c = torch.empty(1 << 19, device="cuda")
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base == mem.peak
    del b, c


def _method(name, digits, **kw):
    torch.manual_seed(0)
    cls = get_method(name)
    return cls(digits.spec, cls.default_config("digits", **kw), "cpu", train=digits.train)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "cpu")


def _same(a, b):
    return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)  # the schedule's a, b, c hold NaN at t = 0


def test_probe_leaves_the_method_the_optimiser_and_the_random_stream_unchanged(digits):
    trained = []
    for with_probe in (False, True):
        model = _method("noprop-dt", digits, timesteps=2)
        opt = model.make_optimizer()
        if with_probe:
            before = {k: v.clone() for k, v in model.state_dict().items()}
            probe_training_memory(model, opt, digits.train, 64)
            assert all(_same(before[k], v) for k, v in model.state_dict().items())
            assert not opt.state
        x, y = next(digits.train.batches(64, shuffle=True))
        opt.zero_grad()
        model.loss(x, y, 1)[0].backward()
        opt.step()
        trained.append(model.state_dict())
    assert all(_same(trained[0][k], trained[1][k]) for k in trained[0])


def test_split_of_the_peak_and_noprop_dt_below_backprop(digits):
    """Same cell settings: NoProp-DT trains one block at a time, back-prop keeps the activations of all
    T blocks for its backward pass."""
    out = {}
    for name in ("noprop-dt", "backprop"):
        model = _method(name, digits, timesteps=4)
        out[name] = probe_training_memory(model, model.make_optimizer(), digits.train, 128)
        params = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert out[name]["mem_parameters_bytes"] == params
        # AdamW: exp_avg and exp_avg_sq per parameter, plus a scalar step per tensor
        assert 2 * trainable * F32 <= out[name]["mem_optimizer_state_bytes"] <= 2 * trainable * F32 + 4096
        assert out[name]["tensor_peak_bytes"] == sum(v for k, v in out[name].items() if k != "tensor_peak_bytes")
    assert out["noprop-dt"]["mem_activations_bytes"] < out["backprop"]["mem_activations_bytes"] / 2
    assert out["noprop-dt"]["tensor_peak_bytes"] < out["backprop"]["tensor_peak_bytes"]


def test_adjoint_memory_is_flat_in_T_and_backprop_through_the_solver_grows(digits):
    peaks = {}
    for name in ("adjoint", "backprop-ode"):
        for T in (4, 16):
            model = _method(name, digits, timesteps=T)
            peaks[name, T] = probe_training_memory(model, model.make_optimizer(), digits.train, 64, steps=1)[
                "mem_activations_bytes"]
    assert peaks["adjoint", 16] < 1.25 * peaks["adjoint", 4]
    assert peaks["backprop-ode", 16] > 2.5 * peaks["backprop-ode", 4]


# --- the runner and the report ---------------------------------------------------------------------

TINY = ["--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]


def test_cpu_rows_carry_the_tensor_peak_and_the_flag_turns_it_off(tmp_path):
    argv = ["--suite", "quick", "--methods", "noprop-dt", *TINY, "--set", "timesteps=2"]
    assert run_bench.main([*argv, "--out", str(tmp_path / "a")]) == 0
    df = pd.read_csv(tmp_path / "a" / "results.csv")
    assert (df["mem_kind"] == "tensor_peak").all()
    assert (df["peak_mem_bytes"] == df["tensor_peak_bytes"]).all()
    parts = df[["mem_parameters_bytes", "mem_gradients_bytes", "mem_optimizer_state_bytes", "mem_activations_bytes"]]
    assert (parts.sum(axis=1) == df["tensor_peak_bytes"]).all()
    assert run_bench.main([*argv, "--no-memory-probe", "--out", str(tmp_path / "b")]) == 0
    off = pd.read_csv(tmp_path / "b" / "results.csv")
    assert off["tensor_peak_bytes"].isna().all() and off["mem_kind"].isna().all()
    # the probe changes nothing else: every column but timing and memory is the same
    skip = [*TIMING_COLUMNS, "mem_kind", "tensor_peak_bytes", *parts.columns]
    pd.testing.assert_frame_equal(df.drop(columns=skip), off.drop(columns=skip))


def _rows(method, T, tensor, cuda=None):
    return {"method": method, "dataset": "mnist", "embedding": "one-hot", "eval_setting": "default",
            "inference_steps": T, "cell_id": f"{method}-{T}", "tensor_peak_bytes": tensor,
            "mem_parameters_bytes": tensor / 4, "mem_gradients_bytes": tensor / 4,
            "mem_optimizer_state_bytes": tensor / 4, "mem_activations_bytes": tensor / 4,
            "peak_mem_bytes": cuda if cuda else tensor, "mem_kind": "cuda_max_allocated" if cuda else "tensor_peak",
            "config": "" if T == 10 else f"timesteps={T}", "precision": "fp32", "data_bytes": 47e6}


def test_table2_ratios_to_backprop_at_the_same_T_else_T10():
    df = pd.DataFrame([_rows("backprop", 10, 2e9), _rows("backprop", 5, 1e9), _rows("noprop-dt", 10, 1e9),
                       _rows("noprop-dt", 5, 0.8e9), _rows("adjoint", 100, 3e9)])
    t = table2(df).set_index(["method", "T"])
    assert t.loc[("noprop-dt", 10), "ratio_to_bp"] == pytest.approx(0.5)
    assert t.loc[("noprop-dt", 5), "ratio_to_bp"] == pytest.approx(0.8)
    assert t.loc[("adjoint", 100), "ratio_to_bp"] == pytest.approx(1.5)     # no back-prop at T = 100
    assert t.loc[("noprop-dt", 10), "paper_ratio_to_bp"] == pytest.approx(0.49 / 0.87)
    assert pd.isna(t.loc[("noprop-dt", 10), "cuda_over_paper"])               # no absolute GB off CUDA
    cuda = table2(pd.DataFrame([_rows("noprop-dt", 10, 1e9, cuda=0.98e9)]))
    assert cuda.loc[0, "cuda_over_paper"] == pytest.approx(0.98 / 0.49)


def test_grid_sweeps_T_per_method_and_set_pins_it():
    suite = load_suite("memory")
    cells = expand("memory", suite)
    ts = {}
    for c in cells:
        ts.setdefault(c.method, []).append(c.config.timesteps)
    assert ts["adjoint"] == [10, 30, 100] and ts["backprop-ode"] == [10, 30, 100]
    assert ts["noprop-dt"] == [2, 5, 10, 20] and ts["backprop"] == [2, 5, 10, 20]
    assert len({c.id for c in cells}) == len(cells)
    pinned = expand("memory", suite, {"adjoint.timesteps": 50})
    assert [c.config.timesteps for c in pinned if c.method == "adjoint"] == [50]


@pytest.mark.parametrize("grid,message", [
    ({"timesteps": 10}, "grid key 'timesteps' must be a non-empty list, got 10"),
    ({"timesteps": []}, "grid key 'timesteps' must be a non-empty list"),
    ({"dfa": {"timesteps": [1]}}, "[grid.dfa] names no method"),
])
def test_bad_grids_are_refused(grid, message):
    suite = {"methods": ["noprop-dt"], "datasets": ["digits"], "embeddings": ["one-hot"], "seeds": [0], "grid": grid}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand("s", suite)


def test_per_pass_embedding_state_is_counted_as_optimizer_state(digits):
    """NoProp-DT with learned embeddings keeps one Adam state for W_Embed per pass (embed_state)."""
    model = _method("noprop-dt", digits, timesteps=3, embedding="dim20")
    out = probe_training_memory(model, model.make_optimizer(), digits.train, 64)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    embed = model.embed.weight.numel()
    # exp_avg and exp_avg_sq of every parameter, plus two more per extra pass for W_Embed
    assert out["mem_optimizer_state_bytes"] >= (2 * trainable + 2 * 2 * embed) * F32
