"""The networks are the paper's: every entry of its v2 Table 5 (parameters of one block) from the blocks
we build, the image path's shapes, and the padding that is a key rather than the default."""
import pandas as pd
import pytest
import torch

from noprop_bench import paths
from noprop_bench.data import DATASETS
from noprop_bench.measure.dispatch import tiny_split
from noprop_bench.methods import METHODS
from noprop_bench.methods.nets import conv_features

with paths.resource("paper_table5.csv").open() as f:
    TABLE5 = pd.read_csv(f, comment="#")
MODEL = {"discrete": "noprop-dt", "continuous": "noprop-ct"}
MAIN = TABLE5[TABLE5["dataset"] != "tiny-imagenet"]


def block_params(method: str, dataset: str, embedding: str, **config) -> int:
    cls, spec = METHODS[method], DATASETS[dataset]
    cfg = cls.default_config(dataset, embedding=embedding, timesteps=1 if not cls.continuous else 10, **config)
    return cls(spec, cfg, "cpu", train=tiny_split(spec, 2 * spec.num_classes)).param_counts()["params_per_block"]


@pytest.mark.parametrize("model,dataset,embedding,params_m", list(MAIN.itertuples(index=False)), ids=str)
def test_one_block_has_table5s_parameters(model, dataset, embedding, params_m):
    assert len(MAIN) == 18
    assert round(block_params(MODEL[model], dataset, embedding) / 1e6, 2) == params_m


def test_the_worked_example_to_the_parameter():
    """DT block, MNIST, one-hot (reference section 14): convs 320 + 18,496 + 73,856; FC(2048->256) + BN
    525,056; label path 2,816 + 65,792 + 65,792 + three BNs 1,536; head 131,328 + 32,896 + 1,290 + BNs 768."""
    assert block_params("noprop-dt", "mnist", "one-hot") == 919_946


def test_padding_one_is_a_key_and_makes_the_blocks_about_twice_as_large():
    valid, same = (block_params("noprop-dt", "mnist", "one-hot", conv_padding=p) for p in (0, 1))
    assert 2.1 < same / valid < 2.3


@pytest.mark.parametrize("shape,padding,flat", [((1, 28, 28), 0, 2048), ((3, 32, 32), 0, 3200),
                                                 ((1, 28, 28), 1, 6272), ((3, 32, 32), 1, 8192), ((1, 16, 16), 0, 128)])
def test_flatten_sizes(shape, padding, flat):
    assert conv_features(shape, padding) == flat
    from noprop_bench.methods.nets import conv_stack
    assert conv_stack(shape[0], padding).eval()(torch.zeros(2, *shape)).shape == (2, flat)


def test_an_image_too_small_for_valid_convolutions_says_what_to_do():
    with pytest.raises(ValueError, match="too small for conv_padding=0.*--set conv_padding=1"):
        conv_features((1, 8, 8), 0)


def test_prototype_labels_have_a_conv_stack_of_their_own_unless_shared():
    own = block_params("noprop-ct", "mnist", "prototype")
    shared = block_params("noprop-ct", "mnist", "prototype", label_conv="shared")
    assert own - shared == 320 + 18_496 + 73_856  # one more conv stack
