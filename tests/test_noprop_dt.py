"""NoProp-DT and the back-prop baseline against hand-computed cases of Eqs. 3, 8 and 17-19."""
import math

import pytest
import torch
from torch import nn

import itertools

from noprop_bench.run.step import training_steps
from noprop_bench.methods import METHODS
from noprop_bench.methods.equations import kl_to_prior as kl_to_standard_normal
from noprop_bench.methods.noprop_dt import NoPropDT
from noprop_bench.methods.schedules import cosine_alpha_bar


class ZeroLogits(nn.Module):
    """Stands in for a block: uniform softmax, so u_hat is the mean class embedding."""

    def forward(self, z, x):
        return torch.zeros(len(x), 10)


def make(cls, spec, digits, **overrides):
    return cls(spec, cls.default_config("digits", **overrides), "cpu", train=digits.train)


def test_kl_matches_torch_distributions():
    u = torch.randn(5, 7)
    ab0 = torch.tensor(0.03)
    q = torch.distributions.Normal(ab0.sqrt() * u, (1 - ab0).sqrt())
    p = torch.distributions.Normal(torch.zeros_like(u), torch.ones_like(u))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(kl_to_standard_normal(u, ab0), expected, atol=1e-6)


@pytest.mark.parametrize("t", [1, 5, 10])
def test_dt_loss_on_a_hand_computed_case(digits, t):
    """Zero logits give u_hat = (1/10, ..., 1/10); a zero head gives CE = log 10; one-hot u_y has ||u||=1."""
    m = make(NoPropDT, digits.spec, digits)
    m.blocks = nn.ModuleList(ZeroLogits() for _ in range(10))
    nn.init.zeros_(m.head.weight), nn.init.zeros_(m.head.bias)
    x, y = next(digits.train.batches(16, shuffle=False))
    loss, terms = m.loss(x, y, t)

    ab = cosine_alpha_bar(10).tolist()  # float64, independent of the module's float32 buffers
    ab0 = ab[0]
    kl = 0.5 * (ab0 * 1 - 10 * ab0 - 10 * math.log(1 - ab0))
    mse = (1 - 0.1) ** 2 + 9 * 0.1 ** 2                  # ||u_hat - e_y||^2 = 0.9
    snr = lambda s: ab[s] / (1 - ab[s])
    weight = 10 / 2 * 0.1 * (snr(t) - snr(t - 1))         # (T/2) eta (SNR(t) - SNR(t-1))
    assert terms["ce"].item() == pytest.approx(math.log(10), rel=1e-6)
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["mse"].item() == pytest.approx(mse, rel=1e-6)
    assert loss.item() == pytest.approx(math.log(10) + kl + weight * mse, rel=1e-5)


def test_dt_block_input_is_a_sample_of_q_z_t_minus_1_given_y(digits):
    """Block t sees z_{t-1} ~ N(sqrt(ab_{t-1}) u_y, 1 - ab_{t-1}); the head sees z_T ~ q(z_T | y)."""
    m = make(NoPropDT, digits.spec, digits)
    seen = {}

    class Spy(ZeroLogits):
        def forward(self, z, x):
            seen["z"] = z.clone()
            return super().forward(z, x)
    m.blocks[2] = Spy()
    x, y = next(digits.train.batches(1000, shuffle=False))
    y = torch.zeros_like(y)  # every label 0: u_y = e_0
    m.loss(x, y, 3)
    z, ab = seen["z"], m.alpha_bar[2].item()
    expected_mean = torch.zeros(10); expected_mean[0] = math.sqrt(ab)
    assert torch.allclose(z.mean(0), expected_mean, atol=0.1)
    assert torch.allclose(z.var(0), torch.full((10,), 1 - ab), atol=0.12)


def test_dt_inference_follows_eq_3(digits):
    m = make(NoPropDT, digits.spec, digits).eval()
    x, _ = next(digits.test.batches(8, shuffle=False))
    torch.manual_seed(7)
    scores = m.predict(x)
    torch.manual_seed(7)
    with torch.no_grad():
        z = torch.randn(8, 10)  # z_0 ~ N(0, I)
        for t in range(1, 11):
            u_hat = m.blocks[t - 1](z, x).softmax(1) @ torch.eye(10)
            z = m.a[t] * u_hat + m.b[t] * z + m.c[t].sqrt() * torch.randn_like(z)
        expected = m.head(z)
    assert torch.allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("embedding", ["one-hot", "dim20"])
def test_dt_pass_t_updates_only_block_t_head_and_embedding(digits, embedding):
    m = make(NoPropDT, digits.spec, digits, embedding=embedding)
    m.stages = lambda: [4]  # one pass, for block 4 only
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    list(itertools.islice(training_steps(m, m.make_optimizer(), digits.train, 256), digits.train.num_batches(256)))
    after = m.state_dict()
    changed = {k for k in before if not torch.allclose(before[k], after[k], rtol=0, atol=0, equal_nan=True)}
    assert any(k.startswith("blocks.3.") for k in changed)
    assert {"head.weight", "head.bias"} <= changed
    assert all(k.startswith(("blocks.3.", "head.", "embed.")) for k in changed), sorted(changed)
    assert ("embed.weight" in changed) == (embedding == "dim20")  # one-hot W_Embed is fixed


def test_backprop_chain_follows_eqs_17_to_19(digits):
    m = make(METHODS["backprop"], digits.spec, digits)
    m.blocks = nn.ModuleList(ZeroLogits() for _ in range(10))
    with torch.no_grad():
        m.w.copy_(torch.linspace(0.1, 1.0, 10))
    x, _ = next(digits.test.batches(4, shuffle=False))
    torch.manual_seed(3)
    scores = m.predict(x)
    torch.manual_seed(3)
    z = torch.randn(4, 10)
    for a in torch.tanh(torch.linspace(0.1, 1.0, 10)):
        z = (1 - a) * z + a * torch.full((4, 10), 0.1)  # u_hat = mean one-hot embedding
    assert torch.allclose(scores, m.head(z), atol=1e-6)


def test_backprop_gradient_reaches_every_block_noprop_does_not(digits):
    x, y = next(digits.train.batches(32, shuffle=False))
    bp = make(METHODS["backprop"], digits.spec, digits).train()
    bp.loss(x, y, None)[0].backward()
    assert all(p.grad is not None for p in bp.blocks.parameters())
    assert bp.w.grad is not None
    dt = make(NoPropDT, digits.spec, digits).train()
    dt.loss(x, y, 2)[0].backward()
    graded = {i for i, b in enumerate(dt.blocks) if any(p.grad is not None for p in b.parameters())}
    assert graded == {1}
