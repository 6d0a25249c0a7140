"""Suites are small TOML files in bench/suites/; a suite expands into cells
(method x dataset x embedding x seed, minus `exclude`), each with its full method config and its
evaluation plan. Keys (all but description/methods/datasets/embeddings/seeds are optional):

  description      one line for --list
  paper            true: the suite as written is the paper's protocol (section 8 of the reference)
  scaled_from      how a suite departs from the paper by design (shown in the report and plot titles)
  methods, datasets, embeddings, seeds
  exclude          cells to leave out, e.g. [{method = "adjoint", embedding = "dim20"}]
  inference_runs   repeats of stochastic inference per evaluation setting (paper: 5)
  train_limit, test_limit   fixed seeded subsets (images)
  holdout          evaluate on this many training images set aside (not the test set): for A/Bs
  eval_points      evaluate at this many evenly spaced points of training (default: every epoch)
  train_accuracy   also measure accuracy on the training split at the end (Table 1's train columns)
  inference_steps, solvers  after the last evaluation point, also evaluate these settings
  [config]         method config overrides for every cell; [config.METHOD] for one method
  precision        fp32 (default), tf32 (CUDA) or bf16, or a list of them: one cell per precision
                   (bench/precision.py); part of the cell id, so a resume never mixes them
  [grid]           config keys swept over lists of values, one cell per combination (applied after
                   [config]); [grid.METHOD] for one method, e.g. [grid.adjoint] timesteps = [10, 100]
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from noprop_bench import paths
from noprop_bench.data import get_spec
from noprop_bench.run.precision import check_precision
from noprop_bench.methods import METHODS, get_method
from noprop_bench.methods.embeddings import check_embedding

SUITE_KEYS = {"description", "paper", "scaled_from", "methods", "datasets", "embeddings", "seeds", "exclude", "inference_runs",
              "train_limit", "test_limit", "holdout", "eval_points", "train_accuracy", "inference_steps", "solvers",
              "config", "grid", "precision"}
EXCLUDE_KEYS = {"method", "dataset", "embedding", "seed"}


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
    scaled: tuple[str, ...] = ()           # how the run departs from the suite as written ('' = it does not)
    holdout: int | None = None             # evaluate on this many held-out training images, not the test set
    precision: str = "fp32"                # bench/precision.py: fp32, tf32 or bf16

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

    def as_dict(self) -> dict:
        return {"suite": self.suite, "method": self.method, "dataset": self.dataset, "seed": self.seed,
                "train_limit": self.train_limit, "test_limit": self.test_limit,
                "inference_runs": self.inference_runs, "inference_steps": list(self.inference_steps),
                "solvers": list(self.solvers), "eval_points": self.eval_points,
                "train_accuracy": self.train_accuracy, "config": dataclasses.asdict(self.config),
                "scaled": list(self.scaled), "precision": self.precision,
                **({"holdout": self.holdout} if self.holdout else {})}

    @property
    def id(self) -> str:
        """A short stable hash of everything that defines the cell's results (resume key)."""
        key = {k: v for k, v in self.as_dict().items() if k not in ("suite", "scaled")}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        tail = "" if self.precision == "fp32" else f"/{self.precision}"
        return f"{self.method}/{self.dataset}/{self.embedding}/seed{self.seed}{tail}"


def available_suites() -> dict[str, object]:
    """The built-in suites (package data), by name."""
    return paths.builtin_suites()


def suite_name(name_or_path: str) -> str:
    """What rows and the output directory call a suite: its name, or a TOML file's stem."""
    return Path(name_or_path).stem if name_or_path.endswith(".toml") else name_or_path


