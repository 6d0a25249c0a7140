"""The learning-pace choices: the decoder head, NoProp-CT's input and sampling keys, the
held-out evaluation split, and the diagnostics file."""
import pandas as pd
import pytest
import torch

from noprop_bench import cli as run_bench
from noprop_bench.data import DatasetSpec, get_spec, load_data
from noprop_bench.measure.diagnostics import DIAG_COLUMNS
from noprop_bench.run.results import TIMING_COLUMNS
from noprop_bench.methods import get_method
from noprop_bench.methods.noprop_ct import sample_t

TINY = ["--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]


def run(argv):
    return run_bench.main([str(a) for a in argv])


class _FakeTrain:
    """Enough of a noprop_bench.data.Split for prototype initialisation: random images, every class present."""

    def __init__(self, shape, classes, n=60):
        self.images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
        self.labels = torch.arange(n) % classes

    def normalise(self, images):
        return images.float() / 255


# --- the head --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["noprop-dt", "backprop", "noprop-ct"])
@pytest.mark.parametrize("dataset,embedding", [("mnist", "one-hot"), ("mnist", "dim20"), ("mnist", "prototype"),
                                               ("cifar100", "dim20"), ("cifar100", "one-hot")])
def test_decoder_head_decodes_every_embedding(method, dataset, embedding):
    spec = get_spec(dataset)
    cls = get_method(method)
    cfg = cls.default_config(dataset, embedding=embedding, timesteps=1)
    model = cls(spec, cfg, train=_FakeTrain(spec.image_shape, spec.num_classes))
    u = model.embed.weight.detach()
    logits = model.head(u)
    assert torch.equal(logits.argmax(1), torch.arange(spec.num_classes))
    # the mean margin between the right logit and another at a clean embedding is head_gain
    margin = (logits.diag()[:, None] - logits).sum() / (len(u) * (len(u) - 1))
    assert margin.item() == pytest.approx(cfg.head_gain, rel=1e-4)


def test_one_hot_decoder_is_gain_times_identity_up_to_a_shift():
    cls = get_method("noprop-dt")
    model = cls(get_spec("digits"), cls.default_config("digits", head_gain=3.0, timesteps=1))
    logits = model.head(torch.eye(10))
    assert torch.allclose(logits - logits.min(1, keepdim=True).values, 3.0 * torch.eye(10), atol=1e-5)


def test_methods_without_head_init_keep_pytorch_initialisation():
    cls = get_method("noprop-fm")
    assert "head_init" not in cls.config_keys()
    model = cls(get_spec("digits"), cls.default_config("digits", timesteps=1))
    assert model.head.weight.abs().max() <= 1 / 10 ** 0.5


def test_default_head_init_keeps_pytorch_initialisation():
    cls = get_method("backprop")
    torch.manual_seed(0)
    default = cls(get_spec("digits"), cls.default_config("digits", head_init="default", timesteps=1))
    torch.manual_seed(0)
    decoder = cls(get_spec("digits"), cls.default_config("digits", timesteps=1))
    assert not torch.allclose(default.head.weight, decoder.head.weight)
    assert default.head.weight.abs().max() <= 1 / 10 ** 0.5  # nn.Linear's U(-1/sqrt(in), 1/sqrt(in))
    # the blocks are untouched by the head's initialisation
    for a, b in zip(default.blocks.parameters(), decoder.blocks.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method,key,value,message", [
    ("noprop-dt", "head_init", "zeros", "head_init"),
    ("backprop", "head_gain", 0.0, "head_gain"),
    ("backprop", "head_gain", "big", "head_gain"),
    ("noprop-ct", "z_input", "both", "z_input"),
    ("noprop-ct", "time_input", "sigma", "time_input"),
    ("noprop-ct", "t_sampling", "sobol", "t_sampling"),
    ("noprop-ct", "schedule_hidden", 0, "schedule_hidden"),
    ("noprop-dt", "label_conv", "separate", "label_conv"),
])
def test_new_config_keys_are_validated(method, key, value, message):
    with pytest.raises(ValueError, match=message):
        get_method(method).default_config("mnist", **{key: value})


