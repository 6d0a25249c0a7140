"""Experiment trackers: the rows of a run streamed, as they are written to results.csv, to TensorBoard,
MLflow or Weights & Biases (`--track tensorboard,mlflow,wandb`), and the report's figures at the end.

Every tracker writes under the run's output directory and works offline: TensorBoard event files in
OUT/tensorboard/CELL/, an MLflow file store in OUT/mlruns (unless MLFLOW_TRACKING_URI names another), W&B
offline runs in OUT/wandb (unless WANDB_MODE says otherwise; `wandb sync` uploads them later). One tracker run
per cell, named by the cell's label, with its full config. Per row: the metrics below, at the row's
optimiser step; the default inference setting's first run under the plain name (`test_acc`), the others under
`test_acc/SOLVER-STEPS-runK`. When the cell finishes, its rows exactly as results.csv holds them are saved as
`rows.json` in the tracker's run. The trackers are optional extras (`pip install 'noprop-bench[track]'`); a
tracker that fails is dropped with a warning, and results.csv never depends on one.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("test_acc", "train_acc", "train_loss", "loss_ce", "loss_kl", "loss_mse", "train_time_s",
           "cum_train_time_s", "eval_time_s", "peak_mem_bytes", "tensor_peak_bytes")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def metric_values(row: dict) -> dict[str, float]:
    """The numeric metrics of one row, keyed by metric name and, beyond the default setting's first
    inference run, by the setting."""
    default = row.get("eval_setting") in ("default", "train") and not row.get("inference_run")
    suffix = "" if default else f"/{row.get('solver')}-{row.get('inference_steps')}-run{row.get('inference_run')}"
    out = {}
    for name in METRICS:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[name + suffix] = float(value)
    return out


def run_name(row: dict) -> str:
    return f"{row['method']}-{row['dataset']}-{row['embedding']}-seed{row['seed']}-{str(row['cell_id'])[:8]}"


class Tracker:
    """Receives every row as it is written, and each cell's end; subclasses open, log to and close one
    tracker run per cell."""
    name = ""

    def __init__(self, out_dir: Path, meta: dict):
        self.out_dir, self.meta = Path(out_dir), meta
        self.runs: dict[str, object] = {}
        self.rows_of: dict[str, list[dict]] = defaultdict(list)

    def log_rows(self, rows: list[dict], formatted: list[dict]) -> None:
        for row, text in zip(rows, formatted):
            cell = str(row["cell_id"])
            if cell not in self.runs:
                self.runs[cell] = self.open(cell, row)
            self.rows_of[cell].append(text)
            self.log(self.runs[cell], int(row.get("step") or 0), metric_values(row))

    def finish_cell(self, cell_id: str, error: str | None) -> None:
        run = self.runs.pop(cell_id, None)
        if run is not None:
            self.close(run, self.rows_of.pop(cell_id, []), error)

    def figures(self, paths: list[Path]) -> None:
        pass

    def shutdown(self) -> None:
        for cell in list(self.runs):
            self.finish_cell(cell, "the run ended before this cell finished")

    def open(self, cell_id: str, row: dict): ...

    def log(self, run, step: int, values: dict[str, float]) -> None: ...

    def close(self, run, rows: list[dict], error: str | None) -> None: ...

    def config_of(self, cell_id: str) -> dict:
        return (self.meta.get("cells") or {}).get(cell_id, {})


class TensorBoard(Tracker):
    name = "tensorboard"

    def open(self, cell_id, row):
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(self.out_dir / "tensorboard" / run_name(row)))
        writer.add_text("config", "```\n" + json.dumps(self.config_of(cell_id), indent=1, default=str) + "\n```")
        return writer

    def log(self, run, step, values):
        for key, value in values.items():
            run.add_scalar(key, value, step)

    def close(self, run, rows, error):
        run.add_text("rows.json", json.dumps(rows))
        if error:
            run.add_text("error", error)
        run.close()

    def figures(self, paths):
        import matplotlib.image
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(str(self.out_dir / "tensorboard" / "report")) as writer:
            for path in paths:
                writer.add_image(path.stem, matplotlib.image.imread(path)[..., :3], dataformats="HWC")


class MLflow(Tracker):
    name = "mlflow"

    def __init__(self, out_dir, meta):
        super().__init__(out_dir, meta)
        # a local file store unless the user names a server; MLflow keeps file stores behind this switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        self.client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or (self.out_dir / "mlruns").resolve().as_uri())
        name = f"noprop-bench/{meta.get('suite', 'run')}"
        found = self.client.get_experiment_by_name(name)
        self.experiment = found.experiment_id if found else self.client.create_experiment(name)

    def _run(self, name, tags):
        return self.client.create_run(self.experiment, run_name=name, tags=tags).info.run_id

    def open(self, cell_id, row):
        run = self._run(run_name(row), {"cell_id": cell_id, "method": str(row["method"]), "dataset": str(row["dataset"]),
                                        "output": str(self.out_dir)})
        for key, value in self.config_of(cell_id).items():
            self.client.log_param(run, key, str(value)[:500])
        return run

    def log(self, run, step, values):
        for key, value in values.items():
            self.client.log_metric(run, key, value, step=step)

    def close(self, run, rows, error):
        self.client.log_dict(run, rows, "rows.json")
        self.client.set_terminated(run, "FAILED" if error else "FINISHED")

    def figures(self, paths):
        run = self._run("report", {"output": str(self.out_dir)})
        for path in paths:
            self.client.log_artifact(run, str(path))
        self.client.set_terminated(run)


class WandB(Tracker):
    name = "wandb"

    def __init__(self, out_dir, meta):
        super().__init__(out_dir, meta)
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")

    def _init(self, name, config, job_type):
        import wandb
        return wandb.init(project=os.environ.get("WANDB_PROJECT", "noprop-bench"), dir=str(self.out_dir), name=name,
                          group=str(self.meta.get("suite", "run")), job_type=job_type, config=config,
                          reinit="create_new")

    def open(self, cell_id, row):
        return self._init(run_name(row), self.config_of(cell_id), "cell")

    def log(self, run, step, values):
        run.log(values, step=step)

    def close(self, run, rows, error):
        path = Path(run.dir) / "rows.json"
        path.write_text(json.dumps(rows))
        run.save(str(path), base_path=run.dir, policy="now")
        run.finish(exit_code=1 if error else 0)

    def figures(self, paths):
        import wandb
        run = self._init("report", {}, "report")
        run.log({path.stem: wandb.Image(str(path)) for path in paths})
        run.finish()


TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def check_trackers(names: list[str]) -> None:
    """Refuse an unknown tracker or one whose package is missing, before anything is written."""
    import importlib.util
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; valid trackers: {', '.join(TRACKERS)}")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ValueError(f"--track {name} needs the {PACKAGES[name]} package: "
                             f"pip install 'noprop-bench[track]' (or {PACKAGES[name]} alone)")


class Trackers:
    """The run's trackers as one sink. A tracker that raises is dropped with a warning: results.csv is the
    record, and a tracker's failure must never cost a row of it."""

    def __init__(self, names: list[str], out_dir: Path, meta: dict):
        self.active: list[Tracker] = []
        for name in names:
            self._guard(name, lambda: self.active.append(TRACKERS[name](out_dir, meta)))

    def _guard(self, name, call) -> None:
        try:
            call()
        except Exception as e:  # noqa: BLE001 - any tracker failure is reported, never fatal
            print(f"warning: tracker {name} failed and is off for the rest of the run ({type(e).__name__}: "
                  f"{e}); results.csv is unaffected", file=sys.stderr)
            self.active = [t for t in self.active if t.name != name]

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.active):
            self._guard(tracker.name, lambda t=tracker: getattr(t, method)(*args))

    def log_rows(self, rows, formatted):
        self._each("log_rows", rows, formatted)

    def finish_cell(self, cell_id, error):
        self._each("finish_cell", cell_id, error)

    def figures(self, report_dir: Path):
        self._each("figures", sorted(Path(report_dir).glob("*.png")))

    def shutdown(self):
        self._each("shutdown")
