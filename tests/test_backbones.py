"""ResNet backbones and crop/flip augmentation: recorded keys, never the default, refused in paper suites,
exercised on small inputs."""
import csv

import pytest
import torch

from conftest import TINY, run
from noprop_bench.data import get_spec
from noprop_bench.data.augment import PAD, augment
from noprop_bench.methods import get_method
from noprop_bench.run.suites import expand, load_suite


def build(method, dataset, **config):
    cls = get_method(method)
    return cls(get_spec(dataset), cls.default_config(dataset, **config), "cpu")


@pytest.mark.parametrize("method", ["noprop-dt", "noprop-ct", "backprop"])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_resnet18_model_trains_a_step_and_predicts_on_small_images(method, dataset):
    model = build(method, dataset, backbone="resnet18", timesteps=2)
    spec = get_spec(dataset)
    encoder = model.block().path.conv
    assert encoder.conv1.in_channels == spec.image_shape[0] and isinstance(encoder.fc, torch.nn.Identity)
    assert model.block().path.flat == 512
    x, y = torch.randn(4, *spec.image_shape), torch.tensor([0, 1, 2, 3])
    before = encoder.conv1.weight.detach().clone()
    model.train()
    loss, _ = model.loss(x, y, model.stages()[0])
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss) and not torch.equal(before, encoder.conv1.weight)  # the ResNet is trained
    model.eval()
    with torch.no_grad():
        assert model.predict(x, None, None).shape == (4, spec.num_classes)


@pytest.mark.parametrize("backbone, features", [("resnet50", 2048), ("resnet152", 2048)])
def test_the_deeper_resnets_give_their_pooled_features_on_mnist(backbone, features):
    model = build("noprop-ct", "mnist", backbone=backbone)
    assert model.block().path.flat == features
    model.eval()
    with torch.no_grad():
        assert model.block().path.conv(torch.randn(2, 1, 28, 28)).shape == (2, features)


def test_the_paper_network_stays_the_default_and_a_resnet_makes_the_block_larger():
    paper = build("noprop-dt", "mnist")
    resnet = build("noprop-dt", "mnist", backbone="resnet18")
    assert paper.config.backbone == "paper" and paper.config.augment == "none"
    count = lambda m: sum(p.numel() for p in m.block().parameters())  # noqa: E731
    assert 0.9e6 < count(paper) < 0.95e6 and count(resnet) > 11e6  # Table 5's 0.92 M; ResNet-18's 11 M


def test_crop_moves_each_image_by_at_most_the_padding_and_flip_mirrors():
    images = torch.arange(3 * 10 * 10, dtype=torch.uint8).view(3, 1, 10, 10).repeat(50, 1, 1, 1)
    torch.manual_seed(1)
    cropped = augment(images, "crop")
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    for src, out in zip(images, cropped):
        # the crop is a shifted window of the zero-padded image: find the shift it used
        padded = torch.nn.functional.pad(src, (PAD,) * 4)
        shifts = [(dy, dx) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)
                  if torch.equal(padded[:, dy:dy + 10, dx:dx + 10], out)]
        assert shifts
    assert len({tuple(c.flatten()[:5].tolist()) for c in cropped}) > 10  # offsets differ across images
    torch.manual_seed(2)
    flipped = augment(images, "crop-flip")
    mirrored = sum(not any(torch.equal(torch.nn.functional.pad(s, (PAD,) * 4)[:, dy:dy + 10, dx:dx + 10], o)
                           for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1))
                   for s, o in zip(images, flipped))
    assert 0.3 * len(images) < mirrored < 0.7 * len(images)  # about half are mirrored crops


def test_augmentation_follows_the_seed_and_none_is_the_batch_itself():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    assert augment(images, "none") is images
    torch.manual_seed(5)
    a = augment(images, "crop-flip")
    torch.manual_seed(5)
    assert torch.equal(a, augment(images, "crop-flip")) and not torch.equal(a, images)


def test_backbone_and_augment_are_recorded_in_every_row_and_make_the_cell_scaled(tmp_path):
    out = tmp_path / "r"
    assert run(["--suite", "quick", *TINY, "--train-limit", "64", "--test-limit", "32", "--methods", "backprop",
                "--epochs", "1", "--set", "timesteps=2",
                "--set", "backbone=resnet18", "--set", "augment=crop-flip", "--no-report", "--no-memory-probe",
                "--out", out]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all("augment=crop-flip" in r["config"] and "backbone=resnet18" in r["config"] for r in rows)
    assert all("backbone resnet18" in r["scaled"] and "augment crop-flip" in r["scaled"] for r in rows)
    assert all(float(r["params_per_block"]) > 11e6 for r in rows)


@pytest.mark.parametrize("key, value", [("backbone", "resnet18"), ("augment", "crop")])
@pytest.mark.parametrize("suite", ["paper-table1", "paper-fig4"])
def test_paper_suites_refuse_a_resnet_or_augmentation(suite, key, value):
    with pytest.raises(ValueError, match=f"'{suite}' reproduces the paper, which never ran {key}={value}"):
        expand(suite, load_suite(suite), {key: value})


def test_a_paper_suite_refusal_is_one_line_and_exit_2(tmp_path, capsys):
    assert run(["--suite", "paper-table1", "--set", "augment=crop", "--dry-run", "--out", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never ran augment=crop" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("key, value, message", [("backbone", "vgg", "'backbone' must be one of paper, resnet18"),
                                                 ("augment", "mixup", "'augment' must be one of none, crop")])
def test_an_unknown_backbone_or_augmentation_is_named(key, value, message):
    cls = get_method("noprop-dt")
    with pytest.raises(ValueError, match=message):
        cls.default_config("mnist", **{key: value})
