"""Learned embeddings in NoProp-DT: dim20 row norms and W_Embed's optimiser state."""
import pytest
import torch

from noprop_bench.run.step import train_step

from noprop_bench.data import get_spec
from noprop_bench.methods import get_method
from noprop_bench.methods.noprop_dt import PerPassEmbeddingOptimizer


def _dt(dataset="digits", **kw):
    torch.manual_seed(0)
    cls = get_method("noprop-dt")
    return cls(get_spec(dataset), cls.default_config(dataset, **kw))


@pytest.mark.parametrize("method", ["noprop-dt", "backprop"])
def test_dim20_rows_unit_rescales_cifar100_rows_to_norm_one(method):
    cls = get_method(method)
    spec = get_spec("cifar100")
    norms = {}
    for rows in ("paper", "unit"):
        torch.manual_seed(0)
        model = cls(spec, cls.default_config("cifar100", embedding="dim20", timesteps=1, dim20_rows=rows))
        norms[rows] = model.embed.weight.detach().norm(dim=1)
    assert norms["paper"].mean().item() == pytest.approx(20 ** 0.5, rel=0.15)  # N(0, 1) rows in R^20
    assert torch.allclose(norms["unit"], torch.ones(100))


def test_dim20_rows_unit_leaves_orthogonal_rows_as_they_are():
    torch.manual_seed(0)
    paper = _dt(embedding="dim20", timesteps=1).embed.weight.detach()
    torch.manual_seed(0)
    unit = _dt(embedding="dim20", timesteps=1, dim20_rows="unit").embed.weight.detach()
    assert torch.allclose(paper, unit, atol=1e-6)


def _first_embed_step_of_pass_2(embed_state):
    """Train pass 1 for a few steps, then take pass 2's first step: W_Embed's move and pass 2's gradient."""
    model = _dt(embedding="dim20", timesteps=2, embed_state=embed_state)
    opt = model.make_optimizer()
    x, y = torch.randn(16, 1, 16, 16), torch.arange(16) % 10
    for _ in range(3):
        train_step(model, opt, x, y, 1)
    before = model.embed.weight.detach().clone()
    grads = []
    hook = model.embed.weight.register_post_accumulate_grad_hook(lambda p: grads.append(p.grad.clone()))
    train_step(model, opt, x, y, 2)  # names the pass to the optimiser, as the runner does
    hook.remove()
    grad = grads[-1]
    return opt, model.embed.weight.detach() - before, grad, before


def test_per_pass_state_gives_each_pass_its_own_adam_moments():
    opt, moved, grad, before = _first_embed_step_of_pass_2("per_pass")
    assert isinstance(opt, PerPassEmbeddingOptimizer)
    embed = opt.method.embed.weight
    assert embed not in opt.main.state
    assert opt.per_pass[1].state[embed]["step"].item() == 3 and opt.per_pass[2].state[embed]["step"].item() == 1
    # a fresh AdamW state's first step: -lr sign(g) (bias-corrected m / sqrt(v)), after decoupled decay
    lr, wd = 1e-3, 1e-3
    expected = -lr * wd * before - lr * grad.sign() * (grad.abs() / (grad.abs() + 1e-8))
    assert torch.allclose(moved, expected, atol=1e-6)
    # with one shared state, pass 1's moments still steer pass 2's first step
    _, moved_shared, grad_shared, before_shared = _first_embed_step_of_pass_2("shared")
    fresh = -lr * wd * before_shared - lr * grad_shared.sign() * (grad_shared.abs() / (grad_shared.abs() + 1e-8))
    assert not torch.allclose(moved_shared, fresh, atol=1e-6)


def test_embed_state_is_validated_and_a_no_op_for_fixed_embeddings():
    with pytest.raises(ValueError, match="config 'embed_state' must be one of shared, per_pass, got 'global'"):
        get_method("noprop-dt").default_config("mnist", embed_state="global")
    with pytest.raises(ValueError, match="config 'dim20_rows' must be one of paper, unit, got 'norm'"):
        get_method("noprop-dt").default_config("mnist", dim20_rows="norm")
    model = _dt(timesteps=2, embed_state="per_pass")  # one-hot: W_Embed is not trained
    assert isinstance(model.make_optimizer(), torch.optim.AdamW)
