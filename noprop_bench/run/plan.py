"""A cell (one method x data set x embedding x seed x precision, with its config) and its plan: the cell
resolved once into everything the runner needs, so the runner never asks anyone else.

Cell identity. `Cell.id` hashes a schema version and what distinguishes the cell from the defaults:
method, data set, embedding, seed, precision, data limits, evaluation plan, and only the config values
that differ from the method's defaults for that data set (Table 3, then our documented choices). A
config field added with a default therefore leaves every finished cell's id unchanged, and a resumed
sweep skips it. The ledger keeps each finished cell's full config, so a resume notices when a default
it ran with has since changed (results.ResultWriter).

Protocol. `departures(cell)` lists how a cell departs from the paper's protocol as this harness
implements it (Table 3's settings, full data sets, the test split, fp32, the paper's methods and data
sets); an empty list is a paper-protocol cell, the only kind the report compares with the paper.
Seeds, evaluation points and inference runs are not departures: they change how often and how many
times a cell is measured, not what it trains.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from noprop_bench.data import PAPER_DATASETS, get_spec
from noprop_bench.methods import get_method

CELL_SCHEMA = 2  # bump when a change of defaults must not resume cells finished under the old ones
PAPER_METHODS = ("backprop", "noprop-dt", "adjoint", "noprop-ct", "noprop-fm")
PROTOCOL_NEUTRAL = {"threads"}  # config keys that change where a cell runs, not what it computes
# config values the paper itself ran (its Figures 4 and 5): a cell with one of them runs the paper's protocol
PAPER_SETTINGS = {"class_prob": {"posterior"}, "prototype_init": {"orthogonal", "random"}}
# config keys whose every non-default value leaves the paper's model or data (a ResNet, augmentation): a
# suite marked `paper = true` refuses them rather than run a cell its report could not compare
OUTSIDE_PAPER = ("backbone", "augment")


@dataclass(frozen=True)
class Cell:
    suite: str
    method: str
    dataset: str
    seed: int
    config: object  # the method's Config dataclass, embedding included
    train_limit: int | None = None
    test_limit: int | None = None
    inference_runs: int = 1
    inference_steps: tuple[int, ...] = ()  # extra step counts evaluated after the last epoch
    solvers: tuple[str, ...] = ()          # extra solvers evaluated after the last epoch
    eval_points: int | None = None         # None: evaluate at the end of every epoch
    train_accuracy: bool = False
    overrides: tuple[str, ...] = ()        # how the command line changed the suite as written ('' = it did not)
    holdout: int | None = None             # evaluate on this many held-out training images, not the test set
    precision: str = "fp32"                # run/precision.py
    final_inference_runs: int | None = None  # inference runs at the last point (None: inference_runs)

    @property
    def data_key(self) -> tuple:
        """What decides the data a cell sees: cells with equal keys share one loaded data set."""
        return self.dataset, self.train_limit, self.test_limit, self.holdout

    @property
    def eval_split(self) -> str:
        return "test" if self.holdout is None else "holdout"

    @property
    def embedding(self) -> str:
        return self.config.embedding

    def defaults(self):
        """The method's default config for this data set and embedding."""
        return get_method(self.method).default_config(self.dataset, embedding=self.embedding)

    def changed_config(self) -> dict:
        """Config values that differ from the defaults (what the cell id hashes); every value for a
        method that is not registered here (its cell can only fail)."""
        ours = dataclasses.asdict(self.config)
        try:
            default = dataclasses.asdict(self.defaults())
        except ValueError:
            return ours
        return {k: v for k, v in ours.items() if k not in default or default[k] != v}

    def config_label(self) -> str:
        """The changed config values as `key=value;...` ('' for the defaults): every row carries it, and
        the report keys its rows by it, so different configurations are never pooled."""
        return ";".join(f"{k}={v}" for k, v in sorted(self.changed_config().items()))

    def as_dict(self) -> dict:
        return {"suite": self.suite, "method": self.method, "dataset": self.dataset, "seed": self.seed,
                "train_limit": self.train_limit, "test_limit": self.test_limit,
                "inference_runs": self.inference_runs, "inference_steps": list(self.inference_steps),
                "solvers": list(self.solvers), "eval_points": self.eval_points,
                "train_accuracy": self.train_accuracy, "config": dataclasses.asdict(self.config),
                "overrides": list(self.overrides), "precision": self.precision,
                **({"holdout": self.holdout} if self.holdout else {}),
                **({"final_inference_runs": self.final_inference_runs} if self.final_inference_runs else {})}

    @property
    def id(self) -> str:
        """A short stable hash of what defines the cell's results (the resume key)."""
        key = {"schema": CELL_SCHEMA, "method": self.method, "dataset": self.dataset, "seed": self.seed,
               "embedding": self.embedding, "precision": self.precision, "config": self.changed_config(),
               "inference_runs": self.inference_runs, "inference_steps": list(self.inference_steps),
               "solvers": list(self.solvers), "eval_points": self.eval_points,
               "train_accuracy": self.train_accuracy,
               **{k: v for k in ("train_limit", "test_limit", "holdout", "final_inference_runs")
                  if (v := getattr(self, k)) is not None}}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def label(self) -> str:
        tail = "" if self.precision == "fp32" else f"/{self.precision}"
        config = f"[{self.config_label()}]" if self.changed_config() else ""
        return f"{self.method}/{self.dataset}/{self.embedding}/seed{self.seed}{tail}{config}"


