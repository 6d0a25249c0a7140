"""The one interface every method implements, and the configuration it is built from.

A method is an nn.Module built as `Method(spec, config, device, train=None)` from a data set's
description (noprop_bench.data.DatasetSpec), its config (a dataclass, `Method.Config`) and a device; `train`
is the training split, needed only to initialise prototype embeddings.

Required hooks
  stages()                 the passes one epoch makes over the training data, in order. Back-prop: one
                           pass (None). NoProp-DT: T passes, one per block (Algorithm 1).
  loss(x, y, stage)        (loss, terms) for one minibatch of normalised images x and labels y. The
                           runner calls backward() and the optimiser step; whatever a stage's loss does
                           not touch keeps grad None and is left alone by the optimiser (this is how a
                           NoProp-DT pass updates only its block, the head and W_Embed). `terms` are
                           detached scalars logged as epoch means (no host sync per step).
  predict(x, steps, solver)  class scores [B, m], and sets `last_nfe` (network evaluations per image).
                           Continuous methods take any step count from 1 to 1000 and any of their
                           `solvers`; discrete methods accept steps=None or their T and solver=None or
                           their one rule, and reject anything else.
Optional hooks
  make_optimizer()         default: Table 3's optimiser over all trainable parameters.
  make_trainer(optimizer, split, seed, precision)   default: run/step.SequentialTrainer, every stage's
                           pass in this process; block-parallel NoProp-DT returns its worker pool.
                           A trainer with state() / load_state() (its place in the data) is checkpointed
                           between evaluation points (run/checkpoint.py), with the method's state_dict:
                           state that decides later steps belongs there (a buffer, or get_extra_state).
  block()                  the module the paper's Table 5 counts as one block (params_per_block in every row).
  default_setting(config)  classmethod: the (steps, solver) pair evaluated at every evaluation point;
                           default (T, default_solver).
  nfe_per_image, train_nfe_per_image   classmethods: the cost model behind --dry-run.
  diagnostics(x, y)        rows ({"diagnostic", "value", and "block", "t" or "z" where they apply}) that
                           explain the method's accuracy; bench/diagnostics.py lists them and runs this
                           in eval mode, outside the clock, in its own RNG stream.

Timing: the runner clocks everything from the first stage's first batch to the last optimiser step of
the epoch (CUDA-synchronised on GPU) and nothing else: evaluation is outside the clock.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from noprop_bench.data.augment import check_augment
from noprop_bench.data.specs import get_spec
from noprop_bench.methods.catalog import EMBEDDINGS
from noprop_bench.methods.embeddings import check_embedding

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_optimizer(config: "MethodConfig", params, device) -> torch.optim.Optimizer:
    """Table 3's optimiser (config.optimizer, lr, weight_decay) over `params`. On CUDA its fused kernel:
    the same update in one launch per step instead of several per parameter group (on the CPU the
    fused kernel was no faster, so the default implementation stays)."""
    extra = {"fused": True} if torch.device(device).type == "cuda" else {}
    if config.optimizer == "sgd":
        extra["momentum"] = getattr(config, "momentum", 0.0)  # a key of the methods that train with SGD
    return OPTIMIZERS[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay, **extra)


@dataclass
class MethodConfig:
    """Hyperparameters every method has. Defaults are Table 3's MNIST row for back-prop / NoProp-DT."""
    embedding: str = "one-hot"
    batch_size: int = 128       # images per optimiser step
    epochs: int = 100           # passes of the full schedule over the training set
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-3
    timesteps: int = 10         # T: blocks (discrete) or integration steps (continuous)
    augment: str = "none"       # training batches: "none" (the paper), "crop" or "crop-flip" (data/augment.py)

    def validate(self) -> None:
        check_embedding(self.embedding)
        check_augment(self.augment)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
        for name in ("batch_size", "epochs", "timesteps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"config '{name}' must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"config 'lr' must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"config 'weight_decay' must be >= 0, got {self.weight_decay!r}")


TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def typed_values(config_cls: type, values: dict) -> dict:
    """`values` checked against the config dataclass's field types (int, float, str, bool), ints widened
    to float where a float is expected (so lr=1 and lr=1.0 are the same cell). A value of the wrong type
    (`--set lr=abc`) is a ValueError naming the key, the value and the type expected."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for key, value in values.items():
        want = hints.get(key)
        ok = (isinstance(value, want) and not (want is int and isinstance(value, bool))) if want in TYPE_NAMES else True
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"config '{key}' expects {TYPE_NAMES[want]} ({want.__name__}), got {value!r}: "
                             f"fix it in --set {key}=... or the suite's [config]")
        out[key] = value
    return out


class Method(nn.Module):
    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line for --list
    continuous: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True   # predict() samples noise, so inference runs are repeated
    owns_backward: ClassVar[bool] = False  # loss() runs its own backward pass(es) and returns a detached loss
    default_solver: ClassVar[str]
    solvers: ClassVar[tuple[str, ...]] = ()  # inference rules predict() accepts; default: (default_solver,)
    label_embeddings: ClassVar[tuple[str, ...]] = EMBEDDINGS  # the label embeddings it trains with; its config refuses others
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    TABLE3: ClassVar[dict[str, dict]] = {}  # per data set: the Table 3 values that differ from Config

    def __init__(self, spec, config: MethodConfig, device: torch.device | str = "cpu"):
        super().__init__()
        config.validate()
        self.spec, self.config, self.device = spec, config, torch.device(device)
        self.last_nfe: int | None = None

    @classmethod
    def config_keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls.Config)}

    @classmethod
    def default_config(cls, dataset: str, **overrides) -> MethodConfig:
        """Table 3's values for `dataset` (MNIST's row for a data set the paper does not have), then `overrides`."""
        values = dict(cls.TABLE3.get(get_spec(dataset).table3, {}))
        valid = cls.config_keys()
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)} for method '{cls.name}'; "
                             f"valid keys: {', '.join(sorted(valid))}")
        values.update(overrides)
        config = cls.Config(**typed_values(cls.Config, values))
        config.validate()
        return config

    # --- hooks -----------------------------------------------------------------------------------
    @classmethod
    def num_stages(cls, config: MethodConfig) -> int:
        """len(stages()) for a config, known before the model is built (for progress and cost)."""
        return 1

    def stages(self) -> list:
        return [None]

    def loss(self, x: torch.Tensor, y: torch.Tensor, stage) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def predict(self, x: torch.Tensor, steps: int | None = None, solver: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.config, [p for p in self.parameters() if p.requires_grad], self.device)

    # --- cost model (for --dry-run; known before the model is built) ----------------------------
    @classmethod
    def default_setting(cls, config: MethodConfig) -> tuple[int, str]:
        """The (steps, solver) pair evaluated at every evaluation point."""
        return config.timesteps, cls.default_solver

    @classmethod
    def nfe_per_image(cls, config: MethodConfig, steps: int, solver: str) -> int:
        """Network (or block) evaluations per image for one prediction."""
        return steps

    @classmethod
    def train_nfe_per_image(cls, config: MethodConfig) -> int:
        """Forward network (or block) evaluations per training image per epoch, all stages included."""
        return config.timesteps

    # --- shared helpers --------------------------------------------------------------------------
    def check_inference(self, steps: int | None, solver: str | None) -> None:
        """Discrete methods run exactly their T blocks with their one update rule."""
        T = self.config.timesteps
        if steps is not None and steps != T:
            raise ValueError(f"{self.name} has T={T} trained blocks, so it runs exactly {T} steps; "
                             f"steps={steps} is not possible (step sweeps apply to continuous-time methods)")
        if solver is not None and solver != self.default_solver:
            raise ValueError(f"{self.name} has one inference rule, '{self.default_solver}'; "
                             f"solver='{solver}' is not available")

    def check_solver(self, solver: str) -> None:
        valid = self.solvers or (self.default_solver,)
        if solver not in valid:
            raise ValueError(f"{self.name} has no solver '{solver}'; valid solvers: {', '.join(valid)}")

    @staticmethod
    def percent_correct(scores: torch.Tensor, y: torch.Tensor) -> float:
        return 100.0 * (scores.argmax(1) == y).float().mean().item()

    def make_trainer(self, optimizer, split, seed: int, precision: str):
        from noprop_bench.run.step import SequentialTrainer
        return SequentialTrainer(self, optimizer, split, self.config.batch_size, precision)

    def block(self) -> nn.Module | None:
        """One block, as the paper's Table 5 counts it (a NoProp-DT block, or the continuous-time model)."""
        return None

    def param_counts(self) -> dict[str, int | None]:
        block = self.block()
        return {"params_total": sum(p.numel() for p in self.parameters()),
                "params_trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
                "params_per_block": None if block is None else sum(p.numel() for p in block.parameters())}
