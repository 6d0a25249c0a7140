"""NoProp-DT's ablations from the paper (Figure 4: the radial posterior of Eqs. 15-16; Figure 5: how an
image-sized W_Embed starts), the nonlinear-decoder variant, their suites and the report section."""
import pandas as pd
import pytest
import torch

from conftest import run
from noprop_bench.methods import equations as eq
from noprop_bench.methods.embeddings import LabelEmbedding
from noprop_bench.methods.noprop_dt import NoPropDT
from noprop_bench.methods.noprop_dt_decoder import NoPropDTDecoder
from noprop_bench.report.ablations import compute as ablations
from noprop_bench.report.load import load
from noprop_bench.run.plan import departures
from noprop_bench.run.suites import expand, load_suite
from test_report_check import write_results


def test_the_radial_posterior_is_eq_16_with_sigma_in_units_of_the_embeddings_spread():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    sigma = 0.5
    p = logits.softmax(1)
    y_tilde = p @ u
    # mean squared distance between two distinct rows: (|u0-u1|^2 + |u0-u2|^2 + |u1-u2|^2) * 2 / 6
    spread = (5.0 + 5.0 + 10.0) * 2 / 6
    want = torch.stack([-((y_tilde - u[c]) ** 2).sum(1) / (2 * sigma**2 * spread) for c in range(3)], dim=1)
    got = eq.radial_posterior(logits, u, sigma)
    assert torch.allclose(got, want, atol=1e-5)
    # the closest class embedding gets the highest probability
    assert got.argmax(1).tolist() == [int(((y_tilde[i] - u) ** 2).sum(1).argmin()) for i in range(2)]


def test_the_posterior_gives_no_gradient_through_its_spread():
    torch.manual_seed(0)
    logits, u0 = torch.randn(4, 3), torch.randn(3, 5)
    u = u0.clone().requires_grad_()
    eq.radial_posterior(logits, u, 0.7).logsumexp(1).sum().backward()
    spread = (torch.cdist(u0, u0) ** 2).sum() / 6  # a constant: the same value without its gradient
    v = u0.clone().requires_grad_()
    y = logits.softmax(1) @ v
    (-((y[:, None] - v[None]) ** 2).sum(-1) / (2 * 0.7**2 * spread)).logsumexp(1).sum().backward()
    assert torch.allclose(u.grad, v.grad, atol=1e-5)


def test_noprop_dt_scores_classes_with_the_configured_class_probability(digits):
    torch.manual_seed(0)
    cfg = NoPropDT.default_config("digits", timesteps=2, class_prob="posterior", posterior_sigma=0.25)
    m = NoPropDT(digits.spec, cfg, "cpu")
    z = torch.randn(4, m.embed.dim)
    assert torch.allclose(m.class_scores(z), eq.radial_posterior(m.head(z), m.embed.weight, 0.25))
    softmax = NoPropDT(digits.spec, NoPropDT.default_config("digits", timesteps=2), "cpu")
    assert torch.equal(softmax.class_scores(z), softmax.head(z))
    with pytest.raises(ValueError, match="config 'class_prob' must be one of softmax, posterior, got 'radial'"):
        NoPropDT.default_config("digits", class_prob="radial")
    with pytest.raises(ValueError, match="config 'posterior_sigma' must be > 0"):
        NoPropDT.default_config("digits", posterior_sigma=0.0)


@pytest.mark.parametrize("init", ["orthogonal", "random"])
def test_an_image_sized_embedding_starts_orthogonal_or_random_as_asked(init):
    torch.manual_seed(0)
    e = LabelEmbedding("prototype", 10, 784, prototype_init=init)
    w = e.weight.detach()
    assert w.shape == (10, 784) and e.is_image
    if init == "orthogonal":
        assert torch.allclose(w @ w.T, torch.eye(10), atol=1e-5)
    else:
        assert abs(w.mean().item()) < 0.05 and abs(w.std().item() - 1) < 0.05  # N(0, 1)
        assert (w.norm(dim=1) > 20).all()


def test_medoid_initialisation_still_needs_training_images():
    with pytest.raises(ValueError, match="initialised from training images"):
        LabelEmbedding("prototype", 10, 784)


