"""One contract test per registered method x embedding, and the config rules every method shares."""
import math

import pytest
import torch

from noprop_bench.methods import EMBEDDINGS, METHODS, get_method
from noprop_bench.data import PAPER_DATASETS


@pytest.mark.parametrize("embedding", EMBEDDINGS)
@pytest.mark.parametrize("name", METHODS)
def test_contract(digits, name, embedding):
    cls = METHODS[name]
    small = {"timesteps": 4} if cls.continuous else {}  # integration steps; DT keeps the paper's T
    if embedding not in cls.label_embeddings:  # refused before anything is built, with the fix named
        with pytest.raises(ValueError, match="--embeddings"):
            cls.default_config("digits", embedding=embedding, epochs=1, **small)
        return
    config = cls.default_config("digits", embedding=embedding, epochs=1, **small)
    m = cls(digits.spec, config, "cpu", train=digits.train)
    opt = m.make_optimizer()
    m.train()
    stages = m.stages()
    assert len(stages) == cls.num_stages(config)
    x, y = next(digits.train.batches(32, shuffle=True))
    for stage in stages[:2]:
        opt.zero_grad(set_to_none=True)
        loss, terms = m.loss(x, y, stage)
        assert loss.ndim == 0 and math.isfinite(loss.item())
        assert all(v.ndim == 0 and not v.requires_grad for v in terms.values())
        if m.owns_backward:  # its blocks ran their own backward passes inside loss()
            assert not loss.requires_grad and any(p.grad is not None for p in m.parameters())
        else:
            loss.backward()
        opt.step()
    m.eval()
    for steps, solver in [m.default_setting(m.config)]:
        scores = m.predict(x, steps=steps, solver=solver)
        assert scores.shape == (32, digits.spec.num_classes) and torch.isfinite(scores).all()
    counts = m.param_counts()
    assert 0 < counts["params_trainable"] <= counts["params_total"]
    expected_dim = {"one-hot": 10, "dim20": 20, "prototype": digits.spec.image_dim}[embedding]
    if hasattr(m, "embed"):  # Forward-Forward writes the label into its input and has no W_Embed
        assert m.embed.dim == expected_dim


# DiffusionBlocks' sampler runs any number of noise levels (default: one per block); the others run their T blocks
DISCRETE = [n for n, c in METHODS.items() if not c.continuous and not issubclass(c, METHODS["diffusion-blocks"])]
CONTINUOUS = [n for n, c in METHODS.items() if c.continuous]


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_methods_reject_step_counts_and_solvers_clearly(digits, name):
    m = METHODS[name](digits.spec, METHODS[name].default_config("digits"), "cpu").eval()
    x, _ = next(digits.test.batches(4, shuffle=False))
    T = m.config.timesteps
    with pytest.raises(ValueError, match=f"runs exactly {T} steps; steps={T + 1} is not possible"):
        m.predict(x, steps=T + 1)
    with pytest.raises(ValueError, match="solver='rk4' is not available|has no solver 'rk4'; valid solvers"):
        m.predict(x, solver="rk4")
    assert m.predict(x, steps=T).shape == (4, 10)


# Table 3 of the paper, verbatim: (batch, epochs MNIST/CIFAR-10/CIFAR-100, optimiser, lr, wd, T, eta)
TABLE3 = {
    "backprop": (128, (100, 150, 150), "adamw", 1e-3, 1e-3, 10, None),
    "noprop-dt": (128, (100, 150, 150), "adamw", 1e-3, 1e-3, 10, 0.1),
    "adjoint": (128, (2, 4, 4), "adamw", 1e-3, 1e-3, 1000, None),
    "noprop-ct": (128, (100, 500, 1000), "adam", 1e-3, 1e-3, 1000, 1.0),
    "noprop-fm": (128, (100, 500, 1000), "adam", 1e-3, 1e-3, 1000, None),
    "backprop-ode": (128, (2, 4, 4), "adamw", 1e-3, 1e-3, 1000, None),  # no paper row: the adjoint's
    "noprop-ct-reweighted": (128, (100, 500, 1000), "adam", 1e-3, 1e-3, 1000, 1.0),  # a variant: CT's
    "noprop-dt-decoder": (128, (100, 150, 150), "adamw", 1e-3, 1e-3, 10, 0.1),  # a variant: DT's
}


def test_every_noprop_method_and_baseline_has_its_table3_row():
    assert {n for n in METHODS if n.startswith(("noprop", "backprop", "adjoint"))} == set(TABLE3)


@pytest.mark.parametrize("name", TABLE3)
def test_table3_defaults(name):
    """Table 3's rows for MNIST, CIFAR-10 and CIFAR-100; Tiny ImageNet (v2, no row of its own) borrows
    CIFAR-100's, Fashion-MNIST MNIST's."""
    batch, epochs, optimizer, lr, wd, T, eta = TABLE3[name]
    configs = [METHODS[name].default_config(d) for d in ("mnist", "cifar10", "cifar100")]
    assert tuple(c.epochs for c in configs) == epochs
    for c in configs:
        assert (c.batch_size, c.optimizer, c.lr, c.weight_decay, c.timesteps) == (batch, optimizer, lr, wd, T)
        assert getattr(c, "eta", None) == eta
    assert METHODS[name].default_config("fashion-mnist") == configs[0]
    assert METHODS[name].default_config("tiny-imagenet") == configs[2]


def test_unknown_config_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) learning_rate .* valid keys: .*\blr\b"):
        METHODS["noprop-dt"].default_config("mnist", learning_rate=0.1)


@pytest.mark.parametrize("key,value,message", [
    ("lr", 0.0, "'lr' must be > 0"), ("epochs", 0, "'epochs' must be a positive integer"),
    ("batch_size", 1.5, "'batch_size' expects an integer"), ("embedding", "dim=20", "valid embeddings"),
    ("optimizer", "rmsprop", "unknown optimizer 'rmsprop'; valid: adamw, adam, sgd"), ("eta", -1.0, "'eta' must be >= 0"),
])
def test_bad_config_values_are_rejected(key, value, message):
    with pytest.raises(ValueError, match=message):
        METHODS["noprop-dt"].default_config("mnist", **{key: value})


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'dfa'; valid methods: " + ", ".join(METHODS)):
        get_method("dfa")


def test_prototype_embedding_starts_at_the_class_medoids(digits):
    m = METHODS["noprop-dt"](digits.spec, METHODS["noprop-dt"].default_config("digits", embedding="prototype"),
                             "cpu", train=digits.train)
    x = digits.train.normalise(digits.train.images).flatten(1)
    for c in (0, 7):
        xc = x[digits.train.labels == c]
        d = torch.cdist(xc, xc)
        n = len(xc)
        medians = torch.stack([d[i][torch.arange(n) != i].median() for i in range(n)])
        assert torch.equal(m.embed.weight[c], xc[medians.argmin()])


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "cifar100"])
@pytest.mark.parametrize("name", METHODS)
def test_every_method_builds_and_runs_on_every_dataset_shape(name, dataset):
    from noprop_bench.data import DATASETS
    spec = DATASETS[dataset]
    cls = METHODS[name]
    small = {"timesteps": 2} if cls.continuous else {}
    m = cls(spec, cls.default_config(dataset, **small), "cpu")
    x, y = torch.randn(4, *spec.image_shape), torch.arange(4) % spec.num_classes
    loss, _ = m.loss(x, y, m.stages()[-1])
    if not m.owns_backward:
        loss.backward()
    assert m.eval().predict(x).shape == (4, spec.num_classes)