def departures(cell: Cell) -> tuple[str, ...]:
    """How `cell` departs from the paper's protocol (empty: it runs the protocol as written)."""
    out = []
    if cell.method not in PAPER_METHODS:
        out.append(f"method {cell.method} is not in the paper")
    if cell.dataset not in PAPER_DATASETS:
        out.append(f"data set {cell.dataset} is not in Table 3")
    default = dataclasses.asdict(cell.defaults())
    for key, value in sorted(cell.changed_config().items()):
        if key not in PROTOCOL_NEUTRAL and value not in PAPER_SETTINGS.get(key, ()):
            out.append(f"{key} {value} (default {default.get(key)})")
    for key, what in (("train_limit", "train-limit"), ("test_limit", "test-limit")):
        if getattr(cell, key) is not None:
            out.append(f"{what} {getattr(cell, key)} (paper: the full split)")
    if cell.holdout is not None:
        out.append(f"holdout {cell.holdout} (evaluated on held-out training images, not the test set)")
    if cell.precision != "fp32":
        out.append(f"precision {cell.precision} (protocol: fp32)")
    return tuple(out)


@dataclass(frozen=True)
class Plan:
    """A cell resolved once: its method, how many optimiser steps an epoch has, where it is evaluated
    (optimiser step counts; the last is the end of training), with which inference settings, and what
    it costs. Built from the data set's spec before any file is read (--dry-run), or from the loaded
    split sizes."""
    cell: Cell
    method_cls: type
    n_train: int
    n_test: int
    steps_per_epoch: int
    points: tuple[int, ...]
    default_setting: tuple[int, str]
    final_settings: tuple[tuple[int, str], ...]  # evaluated after the last point, beyond the default
    departures: tuple[str, ...]

    @property
    def total_steps(self) -> int:
        return self.points[-1]

    def epoch_at(self, step: int):
        """Epochs done at optimiser step `step` (fractional between epochs)."""
        return step // self.steps_per_epoch if step % self.steps_per_epoch == 0 else round(step / self.steps_per_epoch, 4)

    def settings_at(self, step: int) -> list[tuple[str, tuple[int, str]]]:
        """(kind, (steps, solver)) evaluated at `step`: the default, and the sweep at the end."""
        sweep = [("sweep", s) for s in self.final_settings] if step == self.total_steps else []
        return [("default", self.default_setting), *sweep]

    def runs_at(self, step: int) -> int:
        """Inference runs per setting at `step`: stochastic inference is repeated (final_inference_runs times
        at the last point, where Table 1 is read), deterministic inference is not."""
        if not self.method_cls.stochastic:
            return 1
        final = self.cell.final_inference_runs or self.cell.inference_runs
        return final if step == self.total_steps else self.cell.inference_runs

    def cost(self) -> dict:
        """Optimiser steps, evaluation points, and network evaluations x images (forward passes of a block or
        of the CT network) for training and for inference. A unit for comparing cells, not a time."""
        cls, config = self.method_cls, self.cell.config
        one = cls.nfe_per_image(config, *self.default_setting)
        runs, last = self.runs_at(-1), self.runs_at(self.total_steps)
        final = (one + sum(cls.nfe_per_image(config, k, s) for k, s in self.final_settings)) * last
        eval_nfe = self.n_test * (one * runs * (len(self.points) - 1) + final)
        if self.cell.train_accuracy:
            eval_nfe += self.n_train * one * last  # default setting only, at the end
        return {"train_steps": self.total_steps, "eval_points": len(self.points),
                "train_nfe": config.epochs * self.n_train * cls.train_nfe_per_image(config), "eval_nfe": eval_nfe}


def make_plan(cell: Cell, n_train: int | None = None, n_test: int | None = None) -> Plan:
    cls = get_method(cell.method)
    spec = get_spec(cell.dataset)
    pool = spec.n_train - (cell.holdout or 0)
    n_train = n_train or min(pool, cell.train_limit or pool)
    n_test = n_test or cell.holdout or min(spec.n_test, cell.test_limit or spec.n_test)
    per_epoch = cls.num_stages(cell.config) * -(-n_train // cell.config.batch_size)
    total = cell.config.epochs * per_epoch
    if cell.eval_points is None:
        points = tuple(e * per_epoch for e in range(1, cell.config.epochs + 1))
    else:
        k = min(cell.eval_points, total)
        points = tuple(sorted({round(i * total / k) for i in range(1, k + 1)}))
    default = cls.default_setting(cell.config)
    return Plan(cell, cls, n_train, n_test, per_epoch, points, default, _final_settings(cell, cls, default),
                departures(cell))


def _final_settings(cell: Cell, cls, default) -> tuple[tuple[int, str], ...]:
    """(steps, solver) pairs evaluated at the end, beyond the default one (continuous methods only)."""
    if not cls.continuous or not (cell.inference_steps or cell.solvers):
        return ()
    settings = []
    for solver in cell.solvers or (default[1],):
        if solver not in (cls.solvers or (cls.default_solver,)):
            continue  # e.g. 'ancestral' asked for, but this method has no such rule
        for steps in cell.inference_steps or (cell.config.timesteps,):
            if (steps, solver) != default and (steps, solver) not in settings:
                settings.append((steps, solver))
    return tuple(settings)
