"""Local learning on NoProp's blocks: each block's gradient is its own cross-entropy's, the greedy form
trains one block per pass, the decoupled form's per-block backward gives the joint gradients with less
memory, and both learn on digits."""
import pytest
import torch
import torch.nn.functional as F

from conftest import run
from noprop_bench.measure.memory import probe_training_memory
from noprop_bench.methods import METHODS, equations as eq
from noprop_bench.run.step import train_step


def make(name, digits, **kw):
    cls = METHODS[name]
    torch.manual_seed(0)
    return cls(digits.spec, cls.default_config("digits", timesteps=2, **kw))


def test_each_block_gets_exactly_its_own_cross_entropys_gradient(digits):
    model = make("local-decoupled", digits).eval()  # no dropout: the same forward twice
    x, y = next(digits.train.batches(16, shuffle=False))
    torch.manual_seed(1)
    loss, _ = model.loss(x, y)  # runs the backward passes itself
    got = [[p.grad.clone() for p in b.parameters()] for b in model.blocks]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # by hand: z_0, block 1's CE, the chain, block 2's CE on the detached z_1
    z0 = torch.randn(16, model.embed.dim)
    l1 = F.cross_entropy(model.blocks[0](z0, x), y)
    z1 = eq.mix(z0, eq.expected_embedding(model.blocks[0](z0, x).detach(), model.embed.weight), 0.5)
    l2 = F.cross_entropy(model.blocks[1](z1.detach(), x), y)
    for t, lt in enumerate((l1, l2)):
        want = torch.autograd.grad(lt, list(model.blocks[t].parameters()))
        assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got[t], want))
    assert loss == pytest.approx((l1 + l2).item(), rel=1e-5)


def test_per_block_and_joint_backward_give_the_same_gradients_and_the_first_less_memory(digits):
    grads, peaks = {}, {}
    for backward in ("per_block", "joint"):
        model = make("local-decoupled", digits, backward=backward)
        x, y = next(digits.train.batches(64, shuffle=False))
        torch.manual_seed(2)
        model.loss(x, y)
        grads[backward] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        peaks[backward] = probe_training_memory(model, model.make_optimizer(), digits.train, 64)["mem_activations_bytes"]
    assert torch.allclose(grads["per_block"], grads["joint"], atol=1e-6)
    assert peaks["per_block"] < 0.75 * peaks["joint"]  # one block's activations alive at a time, not two


def test_the_greedy_form_trains_one_block_per_pass_on_frozen_inputs(digits):
    model = make("local-greedy", digits)
    opt = model.make_optimizer()
    assert model.stages() == [1, 2]
    x, y = next(digits.train.batches(32, shuffle=False))
    before = [p.clone() for p in model.blocks[0].parameters()]
    running = model.blocks[0].path.conv  # block 1 runs forward only, in eval mode, during pass 2
    stats = [m.running_mean.clone() for m in model.blocks[0].modules() if isinstance(m, torch.nn.BatchNorm1d)]
    train_step(model, opt, x, y, 2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.blocks[0].parameters()))
    assert all(torch.equal(a, m.running_mean) for a, m in
               zip(stats, [m for m in model.blocks[0].modules() if isinstance(m, torch.nn.BatchNorm1d)]))
    assert all(p.grad is not None for p in model.blocks[1].parameters()) and running is not None


def test_learned_embeddings_are_refused():
    with pytest.raises(ValueError, match="learned dim20 W_Embed would get no gradient"):
        METHODS["local-greedy"].default_config("mnist", embedding="dim20")


@pytest.mark.parametrize("name", ["local-greedy", "local-decoupled"])
def test_it_learns_on_digits(tmp_path, name):
    import pandas as pd
    out = tmp_path / "r"
    assert run(["--suite", "quick", "--datasets", "digits", "--methods", name, "--set", "timesteps=3", "--epochs", "4",
                "--no-progress", "--no-report", "--no-memory-probe", "--out", out]) == 0
    acc = pd.read_csv(out / "results.csv")["test_acc"].iloc[-1]
    assert acc > 60  # 10 classes: chance is 10 %
