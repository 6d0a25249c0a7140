import math

import pytest
import torch

from noprop_bench.methods.schedules import DiscreteSchedule, cosine_alpha_bar


def nichol_dhariwal(tau: float, s: float = 0.008) -> float:
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return f(tau) / f(0.0)


@pytest.mark.parametrize("T", [1, 2, 10, 1000])
def test_alpha_bar_increases_in_t_and_stays_inside_0_1(T):
    ab = cosine_alpha_bar(T)
    assert len(ab) == T + 1
    assert ab[0] > 0 and ab[-1] < 1
    assert torch.all(ab[1:] >= ab[:-1])
    snr = DiscreteSchedule(ab).snr
    assert torch.all(snr[1:] - snr[:-1] >= 0), "SNR differences weight the loss and must never be negative"


def test_alpha_bar_is_the_clipped_cosine_at_tau_1_minus_t_over_T():
    T = 10
    ab = cosine_alpha_bar(T)
    for t in range(T + 1):
        expected = min(max(nichol_dhariwal(1 - t / T), 1e-3), 0.999)
        assert ab[t].item() == pytest.approx(expected, rel=1e-12)
    assert ab[0].item() == 1e-3 and ab[T].item() == 0.999  # both ends clipped
    assert torch.all(ab[1:] > ab[:-1]), "strictly increasing for the paper's T = 10"


def test_per_step_alphas_multiply_back_to_alpha_bar():
    sched = DiscreteSchedule(cosine_alpha_bar(10))
    alpha = sched.alpha
    for t in range(11):
        assert math.prod(alpha[t:].tolist()) == pytest.approx(sched.alpha_bar[t].item(), rel=1e-12)


def test_a_b_c_match_the_closed_forms_of_eq_6():
    sched = DiscreteSchedule(cosine_alpha_bar(10))
    ab = sched.alpha_bar.tolist()
    for t in range(1, 11):
        alpha_prev = ab[t - 1] / ab[t]
        a = math.sqrt(ab[t]) * (1 - alpha_prev) / (1 - ab[t - 1])
        b = math.sqrt(alpha_prev) * (1 - ab[t]) / (1 - ab[t - 1])
        c = (1 - ab[t]) * (1 - alpha_prev) / (1 - ab[t - 1])
        assert sched.a[t].item() == pytest.approx(a, rel=1e-12)
        assert sched.b[t].item() == pytest.approx(b, rel=1e-12)
        assert sched.c[t].item() == pytest.approx(c, rel=1e-12)
    assert math.isnan(sched.a[0].item())


def test_posterior_step_preserves_the_marginals():
    """If z_{t-1} ~ q(z_{t-1}|y) and z_t ~ N(a_t u + b_t z_{t-1}, c_t), then z_t ~ q(z_t|y) (Eq. 6)."""
    sched = DiscreteSchedule(cosine_alpha_bar(10))
    ab, a, b, c = sched.alpha_bar, sched.a, sched.b, sched.c
    for t in range(1, 11):
        assert (a[t] + b[t] * ab[t - 1].sqrt()).item() == pytest.approx(ab[t].sqrt().item(), rel=1e-10)
        assert (b[t] ** 2 * (1 - ab[t - 1]) + c[t]).item() == pytest.approx((1 - ab[t]).item(), rel=1e-10)


def test_posterior_coefficients_equal_bayes_rule_for_gaussians():
    """q(z_t | z_{t-1}, y) ~ q(z_{t-1} | z_t) q(z_t | y): combine the two Gaussians by precision."""
    sched = DiscreteSchedule(cosine_alpha_bar(10))
    ab, alpha = sched.alpha_bar, sched.alpha
    for t in range(1, 11):
        # q(z_{t-1}|z_t) = N(sqrt(alpha_{t-1}) z_t, 1 - alpha_{t-1}) as a likelihood in z_t
        prec_lik = alpha[t - 1] / (1 - alpha[t - 1])
        prec_prior = 1 / (1 - ab[t])
        var = 1 / (prec_lik + prec_prior)
        coef_z = var * alpha[t - 1].sqrt() / (1 - alpha[t - 1])   # multiplies z_{t-1}
        coef_u = var * ab[t].sqrt() / (1 - ab[t])                  # multiplies u_y
        assert sched.c[t].item() == pytest.approx(var.item(), rel=1e-10)
        assert sched.b[t].item() == pytest.approx(coef_z.item(), rel=1e-10)
        assert sched.a[t].item() == pytest.approx(coef_u.item(), rel=1e-10)


@pytest.mark.parametrize("kwargs", [dict(T=0), dict(T=10, alpha_bar_min=0.0), dict(T=10, alpha_bar_max=1.0),
                                    dict(T=10, alpha_bar_min=0.5, alpha_bar_max=0.4)])
def test_bad_schedule_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        cosine_alpha_bar(**kwargs)