def test_the_paper_settings_of_figures_4_and_5_are_the_papers_protocol_and_sigma_is_not():
    cells = expand("paper-fig4", load_suite("paper-fig4"))
    assert {c.config.class_prob for c in cells} == {"softmax", "posterior"} and len(cells) == 2 * 3 * 3 * 3
    assert all(departures(c) == () for c in cells)
    fig5 = expand("paper-fig5", load_suite("paper-fig5"))
    assert {c.config.prototype_init for c in fig5} == {"medoid", "orthogonal", "random"}
    assert all(departures(c) == () for c in fig5) and {c.embedding for c in fig5} == {"prototype"}
    changed = expand("paper-fig4", load_suite("paper-fig4"), overrides={"posterior_sigma": 1.0})
    assert all("posterior_sigma 1.0 (default 0.5)" in departures(c) for c in changed)


def test_the_decoder_variant_puts_a_tanh_decoder_after_each_block(digits):
    torch.manual_seed(0)
    m = NoPropDTDecoder(digits.spec, NoPropDTDecoder.default_config("digits", timesteps=3), "cpu").eval()
    x = digits.train.normalise(digits.train.images[:8])
    z = torch.randn(8, m.embed.dim)
    mixed = eq.expected_embedding(m.blocks[1](z, x), m.embed.weight)
    want = torch.tanh(mixed @ m.decoders[1][0].weight.T + m.decoders[1][0].bias)
    assert torch.allclose(m.denoise(2, z, x), want, atol=1e-6)
    loss, _ = m.train().loss(x, digits.train.labels[:8], 2)
    loss.backward()
    assert m.decoders[1][0].weight.grad is not None and m.decoders[0][0].weight.grad is None  # pass 2 trains D_2
    with pytest.raises(ValueError, match="cannot reach prototype rows"):
        NoPropDTDecoder.default_config("digits", embedding="prototype")
    with pytest.raises(ValueError, match="workers > 1 is block-parallel NoProp-DT's"):
        NoPropDTDecoder.default_config("digits", workers=2)


@pytest.mark.slow  # 4 epochs of the full digits set: tens of seconds
def test_the_decoder_variant_learns_on_digits(tmp_path):
    out = tmp_path / "r"
    assert run(["--suite", "quick", "--datasets", "digits", "--no-progress", "--methods", "noprop-dt-decoder",
                "--epochs", "4", "--set", "timesteps=4", "--no-memory-probe", "--no-report", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv")
    # 10 classes, chance 10 %; 42 % in the run that set this floor
    assert df["test_acc"].iloc[-1] > 25 and "method noprop-dt-decoder is not in the paper" in df["scaled"].iloc[-1]


def test_the_ablation_table_shows_each_setting_beside_the_paper_and_never_pools_configs(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    write_results(out, {"noprop-dt": [(0, [97.0]), (1, [98.0])]}, scaled="train-limit 6000 (paper: the full split)")
    write_results(out, {"noprop-dt": [(0, [96.0]), (1, [96.5])]}, scaled="train-limit 6000 (paper: the full split)",
                  config="class_prob=posterior")
    write_results(out, {"noprop-dt": [(0, [90.0])]}, scaled="train-limit 6000 (paper: the full split)",
                  config="class_prob=posterior;posterior_sigma=1.0")
    t = ablations(load(out)).set_index(["other", "setting"])
    assert t.loc[("", "softmax"), "acc"] == pytest.approx(97.5) and t.loc[("", "softmax"), "cells"] == 2
    assert t.loc[("", "posterior"), "acc"] == pytest.approx(96.25)
    assert t.loc[("posterior_sigma=1.0", "posterior"), "acc"] == pytest.approx(90.0)  # its own row
    assert t.loc[("", "posterior"), "paper"] == pytest.approx(99.46) and bool(t.loc[("", "posterior"), "approx"])
    assert not t["comparable"].any()
    one = write_results(tmp_path / "one", {"noprop-dt": [(0, [97.0])]}, config="class_prob=posterior")
    assert ablations(load(one)).empty  # one setting: nothing to compare
    assert run(["report", out]) == 0
    assert "| 4 | mnist | one-hot | - | posterior | 2 | 96.25 ± 0.25 | ≈99.46 | no (scaled) |" in (
        out / "report" / "report.md").read_text()