def load_suite(name_or_path: str) -> dict:
    """A built-in suite by name, or any suite file by its path (ending in .toml)."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"suite file {path} not found; pass a built-in suite name or a path to a .toml file")
    else:
        suites = available_suites()
        if name_or_path not in suites:
            raise ValueError(f"unknown suite '{name_or_path}'; valid suites: {', '.join(suites)}, or a path to a "
                             f".toml file (see `noprop-bench list`)")
        path = suites[name_or_path]
    try:
        suite = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it ({e})") from None
    unknown = sorted(set(suite) - SUITE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(SUITE_KEYS))}")
    return suite


def _positive_int(suite: dict, key: str, default=None):
    v = suite.get(key, default)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"{key} must be a positive integer, got {v!r}")
    return v


def _excluded(rules: list[dict], **cell) -> bool:
    return any(all(cell[k] == v for k, v in rule.items()) for rule in rules)


def expand(name: str, suite: dict, overrides: dict | None = None, scaled: tuple[str, ...] = ()) -> list[Cell]:
    """All cells of a suite, validated before anything runs. Config values come from Table 3, then the
    suite's [config], then its [config.METHOD], then `overrides` (the command line's --set/--epochs),
    each key applied to the methods that have it."""
    for key in ("methods", "datasets", "embeddings", "seeds"):
        if not suite.get(key):
            raise ValueError(f"suite '{name}' has no {key}")
    for d in suite["datasets"]:
        get_spec(d)
    for e in suite["embeddings"]:
        check_embedding(e)
    runs = _positive_int(suite, "inference_runs", 1)
    limits = {key: _positive_int(suite, key) for key in ("train_limit", "test_limit", "holdout")}
    eval_points = _positive_int(suite, "eval_points")
    train_accuracy = suite.get("train_accuracy", False)
    if not isinstance(train_accuracy, bool):
        raise ValueError(f"train_accuracy must be true or false, got {train_accuracy!r}")
    exclude = suite.get("exclude", [])
    for rule in exclude:
        if not isinstance(rule, dict) or not rule or set(rule) - EXCLUDE_KEYS:
            raise ValueError(f"suite '{name}': bad exclude entry {rule!r}; an entry is a table with some of "
                             f"the keys {', '.join(sorted(EXCLUDE_KEYS))}")
    steps, solvers = tuple(suite.get("inference_steps", ())), tuple(suite.get("solvers", ()))
    precisions = suite.get("precision", "fp32")
    precisions = [precisions] if isinstance(precisions, str) else list(precisions)
    for p in precisions or [None]:
        check_precision(p)
    classes = [get_method(m) for m in suite["methods"]]
    check_sweep(steps, solvers, classes)
    config = suite.get("config", {})
    common = {k: v for k, v in config.items() if not isinstance(v, dict)}
    stray = sorted(k for k, v in config.items() if isinstance(v, dict) and k not in METHODS)
    if stray:
        raise ValueError(f"suite '{name}': [config.{stray[0]}] names no method; valid methods: {', '.join(METHODS)}")
    scoped = _check_overrides(overrides or {}, classes)
    grid = _grid(name, suite.get("grid", {}), classes)
    cells = []
    for cls in classes:
        unscoped = {k: v for k, v in scoped.get(None, {}).items() if k in cls.config_keys()}
        for combo in grid[cls.name]:
            # the command line (--set) still wins over the grid, as over [config]
            values = {**common, **config.get(cls.name, {}), **combo, **unscoped, **scoped.get(cls.name, {})}
            cells += _method_cells(name, suite, cls, values, exclude, limits, runs, steps, solvers, eval_points,
                                   train_accuracy, scaled, precisions)
    if not cells:
        raise ValueError(f"suite '{name}': every cell is excluded; nothing to run")
    return list({cell.id: cell for cell in cells}.values())  # a --set that pins a grid key merges its cells


def _grid(name: str, grid: dict, classes: list) -> dict[str, list[dict]]:
    """Per method, the list of config combinations its [grid] asks for ([{}] where none)."""
    if not isinstance(grid, dict):
        raise ValueError(f"suite '{name}': [grid] must be a table of lists")
    common = {k: v for k, v in grid.items() if not isinstance(v, dict)}
    stray = sorted(k for k, v in grid.items() if isinstance(v, dict) and k not in METHODS)
    if stray:
        raise ValueError(f"suite '{name}': [grid.{stray[0]}] names no method; valid methods: {', '.join(METHODS)}")
    out = {}
    for cls in classes:
        axes = {k: v for k, v in {**common, **grid.get(cls.name, {})}.items() if k in cls.config_keys()}
        for key, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"suite '{name}': grid key '{key}' must be a non-empty list, got {values!r}")
        combos = [{}]
        for key, values in axes.items():
            combos = [{**c, key: v} for c in combos for v in values]
        out[cls.name] = combos
    return out


def _method_cells(name, suite, cls, values, exclude, limits, runs, steps, solvers, eval_points, train_accuracy,
                  scaled, precisions) -> list[Cell]:
    cells = []
    for dataset in suite["datasets"]:
        for embedding in suite["embeddings"]:
            cfg = cls.default_config(dataset, **{**values, "embedding": embedding})
            for seed in suite["seeds"]:
                if _excluded(exclude, method=cls.name, dataset=dataset, embedding=embedding, seed=seed):
                    continue
                # precision innermost: a cell's fp32 and bf16 runs are neighbours, timed side by side
                cells += [Cell(name, cls.name, dataset, int(seed), cfg, limits["train_limit"], limits["test_limit"],
                               runs, steps, solvers, eval_points, train_accuracy, tuple(scaled), limits["holdout"],
                               precision) for precision in precisions]
    return cells


def _check_overrides(overrides: dict, classes: list) -> dict:
    """--set KEY=V applies to every method that has KEY; --set METHOD.KEY=V to that method only.
    Returns {None: unscoped, method: scoped}; a key that applies to nothing is an error."""
    names = [c.name for c in classes]
    scoped: dict = {}
    for key, value in overrides.items():
        method, _, field = key.rpartition(".")
        targets = [c for c in classes if c.name == method] if method else classes
        if method and not targets:
            raise ValueError(f"--set {key}: '{method}' is not a method of this run; methods: {', '.join(names)}")
        if not any(field in c.config_keys() for c in targets):
            valid = sorted(set().union(*(c.config_keys() for c in targets)))
            raise ValueError(f"unknown config key '{field}' for method{'s' if len(targets) > 1 else ''} "
                             f"{', '.join(c.name for c in targets)}; valid keys: {', '.join(valid)}")
        scoped.setdefault(method or None, {})[field] = value
    return scoped


def check_sweep(steps: tuple, solvers: tuple, classes: list) -> None:
    """Step counts and solvers must make sense for at least the continuous methods asked for."""
    from noprop_bench.methods.continuous import check_steps
    for k in steps:
        check_steps(k, "--inference-steps")
    known = sorted({s for cls in classes for s in cls.solvers})
    for s in solvers:
        if s not in known:
            raise ValueError(f"unknown solver '{s}' for methods {', '.join(c.name for c in classes)}; "
                             f"valid solvers: {', '.join(known) or 'none (no continuous-time method)'}")


# --- the evaluation plan and its cost, shared by the runner and --dry-run -------------------------

def steps_per_epoch(cell: Cell, n_train: int) -> int:
    """Optimiser steps in one epoch: every stage makes one pass of minibatches."""
    return get_method(cell.method).num_stages(cell.config) * -(-n_train // cell.config.batch_size)


def eval_steps(cell: Cell, n_train: int) -> list[int]:
    """Optimiser step counts after which the model is evaluated; the last is the end of training."""
    per_epoch = steps_per_epoch(cell, n_train)
    total = cell.config.epochs * per_epoch
    if cell.eval_points is None:
        return [e * per_epoch for e in range(1, cell.config.epochs + 1)]
    points = min(cell.eval_points, total)
    return sorted({round(k * total / points) for k in range(1, points + 1)})


def sweep_settings(cell: Cell) -> list[tuple[int, str]]:
    """(steps, solver) pairs evaluated at the end, beyond the default one (continuous methods only)."""
    cls = get_method(cell.method)
    default = cls.default_setting(cell.config)
    if not cls.continuous or not (cell.inference_steps or cell.solvers):
        return []
    settings = []
    for solver in cell.solvers or (default[1],):
        if solver not in (cls.solvers or (cls.default_solver,)):
            continue  # e.g. 'ancestral' asked for, but this method has no such rule
        for steps in cell.inference_steps or (cell.config.timesteps,):
            if (steps, solver) != default and (steps, solver) not in settings:
                settings.append((steps, solver))
    return settings


def cell_cost(cell: Cell, n_train: int | None = None, n_test: int | None = None) -> dict:
    """What a cell will do: optimiser steps, evaluation points, and network evaluations x images (forward
    passes of a block or of the CT network) for training and for inference. Counted from the data set's
    spec before any data is read, or from the loaded split sizes where given. A unit for comparing cells
    and planning, not a time."""
    spec = get_spec(cell.dataset)
    n_pool = spec.n_train - (cell.holdout or 0)
    n_train = n_train or min(n_pool, cell.train_limit or n_pool)
    n_test = n_test or cell.holdout or min(spec.n_test, cell.test_limit or spec.n_test)
    cls = get_method(cell.method)
    points = eval_steps(cell, n_train)
    runs = cell.inference_runs if cls.stochastic else 1
    per_eval = cls.nfe_per_image(cell.config, *cls.default_setting(cell.config)) * runs
    final = per_eval + sum(cls.nfe_per_image(cell.config, k, s) for k, s in sweep_settings(cell)) * runs
    eval_nfe = n_test * (per_eval * (len(points) - 1) + final)
    if cell.train_accuracy:
        eval_nfe += n_train * per_eval  # default setting only, at the end
    return {"train_steps": points[-1], "eval_points": len(points),
            "train_nfe": cell.config.epochs * n_train * cls.train_nfe_per_image(cell.config),
            "eval_nfe": eval_nfe}
