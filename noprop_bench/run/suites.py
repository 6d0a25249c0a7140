"""Suites are small TOML files (built-in ones in noprop_bench/resources/suites/, or any file passed to
--suite by its path); a suite expands into cells
(method x dataset x embedding x seed, minus `exclude`), each with its full method config and its
evaluation plan. Keys (all but description/methods/datasets/embeddings/seeds are optional):

  description      one line for `noprop-bench list`
  timed            true: the suite's training times or memory are its result (--jobs is refused)
  paper            true: the suite reproduces the paper; a cell that sets a key of plan.OUTSIDE_PAPER
                   (backbone, augment) is refused
  methods, datasets, embeddings, seeds
  exclude          cells to leave out, e.g. [{method = "adjoint", embedding = "dim20"}]
  inference_runs   repeats of stochastic inference per evaluation setting (paper: 5)
  final_inference_runs  repeats at the last evaluation point only (default: inference_runs): curves
                   with one run per point, Table 1's five at the end
  train_limit, test_limit   fixed seeded subsets (images)
  holdout          evaluate on this many training images set aside (not the test set): for A/Bs
  eval_points      evaluate at this many evenly spaced points of training (default: every epoch)
  train_accuracy   also measure accuracy on the training split at the end (Table 1's train columns)
  inference_steps, solvers  after the last evaluation point, also evaluate these settings
  [config]         method config overrides for every cell; [config.METHOD] for one method
  precision        fp32 (default), tf32 (CUDA) or bf16, or a list of them: one cell per precision
                   (run/precision.py); part of the cell id, so a resume never mixes them
  [grid]           config keys swept over lists of values, one cell per combination (applied after
                   [config]); [grid.METHOD] for one method, e.g. [grid.adjoint] timesteps = [10, 100]
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from noprop_bench import paths
from noprop_bench.data import get_spec
from noprop_bench.run.plan import OUTSIDE_PAPER, Cell
from noprop_bench.run.precision import check_precision
from noprop_bench.methods import METHODS, get_method
from noprop_bench.methods.embeddings import check_embedding

SUITE_KEYS = {"description", "timed", "paper", "methods", "datasets", "embeddings", "seeds", "exclude", "inference_runs",
              "final_inference_runs",
              "train_limit", "test_limit", "holdout", "eval_points", "train_accuracy", "inference_steps", "solvers",
              "config", "grid", "precision"}
EXCLUDE_KEYS = {"method", "dataset", "embedding", "seed"}


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


def expand(name: str, suite: dict, overrides: dict | None = None, changed: tuple[str, ...] = ()) -> list[Cell]:
    """All cells of a suite, validated before anything runs. Config values come from Table 3, then the
    suite's [config], then its [config.METHOD], then `overrides` (the command line's --set/--epochs),
    each key applied to the methods that have it. `changed` says how the command line changed the suite
    as written (every cell carries it as `overrides`)."""
    for key in ("methods", "datasets", "embeddings", "seeds"):
        if not suite.get(key):
            raise ValueError(f"suite '{name}' has no {key}")
    for d in suite["datasets"]:
        get_spec(d)
    for e in suite["embeddings"]:
        check_embedding(e)
    runs = _positive_int(suite, "inference_runs", 1)
    final_runs = _positive_int(suite, "final_inference_runs")
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
        # the command line (--set) wins over the grid, as over [config]; a list there sweeps the key
        mine = {**{k: v for k, v in scoped.get(None, {}).items() if k in cls.config_keys()}, **scoped.get(cls.name, {})}
        swept = {k: v for k, v in mine.items() if isinstance(v, list)}
        combos = [{k: v for k, v in c.items() if k not in swept} for c in grid[cls.name]]
        for key, choices in swept.items():
            combos = [{**c, key: v} for c in combos for v in choices]
        fixed = {k: v for k, v in mine.items() if k not in swept}
        for combo in combos:
            values = {**common, **config.get(cls.name, {}), **combo, **fixed}
            cells += _method_cells(name, suite, cls, values, exclude, limits, (runs, final_runs), steps, solvers, eval_points,
                                   train_accuracy, changed, precisions)
    if not cells:
        raise ValueError(f"suite '{name}': every cell is excluded; nothing to run")
    if suite.get("paper", False):
        _refuse_outside_paper(name, cells)
    return list({cell.id: cell for cell in cells}.values())  # a --set that pins a grid key merges its cells


def _refuse_outside_paper(name: str, cells: list[Cell]) -> None:
    for cell in cells:
        changed = cell.changed_config()
        for key in OUTSIDE_PAPER:
            if key in changed:
                raise ValueError(f"suite '{name}' reproduces the paper, which never ran {key}={changed[key]}; "
                                 f"run it in a suite of your own (a copy of the suite file without `paper = true`)")


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
                  changed, precisions) -> list[Cell]:
    cells = []
    for dataset in suite["datasets"]:
        for embedding in suite["embeddings"]:
            cfg = cls.default_config(dataset, **{**values, "embedding": embedding})
            for seed in suite["seeds"]:
                if _excluded(exclude, method=cls.name, dataset=dataset, embedding=embedding, seed=seed):
                    continue
                # precision innermost: a cell's fp32 and bf16 runs are neighbours, timed side by side
                cells += [Cell(name, cls.name, dataset, int(seed), cfg, limits["train_limit"], limits["test_limit"],
                               runs[0], steps, solvers, eval_points, train_accuracy, tuple(changed), limits["holdout"],
                               precision, runs[1]) for precision in precisions]
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
