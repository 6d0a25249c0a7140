"""NoProp-CT-reweighted: Eq. 9 with only the weight on the denoising term changed, under its own name."""
import pytest
import torch

from noprop_bench.methods import equations as eq

from noprop_bench.data import get_spec
from noprop_bench.methods import get_method

T = torch.tensor([0.0, 0.01, 0.3, 0.5, 0.7, 0.99, 1.0])


def _make(name, seed=0, **kw):
    torch.manual_seed(seed)
    cls = get_method(name)
    return cls(get_spec("digits"), cls.default_config("digits", timesteps=5, **kw))


def test_paper_ct_weight_is_snr_slope():
    model = _make("noprop-ct")
    _, snr_slope = model.schedule.snr_and_slope(T)
    assert torch.equal(model.mse_weight(*model.schedule.gamma_and_slope(T)), snr_slope)


@pytest.mark.parametrize("weighting", ["sigmoid", "logsnr"])
def test_weights_are_the_documented_functions_of_the_schedule(weighting):
    model = _make("noprop-ct-reweighted", weighting=weighting)
    snr, snr_slope = model.schedule.snr_and_slope(T)
    _, gamma_slope = model.schedule.gamma_and_slope(T)
    expected = snr_slope / (1 + snr) if weighting == "sigmoid" else -gamma_slope
    weight = model.mse_weight(*model.schedule.gamma_and_slope(T))
    assert torch.allclose(weight, expected, rtol=1e-5)
    assert (weight > 0).all()


def test_sigmoid_weighting_keeps_eq9_where_snr_is_small_and_caps_it_where_large():
    """On endpoints +-7 (SNR from e^-7 to e^7) the ratio to Eq. 9's weight is 1/(1 + SNR): ~1, then ~1e-3."""
    model = _make("noprop-ct-reweighted", weighting="sigmoid", gamma_0=-7.0, gamma_1=7.0)
    snr, snr_slope = model.schedule.snr_and_slope(T)
    ratio = model.mse_weight(*model.schedule.gamma_and_slope(T)) / snr_slope
    assert ratio[0].item() == pytest.approx(1.0, abs=2e-3)      # SNR(0) ~ e^-7
    assert ratio[-1].item() == pytest.approx(1 / (1 + snr[-1].item()), rel=1e-4)  # SNR(1) ~ e^7
    assert ratio[-1].item() < 1e-2


def test_only_the_weight_differs_from_the_paper_loss():
    """Same parameters, same random draws: CE, KL and the per-example denoising error are the paper's;
    the total differs by exactly the reweighted term."""
    paper, variant = _make("noprop-ct", seed=3), _make("noprop-ct-reweighted", seed=3)
    variant.load_state_dict(paper.state_dict())
    x, y = torch.randn(16, 1, 16, 16), torch.arange(16) % 10
    out = []
    for model in (paper, variant):
        torch.manual_seed(7)
        out.append(model.loss(x, y))
    (loss_p, terms_p), (loss_v, terms_v) = out
    for key in ("ce", "kl", "mse"):
        assert torch.equal(terms_p[key], terms_v[key])
    assert not torch.isclose(loss_p, loss_v)
    # the variant's own total from its weight: rebuild the draws and weigh them
    torch.manual_seed(7)
    u = variant.embed(y)
    t = torch.rand(len(y))
    gamma = variant.schedule.gamma(t)
    mse = (variant.denoise(eq.noised_label(u, torch.sigmoid(-gamma)), x, t) - u).pow(2).sum(1)
    rest = loss_v - 0.5 * variant.config.eta * (variant.mse_weight(*variant.schedule.gamma_and_slope(t)) * mse).mean()
    assert rest.item() == pytest.approx((terms_v["ce"] + terms_v["kl"]).item(), rel=1e-4, abs=1e-5)


def test_weighting_is_validated_and_the_paper_method_has_no_such_key():
    with pytest.raises(ValueError, match="config 'weighting' must be one of sigmoid, logsnr, got 'snr'"):
        get_method("noprop-ct-reweighted").default_config("mnist", weighting="snr")
    with pytest.raises(ValueError, match="unknown config key"):
        get_method("noprop-ct").default_config("mnist", weighting="sigmoid")
