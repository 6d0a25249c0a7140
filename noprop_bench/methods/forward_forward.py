"""Forward-Forward (Hinton 2022, arXiv 2212.13345, section 3.3: supervised MNIST), in its original
fully connected form. Each layer is trained at every step by its own logistic loss on the "goodness"
of its activities; no gradient crosses a layer.

  input      the image's intensities in [0, 1] (flattened) with its first m values replaced by the label's
             one-hot code (m = number of classes; MNIST's first pixels are border), then length-normalised
  layer l    h_l = relu(W_l n(h_{l-1}).detach() + b_l),   n(v) = v / rms(v)
  goodness   g_l = sum_j h_lj^2,   p(positive) = sigmoid(g_l - theta),   theta = units in the layer
  loss       sum_l mean_batch [ softplus(theta - g_l(positive)) + softplus(g_l(negative) - theta) ]
  positive   the image with its label; negative: the same image with a wrong label, drawn "hard" (in
             proportion to the readout's probabilities, the true class excluded: the paper's hard
             negatives) or uniformly ("random")
  readout    a linear softmax on n(h_l) of layers 2..L for the neutral label (1/m in each label value),
             trained by its own cross-entropy on detached activities
  peer norm  each unit's running mean activity (momentum 0.9) pulled towards its layer's mean, weight
             `peer_norm` (Hinton's code: 0.03)
Prediction (solvers): "goodness" runs each label in turn and picks the highest summed goodness of
layers 2..L (the paper's better method); "softmax" runs the readout on one neutral pass.

Budget (the paper): 4 hidden layers of 2000 ReLUs, 60 epochs, 1.36 % test error. The paper gives no
optimiser settings; OUR CHOICES follow the public reproduction that reaches 1.45 % (loeweX/Forward-Forward:
SGD, momentum 0.9, lr 1e-3, weight decay 3e-4, batch 100) and Hinton's code (the learning rate decays
linearly to zero over the second half, `lr_schedule = cooldown`).

`forward-forward-conv` is a VARIANT, not Hinton's network: the same losses on NoProp's three-convolution
image path (each conv layer an FF layer), with the goodness of a feature map taken per position (the sum
of squares over channels, theta = channels) and averaged over positions, and the label's one-hot code
given as m constant input planes beside the image's channels, so that every position of the shared
filters sees it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from noprop_bench.methods import catalog
from noprop_bench.methods.base import Method, MethodConfig
from noprop_bench.methods.optim import ScheduledOptimizer

NEGATIVES = ("hard", "random")


@dataclass
class FFConfig(MethodConfig):
    batch_size: int = 100
    epochs: int = 60
    optimizer: str = "sgd"
    lr: float = 1e-3
    weight_decay: float = 3e-4
    momentum: float = 0.9
    lr_schedule: str = "cooldown"   # "cooldown": constant, then linear decay to 0 over the second half; "constant"
    timesteps: int = 4              # hidden layers L
    hidden: int = 2000              # units per layer
    negatives: str = "hard"         # wrong labels drawn by the model ("hard", the paper's) or "random"
    peer_norm: float = 0.03         # weight of the peer-normalisation term (0: off)

    def validate(self) -> None:
        super().validate()
        if self.negatives not in NEGATIVES:
            raise ValueError(f"config 'negatives' must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.timesteps < 2:
            raise ValueError(f"config 'timesteps' (hidden layers) must be at least 2: the goodness of layers 2..L "
                             f"classifies, got {self.timesteps}")
        if self.embedding != "one-hot":
            raise ValueError("Forward-Forward writes the label's one-hot code into the input; use --embeddings one-hot")
        if self.peer_norm < 0:
            raise ValueError(f"config 'peer_norm' must be >= 0, got {self.peer_norm!r}")
        if self.lr_schedule not in ("cooldown", "constant"):
            raise ValueError(f"config 'lr_schedule' must be cooldown or constant, got {self.lr_schedule!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"config 'momentum' must be in [0, 1), got {self.momentum!r}")


def length_normalise(h: torch.Tensor) -> torch.Tensor:
    """h / rms(h) over every dimension but the batch (Hinton's ffnormrows)."""
    return h / h.pow(2).mean(dim=tuple(range(1, h.ndim)), keepdim=True).add(1e-8).sqrt()


class ForwardForward(Method):
    label_embeddings = ("one-hot",)
    name = "forward-forward"
    summary = catalog.summary("forward-forward")
    default_solver = "goodness"
    solvers = ("goodness", "softmax")
    stochastic = False
    Config = FFConfig

    def __init__(self, spec, config: FFConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.m = spec.num_classes
        self.layers = self.build_layers(spec, config)
        self.register_buffer("pixel_mean", torch.zeros(1, spec.image_shape[0], 1, 1))  # set below from `train`
        self.register_buffer("pixel_std", torch.ones(1, spec.image_shape[0], 1, 1))
        with torch.no_grad():  # each layer's output shape: its units (theta) and channels (peer norm)
            shapes = [a.shape[1:] for a in self.activities(torch.zeros(1, *spec.image_shape), torch.zeros(1, self.m))]
        self.theta = [float(s[0]) if len(s) == 3 else float(s.numel()) for s in shapes]  # conv: channels (below)
        self.readout = nn.Linear(sum(torch.Size(s).numel() for s in shapes[1:]), self.m)
        for i, s in enumerate(shapes):
            self.register_buffer(f"mean_activity_{i}", torch.full((s[0],), 0.5))
        self.batches_per_epoch = -(-len(train) // config.batch_size) if train is not None else None
        # the paper feeds pixel intensities in [0, 1]: the harness's standardisation is undone
        if train is not None:
            self.pixel_mean.copy_(train._mean.reshape(self.pixel_mean.shape))
            self.pixel_std.copy_(train._std.reshape(self.pixel_std.shape))
        self.to(self.device)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The images as intensities in [0, 1] (x is standardised by the data pipeline)."""
        return x * self.pixel_std + self.pixel_mean

    def build_layers(self, spec, config) -> nn.ModuleList:
        widths = [spec.image_dim] + [config.hidden] * config.timesteps
        return nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def embed_label(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The flattened image (intensities in [0, 1]) with its first m values replaced by `code` [B, m]."""
        flat = self.pixels(x).flatten(1).clone()
        flat[:, :self.m] = code
        return flat

    def activities(self, x: torch.Tensor, code: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's activities for the label code, each layer's input detached (no gradient crosses)."""
        h, out = length_normalise(self.embed_label(x, code)), []
        for layer in self.layers:
            h = F.relu(layer(h.detach()))
            out.append(h)
            h = length_normalise(h)
        return out

    @staticmethod
    def goodness(h: torch.Tensor) -> torch.Tensor:
        """Sum of squared activities; for a feature map, per position, averaged over positions (so that its
        scale, and theta, do not grow with the map's size)."""
        if h.ndim == 4:
            return h.pow(2).sum(1).mean((1, 2))
        return h.pow(2).sum(1)

    def readout_logits(self, acts: list[torch.Tensor]) -> torch.Tensor:
        return self.readout(torch.cat([length_normalise(h).flatten(1).detach() for h in acts[1:]], dim=1))

    def neutral(self, n: int, device) -> torch.Tensor:
        return torch.full((n, self.m), 1.0 / self.m, device=device)

    def loss(self, x, y, stage=None):
        onehot = F.one_hot(y, self.m).float()
        logits = self.readout_logits(self.activities(x, self.neutral(len(y), x.device)))
        ce = F.cross_entropy(logits, y)
        if self.config.negatives == "hard":
            probs = logits.detach().softmax(1).masked_fill(onehot.bool(), 0.0) + 1e-8 * (1 - onehot)
            wrong = torch.multinomial(probs, 1).squeeze(1)
        else:
            wrong = (y + torch.randint(1, self.m, y.shape, device=y.device)) % self.m
        pos, neg = self.activities(x, onehot), self.activities(x, F.one_hot(wrong, self.m).float())
        ff, peer = 0.0, 0.0
        for i, (hp, hn, theta) in enumerate(zip(pos, neg, self.theta)):
            ff = ff + F.softplus(theta - self.goodness(hp)).mean() + F.softplus(self.goodness(hn) - theta).mean()
            if self.config.peer_norm:
                per_channel = hp.transpose(0, 1).flatten(1).mean(1)
                running = getattr(self, f"mean_activity_{i}")
                mean = 0.9 * running + 0.1 * per_channel
                peer = peer + (mean - mean.mean().detach()).pow(2).mean()
                running.copy_(mean.detach())
        loss = ff + ce + self.config.peer_norm * peer
        return loss, {"mse": ff.detach(), "ce": ce.detach()}

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        self.check_inference(steps, None)
        solver = solver or self.default_solver
        self.check_solver(solver)
        if solver == "softmax":
            self.last_nfe = 1
            return self.readout_logits(self.activities(x, self.neutral(len(x), x.device)))
        scores = []
        for c in range(self.m):
            code = F.one_hot(torch.full((len(x),), c, device=x.device), self.m).float()
            scores.append(sum(self.goodness(h) for h in self.activities(x, code)[1:]))
        self.last_nfe = self.m
        return torch.stack(scores, dim=1)

    def block(self):
        return self.layers[0]

    def lr_factor(self, step: int) -> float:
        """`cooldown`: constant over the first half of training, then linear decay to zero (Hinton's code)."""
        if self.config.lr_schedule == "constant" or not self.batches_per_epoch:
            return 1.0
        epoch, epochs = step // self.batches_per_epoch + 1, self.config.epochs
        return 1.0 if epoch <= epochs / 2 else 2 * (1 + epochs - epoch) / epochs

    def make_optimizer(self):
        return ScheduledOptimizer(super().make_optimizer(), self.lr_factor)

    @classmethod
    def nfe_per_image(cls, config, steps, solver) -> int:
        return 1 if solver == "softmax" else 10

    @classmethod
    def train_nfe_per_image(cls, config) -> int:
        return 3  # neutral, positive and negative passes

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Per layer: the goodness of positive and negative data, and how often it tells them apart."""
        onehot = F.one_hot(y, self.m).float()
        wrong = F.one_hot((y + 1) % self.m, self.m).float()
        rows = []
        for t, (hp, hn) in enumerate(zip(self.activities(x, onehot), self.activities(x, wrong)), start=1):
            gp, gn = self.goodness(hp), self.goodness(hn)
            rows += [{"diagnostic": "goodness_pos", "block": t, "value": gp.mean().item()},
                     {"diagnostic": "goodness_neg", "block": t, "value": gn.mean().item()},
                     {"diagnostic": "block_acc", "block": t, "z": "pos>neg", "value": 100.0 * (gp > gn).float().mean().item()}]
        return rows


@dataclass
class FFConvConfig(FFConfig):
    batch_size: int = 128
    lr: float = 1e-4                # 1e-3 diverged on digits (goodness summed over channels per position)
    lr_schedule: str = "constant"
    timesteps: int = 3  # NoProp's three conv layers
    conv_padding: int = 0


class ForwardForwardConv(ForwardForward):
    """VARIANT: Forward-Forward on NoProp's image path (three 3x3 convolutions of 32/64/128 channels, 2x2
    pools after the first and the third), each convolution an FF layer; the label code as m constant input
    planes beside the image's channels."""
    name = "forward-forward-conv"
    summary = catalog.summary("forward-forward-conv")
    Config = FFConvConfig

    def build_layers(self, spec, config) -> nn.ModuleList:
        c = spec.image_shape[0] + spec.num_classes
        return nn.ModuleList([nn.Conv2d(c, 32, 3, padding=config.conv_padding),
                              nn.Conv2d(32, 64, 3, padding=config.conv_padding),
                              nn.Conv2d(64, 128, 3, padding=config.conv_padding)])

    def embed_label(self, x, code):
        planes = code[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.cat([self.pixels(x), planes], dim=1)

    def activities(self, x, code):
        h, out = length_normalise(self.embed_label(x, code)), []
        for i, layer in enumerate(self.layers):
            h = F.relu(layer(h.detach()))
            if i in (0, 2):  # NoProp's pools
                h = F.max_pool2d(h, 2)
            out.append(h)
            h = length_normalise(h)
        return out
