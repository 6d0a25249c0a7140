"""NoProp-CT, NoProp-FM and the neural-ODE baselines: schedule, samples, targets, gradients, solvers."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from noprop_bench import cli as run_bench
from noprop_bench.methods import METHODS
from noprop_bench.methods.continuous import SOLVERS, LearnedSchedule, integrate


def make(name, digits, **overrides):
    cls = METHODS[name]
    return cls(digits.spec, cls.default_config("digits", **overrides), "cpu", train=digits.train)


# --- the learned schedule (Appendix B) ---------------------------------------------------------------

def test_schedule_weights_stay_positive_and_gamma_monotone_after_optimiser_steps():
    sched = LearnedSchedule(hidden=32)
    opt = torch.optim.Adam(sched.parameters(), lr=0.5)
    t = torch.linspace(0, 1, 201)
    for _ in range(50):  # push the raw weights hard towards negative values
        opt.zero_grad()
        # push the raw weights negative and the endpoints towards crossing
        (sched.raw_w1.sum() + sched.raw_w2.sum() + sched.gamma(torch.rand(64)).sum() - sched.gamma_0).backward()
        opt.step()
    assert (sched.raw_w1 < 0).any(), "the optimiser did push raw weights negative"
    assert sched.gamma_1 > sched.gamma_0
    w1, w2 = sched.weights()
    assert (w1 > 0).all() and (w2 > 0).all()
    gamma = sched.gamma(t).detach()
    assert torch.all(gamma[1:] <= gamma[:-1] + 1e-5), "gamma must decrease in t"
    assert torch.all(sched.alpha_bar(t)[1:] >= sched.alpha_bar(t)[:-1])
    assert gamma[0].item() == pytest.approx(sched.gamma_1.item(), abs=1e-4)   # gamma(0) = gamma_1
    assert gamma[-1].item() == pytest.approx(sched.gamma_0.item(), abs=1e-4)  # gamma(1) = gamma_0


def test_schedule_slope_matches_autograd():
    sched = LearnedSchedule(hidden=16)
    t = torch.rand(10, requires_grad=True)
    gamma, slope = sched.gamma_and_slope(t)
    (auto,) = torch.autograd.grad(gamma.sum(), t)
    assert torch.allclose(slope, auto, atol=1e-5)
    snr, snr_slope = sched.snr_and_slope(t)
    (auto_snr,) = torch.autograd.grad(snr.sum(), t)
    assert torch.allclose(snr_slope, auto_snr, rtol=1e-4) and (snr_slope >= 0).all()


@pytest.mark.parametrize("gamma_0,gamma_1", [(-4.6, 4.6), (-7.0, 7.0), (-7.0, 4.6)])
def test_schedule_starts_at_the_named_endpoints(gamma_0, gamma_1):
    """alpha_bar = sigmoid(-gamma), with gamma(0) = gamma_1 (noisy end) and gamma(1) = gamma_0 (clean end)."""
    ab = LearnedSchedule(gamma_0=gamma_0, gamma_1=gamma_1).alpha_bar(torch.tensor([0.0, 1.0]))
    assert ab[0].item() == pytest.approx(1 / (1 + math.exp(gamma_1)), rel=1e-4)
    assert ab[1].item() == pytest.approx(1 / (1 + math.exp(gamma_0)), rel=1e-6)


def test_the_default_endpoints_are_plus_minus_4_6():
    schedule = LearnedSchedule()
    assert schedule.gamma_0.item() == pytest.approx(-4.6) and schedule.gamma_1.item() == pytest.approx(4.6)


# --- NoProp-CT ------------------------------------------------------------------------------------------

def test_the_noised_label_has_mean_sqrt_alpha_bar_u_and_variance_one_minus_alpha_bar():
    from noprop_bench.methods import equations as eq
    u = torch.zeros(20000, 10)
    u[:, 3] = 1
    ab = torch.tensor(0.3)
    z = eq.noised_label(u, ab)
    expected_mean = torch.zeros(10)
    expected_mean[3] = math.sqrt(0.3)  # sqrt on the mean: one public version forgets it
    assert torch.allclose(z.mean(0), expected_mean, atol=0.02)
    assert torch.allclose(z.var(0), torch.full((10,), 0.7), atol=0.03)


def test_ct_loss_terms_on_a_hand_computed_case(digits):
    """Uniform logits give u_hat = 0.1 everywhere, so ||u_hat - e_y||^2 = 0.9 for every t."""
    m = make("noprop-ct", digits)
    m.net = type("Zero", (nn.Module,), {"forward": lambda self, z, x, t, image=None: torch.zeros(len(x), 10)})()
    nn.init.zeros_(m.head.weight), nn.init.zeros_(m.head.bias)
    x, y = next(digits.train.batches(64, shuffle=False))
    torch.manual_seed(5)
    loss, terms = m.loss(x, y)
    torch.manual_seed(5)
    t = torch.rand(64)
    _, snr_slope = m.schedule.snr_and_slope(t)
    ab0 = m.schedule.alpha_bar(torch.zeros(())).item()
    kl = 0.5 * (ab0 - 10 * ab0 - 10 * math.log(1 - ab0))
    assert terms["mse"].item() == pytest.approx(0.9, rel=1e-6)
    assert terms["ce"].item() == pytest.approx(math.log(10), rel=1e-6)
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-4)
    assert loss.item() == pytest.approx(math.log(10) + kl + 0.5 * 1.0 * (snr_slope * 0.9).mean().item(), rel=1e-4)


def test_ct_gradients_reach_the_schedule_and_the_network(digits):
    m = make("noprop-ct", digits, embedding="dim20")
    x, y = next(digits.train.batches(32, shuffle=False))
    m.loss(x, y)[0].backward()
    for p in (m.schedule.raw_w1, m.schedule.gamma_0, m.schedule.raw_gap, m.embed.weight, m.head.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


# --- NoProp-FM --------------------------------------------------------------------------------------------

def test_fm_regresses_on_z1_minus_z0_along_the_straight_path(digits):
    m = make("noprop-fm", digits)
    seen = {}
    original = m.velocity

    def spy(z, x, t):
        seen.update(z=z, t=t)
        seen["v"] = original(z, x, t)
        return seen["v"]
    m.velocity = spy
    x, y = next(digits.train.batches(16, shuffle=False))
    loss, terms = m.loss(x, y)
    u = torch.eye(10)[y]
    t = seen["t"][:, None]
    z0 = (seen["z"] - t * u) / (1 - t)  # sigma = 0: z_t = t u + (1 - t) z0 exactly
    assert torch.allclose(seen["z"], t * u + (1 - t) * z0, atol=1e-5)
    expected = (seen["v"] - (u - z0)).pow(2).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert set(terms) == {"mse"}  # fixed one-hot embedding: no anchor term


def test_fm_adds_the_anchor_cross_entropy_when_embeddings_are_learned(digits):
    m = make("noprop-fm", digits, embedding="dim20")
    x, y = next(digits.train.batches(16, shuffle=False))
    loss, terms = m.loss(x, y)
    assert set(terms) == {"mse", "ce"}
    assert loss.item() == pytest.approx((terms["mse"] + terms["ce"]).item(), rel=1e-6)


def test_fm_predicts_the_nearest_class_embedding(digits):
    m = make("noprop-fm", digits).eval()
    target = torch.eye(10)[torch.arange(8) % 10]
    m.velocity = lambda z, x, t, image=None: target - z * 0  # a constant field: z1 = z0 + target
    torch.manual_seed(0)
    scores = m.predict(torch.zeros(8, 1, 16, 16), steps=4, solver="euler")
    torch.manual_seed(0)
    z1 = torch.randn(8, 10) + target
    assert torch.allclose(scores, -torch.cdist(z1, torch.eye(10)), atol=1e-5)


# --- the neural-ODE baselines --------------------------------------------------------------------------

def test_adjoint_gradients_equal_backprop_through_the_solver(digits):
    x, y = next(digits.train.batches(8, shuffle=False))
    grads = []
    for name in ("adjoint", "backprop-ode"):
        torch.manual_seed(0)
        m = make(name, digits, timesteps=20, solver="rk4")
        torch.manual_seed(1)
        m.loss(x, y)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    adjoint, direct = grads
    assert adjoint.shape == direct.shape and direct.abs().sum() > 0
    assert (adjoint - direct).norm() / direct.norm() < 1e-3


def test_adjoint_counts_forward_and_backward_evaluations(digits):
    x, y = next(digits.train.batches(4, shuffle=False))
    for name, per_step in (("adjoint", 1), ("backprop-ode", 1)):
        m = make(name, digits, timesteps=5)
        loss, _ = m.loss(x, y)
        assert m.last_nfe == 5 * per_step


def test_neural_ode_field_has_no_dropout(digits):
    m = make("adjoint", digits)
    assert all(mod.p == 0 for mod in m.net.modules() if isinstance(mod, nn.Dropout))
    assert any(mod.p > 0 for mod in make("noprop-ct", digits).net.modules() if isinstance(mod, nn.Dropout))


# --- solvers and step sweeps ---------------------------------------------------------------------------

class Linear(nn.Module):
    def forward(self, t, z):
        return -2.0 * z + t  # z(1) from z(0) = 1 has a closed form


def exact(z0=1.0):
    # z' = -2 z + t  =>  z(t) = (z0 + 1/4) e^{-2t} + t/2 - 1/4
    return (z0 + 0.25) * math.exp(-2.0) + 0.5 - 0.25


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun2", 2), ("rk4", 4)])
def test_each_solver_integrates_a_known_ode_to_its_order(solver, order):
    z0 = torch.ones(1, 1, dtype=torch.float64)
    errors = []
    for k in (8, 16, 32):
        z1, counter = integrate(Linear(), z0, k, solver)
        errors.append(abs(z1.item() - exact()))
        assert counter.nfe == k * SOLVERS[solver]
    observed = math.log2(errors[1] / errors[2])
    assert observed == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("bad", [0, 1001, 2.5])
def test_bad_step_counts_are_clear_errors(digits, bad):
    m = make("noprop-ct", digits).eval()
    with pytest.raises(ValueError, match="inference steps must be an integer from 1 to 1000"):
        m.predict(torch.zeros(2, 1, 16, 16), steps=bad)


@pytest.mark.parametrize("name", ["noprop-ct", "noprop-fm", "adjoint", "backprop-ode"])
def test_unknown_solver_is_a_clear_error(digits, name):
    m = make(name, digits, timesteps=4).eval()
    with pytest.raises(ValueError, match=f"{name} has no solver 'dopri5'; valid solvers: "):
        m.predict(torch.zeros(2, 1, 16, 16), solver="dopri5")


@pytest.mark.parametrize("steps", [2, 5, 100, 1000])
def test_every_step_count_from_2_to_1000_runs(digits, steps):
    m = make("noprop-ct", digits).eval()
    x, _ = next(digits.test.batches(3, shuffle=False))
    for solver in ("ancestral", "euler"):
        assert m.predict(x, steps=steps, solver=solver).shape == (3, 10)
        assert m.last_nfe == steps


def test_sweep_writes_one_row_per_setting_and_run(tmp_path):
    out = tmp_path / "sweep"
    argv = ["--suite", "ci", "--methods", "noprop-ct,noprop-fm,noprop-dt", "--datasets", "digits",
            "--train-limit", "128", "--test-limit", "40", "--set", "timesteps=10", "--inference-steps", "2,5",
            "--solvers", "ancestral,rk4", "--inference-runs", "2", "--no-progress", "--out", str(out)]
    assert run_bench.main(argv) == 0
    df = pd.read_csv(out / "results.csv")
    ct = df[df.method == "noprop-ct"]
    # default (10, ancestral) + {2, 5} x {ancestral, rk4}, each with 2 inference runs
    assert sorted(set(zip(ct.inference_steps, ct.solver))) == sorted(
        {(10, "ancestral"), (2, "ancestral"), (5, "ancestral"), (2, "rk4"), (5, "rk4")})
    assert len(ct) == 5 * 2
    assert set(ct[ct.solver == "rk4"].nfe) == {8, 20}
    fm = df[df.method == "noprop-fm"]  # FM has no ancestral rule: its default + rk4 only
    assert sorted(set(zip(fm.inference_steps, fm.solver))) == [(2, "rk4"), (5, "rk4"), (10, "euler")]
    dt = df[df.method == "noprop-dt"]  # timesteps=10 is DT's T; it has no sweep
    assert set(zip(dt.inference_steps, dt.solver)) == {(10, "ancestral")} and set(dt.nfe) == {10}


def test_sweep_options_are_validated(tmp_path, capsys):
    assert run_bench.main(["--methods", "noprop-ct", "--solvers", "dopri5", "--out", str(tmp_path / "a")]) == 2
    assert "unknown solver 'dopri5' for methods noprop-ct; valid solvers: ancestral, euler, heun2, midpoint, rk4" \
        in capsys.readouterr().err
    assert run_bench.main(["--methods", "noprop-ct", "--inference-steps", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--inference-steps: inference steps must be an integer from 1 to 1000, got 0" in capsys.readouterr().err