def test_bad_new_key_on_the_command_line_is_a_one_line_error(tmp_path, capsys):
    assert run(["--suite", "quick", *TINY, "--set", "head_init=zeros", "--out", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert "head_init" in err and "decoder" in err and "Traceback" not in err


def test_own_label_conv_reads_prototype_labels_with_its_own_filters():
    spec = get_spec("mnist")
    cls = get_method("noprop-dt")
    train = _FakeTrain(spec.image_shape, 10)
    shared = cls(spec, cls.default_config("mnist", embedding="prototype", timesteps=1, label_conv="shared"), train=train)
    own = cls(spec, cls.default_config("mnist", embedding="prototype", timesteps=1), train=train)  # the default
    block = own.blocks[0]
    assert shared.blocks[0].path.label_conv is None and block.path.label_conv is not None
    x, z = torch.randn(3, *spec.image_shape), torch.randn(3, spec.image_dim)
    block.train()
    block(z, x).sum().backward()
    first = lambda conv: conv[0].weight.grad
    assert first(block.path.label_conv).abs().sum() > 0 and first(block.path.conv).abs().sum() > 0
    # with one-hot labels the key changes nothing: there is no label image
    onehot = cls(spec, cls.default_config("mnist", timesteps=1))
    assert onehot.blocks[0].path.label_conv is None


# --- NoProp-CT's inputs and t-sampling -----------------------------------------------------------------

def test_stratified_t_covers_every_stratum_once():
    torch.manual_seed(1)
    t = sample_t(64, "stratified", "cpu")
    assert t.shape == (64,) and ((0 <= t) & (t < 1)).all()
    assert torch.equal((t * 64).floor().long().sort().values, torch.arange(64))
    # each t_i is marginally U(0, 1): over many draws the mean of one position is 1/2
    draws = torch.stack([sample_t(8, "stratified", "cpu")[3] for _ in range(4000)])
    assert draws.mean().item() == pytest.approx(0.5, abs=0.02)


def _ct(**kw):
    cls = get_method("noprop-ct")
    return cls(get_spec("digits"), cls.default_config("digits", timesteps=5, **kw)).eval()


def test_scaled_z_input_is_sqrt_alpha_bar_times_z():
    torch.manual_seed(0)
    model = _ct(z_input="scaled")
    x, z, t = torch.randn(4, 1, 16, 16), torch.randn(4, 10), torch.tensor([0.02, 0.3, 0.7, 0.99])
    ab = model.schedule.alpha_bar(t)
    assert torch.allclose(model.logits(z, x, t), model.net(ab.sqrt()[:, None] * z, x, t), atol=1e-6)


def test_gamma_time_input_feeds_the_normalised_log_snr():
    torch.manual_seed(0)
    model = _ct(time_input="gamma")
    seen = []
    model.net.register_forward_pre_hook(lambda mod, args: seen.append(args[2]))
    t = torch.tensor([0.0, 0.5, 1.0])
    model.logits(torch.randn(3, 10), torch.randn(3, 1, 16, 16), t)
    cfg = model.config
    expected = (cfg.gamma_1 - model.schedule.gamma(t)) / (cfg.gamma_1 - cfg.gamma_0)
    assert torch.allclose(seen[0], expected)
    assert seen[0][0].item() == pytest.approx(0.0, abs=1e-5) and seen[0][2].item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("method,solver", [("noprop-ct", "ancestral"), ("noprop-ct", "euler"), ("noprop-fm", "euler")])
def test_cached_image_features_give_the_uncached_predictions(method, solver):
    """Samplers compute the image path once per batch; the network recomputing it at every step must
    give the same scores."""
    cls = get_method(method)
    model = cls(get_spec("digits"), cls.default_config("digits", timesteps=4)).eval()
    x = torch.randn(6, 1, 16, 16)
    torch.manual_seed(3)
    cached = model.predict(x, solver=solver)
    forward = model.net.forward
    model.net.forward = lambda z, x, t, image=None: forward(z, x, t)  # drop the cache
    torch.manual_seed(3)
    uncached = model.predict(x, solver=solver)
    assert torch.allclose(cached, uncached, atol=1e-5)


# --- held-out evaluation ----------------------------------------------------------------------------

def test_holdout_is_disjoint_from_the_training_images():
    full = load_data("digits", "cpu")
    held = load_data("digits", "cpu", holdout=300, train_limit=500)
    assert len(held.test) == 300 and len(held.train) == 500
    flat = lambda s: {bytes(img.numpy().tobytes()) + bytes([int(y)]) for img, y in zip(s.images, s.labels)}
    assert not flat(held.train) & flat(held.test)
    assert flat(held.test) <= flat(full.train) and not flat(held.test) <= flat(full.test)
    with pytest.raises(ValueError, match="--holdout"):
        load_data("digits", "cpu", holdout=len(full.train))


def test_holdout_run_is_marked_and_scaled(tmp_path):
    out = tmp_path / "h"
    assert run(["--suite", "quick", *TINY, "--methods", "noprop-dt", "--holdout", "150", "--out", out]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["eval_split"]) == {"holdout"} and set(df["n_test"]) == {150}
    assert df["scaled"].str.contains("holdout 150").all()


# --- diagnostics ------------------------------------------------------------------------------------

DIAGNOSTICS = {
    "noprop-dt": {"pred_classes", "block_acc"},
    "backprop": {"pred_classes", "block_acc", "mix"},
    "noprop-ct": {"pred_classes", "denoise_acc", "mse", "loss_weight", "gamma"},
    "noprop-fm": {"pred_classes", "denoise_acc"},
    "adjoint": {"pred_classes"},
}


def test_diagnostics_file_schema(tmp_path):
    out = tmp_path / "d"
    assert run(["--suite", "ci", *TINY, "--methods", ",".join(DIAGNOSTICS), "--set", "epochs=1",
                "--set", "noprop-ct.timesteps=3", "--set", "noprop-fm.timesteps=3", "--set", "adjoint.timesteps=3",
                "--set", "timesteps=2", "--eval-points", "2", "--out", out]) == 0
    diag = pd.read_csv(out / "diagnostics.csv")
    results = pd.read_csv(out / "results.csv")
    assert list(diag.columns) == DIAG_COLUMNS
    for method, expected in DIAGNOSTICS.items():
        d = diag[diag.method == method]
        assert set(d["diagnostic"]) == expected, method
        # one set of diagnostics per evaluation point of the cell, at the same steps as its rows
        assert set(d["step"]) == set(results[results.method == method]["step"]) and d["step"].nunique() == 2
    assert diag.loc[diag.diagnostic == "pred_classes", "value"].between(1, 10).all()
    dt = diag[(diag.method == "noprop-dt") & (diag.diagnostic == "block_acc")]
    assert sorted(dt["block"].unique()) == [1, 2] and set(dt["z"]) == {"q"}
    ct = diag[(diag.method == "noprop-ct") & (diag.diagnostic == "denoise_acc")]
    assert set(ct["z"]) == {"q", "zero"} and ct["t"].nunique() == 10 and ct["t"].between(0, 1).all()
    assert sorted(diag.loc[(diag.method == "noprop-ct") & (diag.diagnostic == "gamma"), "t"].unique()) == [0, 1]
    acc = diag[diag.diagnostic.isin(["block_acc", "denoise_acc"])]["value"]
    assert acc.between(0, 100).all() and (diag["n"] == 100).all()


@pytest.mark.parametrize("method", ["noprop-dt", "noprop-ct"])
def test_diagnostics_leave_training_unchanged(tmp_path, method):
    frames = []
    for flag in ([], ["--no-diagnostics"]):
        out = tmp_path / ("on" if not flag else "off")
        assert run(["--suite", "ci", *TINY, "--methods", method, "--set", "epochs=2", "--set", "timesteps=3",
                    *flag, "--out", out]) == 0
        frames.append(pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS))
    pd.testing.assert_frame_equal(*frames)
    assert len(pd.read_csv(tmp_path / "on" / "diagnostics.csv")) > 0
    assert len(pd.read_csv(tmp_path / "off" / "diagnostics.csv")) == 0


def test_resume_drops_the_diagnostics_of_unfinished_cells(tmp_path):
    from noprop_bench.run.results import ResultWriter
    out = tmp_path / "r"
    assert run(["--suite", "quick", *TINY, "--methods", "noprop-dt", "--out", out]) == 0
    before = pd.read_csv(out / "diagnostics.csv")
    with open(out / "diagnostics.csv", "a") as f:
        f.write("deadbeef0000,noprop-dt,digits,one-hot,0,1,2,pred_classes,,,,3,100\n")
    ResultWriter(out)
    pd.testing.assert_frame_equal(pd.read_csv(out / "diagnostics.csv"), before)


def test_holdout_rows_are_neither_compared_with_the_paper_nor_gated(tmp_path):
    from noprop_bench.report.check import check, read_thresholds
    from noprop_bench.report.load import ReportError, load
    from noprop_bench.report.table1 import compute as table1
    out = tmp_path / "h"
    assert run(["--suite", "quick", *TINY, "--methods", "noprop-dt", "--holdout", "150", "--out", out]) == 0
    # as a suite with its own `holdout` key would write them: the suite as written
    rows = pd.read_csv(out / "results.csv")
    rows.assign(overrides="").to_csv(out / "results.csv", index=False)
    t1 = table1(load(out), 1.0)
    assert set(t1["split"]) == {"holdout"} and t1["paper"].isna().all() and not t1["flag"].any()
    thresholds = tmp_path / "t.csv"
    thresholds.write_text("suite,method,dataset,embedding,min_test_acc\nquick,noprop-dt,digits,one-hot,99\n")
    with pytest.raises(ReportError, match="no cell could be checked.*held-out") as e:
        check(out, read_thresholds(thresholds))  # a gate that checks nothing never passes
    assert "changed suite" not in str(e.value)
