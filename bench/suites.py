"""Suites are small TOML files in bench/suites/; a suite expands into cells
(method x dataset x embedding x seed), each with its full method config."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.data import get_spec
from methods import METHODS, get_method
from methods.embeddings import check_embedding

SUITE_DIR = Path(__file__).resolve().parent / "suites"
SUITE_KEYS = {"description", "methods", "datasets", "embeddings", "seeds", "inference_runs",
              "train_limit", "test_limit", "inference_steps", "solvers", "config"}


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

    @property
    def embedding(self) -> str:
        return self.config.embedding

    def as_dict(self) -> dict:
        return {"suite": self.suite, "method": self.method, "dataset": self.dataset, "seed": self.seed,
                "train_limit": self.train_limit, "test_limit": self.test_limit,
                "inference_runs": self.inference_runs, "inference_steps": list(self.inference_steps),
                "solvers": list(self.solvers), "config": dataclasses.asdict(self.config)}

    @property
    def id(self) -> str:
        """A short stable hash of everything that defines the cell's results."""
        key = {k: v for k, v in self.as_dict().items() if k != "suite"}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.embedding}/seed{self.seed}"


def available_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITE_DIR.glob("*.toml"))}


def load_suite(name: str) -> dict:
    suites = available_suites()
    if name not in suites:
        raise ValueError(f"unknown suite '{name}'; valid suites: {', '.join(suites)} "
                         f"(see `python run_bench.py --list`)")
    path = suites[name]
    try:
        suite = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(suite) - SUITE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(SUITE_KEYS))}")
    return suite


def expand(name: str, suite: dict) -> list[Cell]:
    """All cells of a (possibly overridden) suite, validated before anything runs."""
    for key in ("methods", "datasets", "embeddings", "seeds"):
        if not suite.get(key):
            raise ValueError(f"suite '{name}' has no {key}")
    for d in suite["datasets"]:
        get_spec(d)
    for e in suite["embeddings"]:
        check_embedding(e)
    runs = suite.get("inference_runs", 1)
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"inference_runs must be a positive integer, got {runs!r}")
    for key in ("train_limit", "test_limit"):
        v = suite.get(key)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{key} must be a positive number of images, got {v!r}")
    steps, solvers = tuple(suite.get("inference_steps", ())), tuple(suite.get("solvers", ()))
    classes = [get_method(m) for m in suite["methods"]]
    check_sweep(steps, solvers, classes)
    config = suite.get("config", {})
    common = {k: v for k, v in config.items() if not isinstance(v, dict)}
    stray = sorted(k for k, v in config.items() if isinstance(v, dict) and k not in METHODS)
    if stray:
        raise ValueError(f"suite '{name}': [config.{stray[0]}] names no method; valid methods: {', '.join(METHODS)}")
    cells = []
    for cls in classes:
        # [config.METHOD] tables override the common [config] values for that method only
        overrides = {**common, **config.get(cls.name, {})}
        for dataset in suite["datasets"]:
            for embedding in suite["embeddings"]:
                cfg = cls.default_config(dataset, **{**overrides, "embedding": embedding})
                for seed in suite["seeds"]:
                    cells.append(Cell(name, cls.name, dataset, int(seed), cfg, suite.get("train_limit"),
                                      suite.get("test_limit"), runs, steps, solvers))
    return cells


def check_sweep(steps: tuple, solvers: tuple, classes: list) -> None:
    """Step counts and solvers must make sense for at least the continuous methods asked for."""
    from methods.continuous import check_steps
    for k in steps:
        check_steps(k, "--inference-steps")
    known = sorted({s for cls in classes for s in cls.solvers})
    for s in solvers:
        if s not in known:
            raise ValueError(f"unknown solver '{s}' for methods {', '.join(c.name for c in classes)}; "
                             f"valid solvers: {', '.join(known) or 'none (no continuous-time method)'}")
