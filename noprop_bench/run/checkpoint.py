"""A cell's checkpoint: what a killed cell needs to go on from its last evaluation point instead of from
its beginning, taking from there the steps it would have taken without the kill.

OUT/checkpoints/CELL_ID.pt is written after each evaluation point but the last (whole, then renamed over
the previous one), off the clock, and deleted once the cell is in the ledger. It holds the model's and the
optimiser's state_dict, the trainer's place in the data (passes done, batches done in this pass, this
pass's order), the random generators' states, the training clock, and the cell's rows and diagnostics so
far: a resume drops an unfinished cell's rows from the CSV, and under --jobs a cell's rows reach the CSV
only when it ends, so the checkpoint carries them back. Rows after the resume are measured by the process
that makes them (its host, its warm-up, its memory probe).

A checkpoint that cannot be read, that was written for another configuration of the same cell (a
default changed in between) or on another kind of device, is set aside with a one-line warning and the
cell starts over; one that reads but does not fit the model fails its cell once, set aside, so the retry
starts over. A cell is checkpointed when its trainer reports its place in the data (`state()`; the
block-parallel trainer keeps it in other processes and does not) and its optimiser has a state_dict; a
method's own state must live in its state_dict (buffers, or get_extra_state for host objects).
A checkpoint that cannot be written is a warning, never the cell's failure.
"""
from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import torch

from noprop_bench.files import atomic_write_bytes
from noprop_bench.run.messages import first_line

SCHEMA = 1
FOLDER = "checkpoints"


def file(directory: str | Path, cell_id: str) -> Path:
    return Path(directory) / f"{cell_id}.pt"


class CheckpointError(RuntimeError):
    """A checkpoint read but could not be put back; it is set aside, so a retry starts the cell over."""


def checkpointable(trainer, optimizer) -> bool:
    return (getattr(trainer, "state", None) is not None and trainer.state() is not None
            and all(hasattr(optimizer, a) for a in ("state_dict", "load_state_dict")))


def _identity(cell, device: torch.device, deterministic: bool) -> str:
    """What must match for a checkpoint to continue this cell: its id and full config, the kind of device
    (the generators' states are per device) and deterministic mode."""
    return json.dumps({"cell_id": cell.id, "config": dataclasses.asdict(cell.config), "device": device.type,
                       "deterministic": deterministic}, sort_keys=True, default=str)


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save(path: Path, cell, deterministic: bool, step: int, method, optimizer, trainer, train_seconds: float,
         outcome) -> None:
    """Write the checkpoint of `cell` at optimiser step `step` (a checkpointable trainer and optimiser)."""
    state = {"schema": SCHEMA, "identity": _identity(cell, method.device, deterministic), "step": step,
             "model": method.state_dict(), "optimizer": optimizer.state_dict(), "trainer": trainer.state(),
             "rng": _rng_state(method.device), "train_seconds": train_seconds, "rows": outcome.rows,
             "diagnostics": outcome.diagnostics}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as e:
        print(f"warning: checkpoint {path} not written ({e}); if this run is killed, {cell.label()} starts over "
              f"from its last checkpoint or its beginning", file=sys.stderr)


def load(path: Path, cell, device: torch.device, deterministic: bool) -> dict | None:
    """The checkpoint of `cell` at `path`, or None (no file; or a file that does not fit, set aside). Read
    onto the CPU: load_state_dict copies each tensor to where its parameter lives."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        fits = state.get("schema") == SCHEMA and state.get("identity") == _identity(cell, device, deterministic)
        why = "it was written for another configuration of this cell, another kind of device or another mode"
    except Exception as e:  # noqa: BLE001 - any unreadable file means the same thing: start over
        fits, why = False, f"it cannot be read ({first_line(e)})"
    if fits:
        return state
    print(f"warning: checkpoint {path} not used, {why}; {cell.label()} starts over (the file is now "
          f"{_set_aside(path).name})", file=sys.stderr)
    return None


def _set_aside(path: Path) -> Path:
    aside = path.with_suffix(".pt.unused")
    path.replace(aside)
    return aside


def restore(path: Path, state: dict, method, optimizer, trainer) -> None:
    """Put the model, optimiser, trainer and random generators back where `state` left them. Last of a
    resumed cell's set-up, so nothing drawn before the first step moves the generators."""
    try:
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        position = state["trainer"]
        if position.get("order") is not None:
            position = {**position, "order": position["order"].to(method.device)}
        trainer.load_state(position)
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], method.device)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"its checkpoint does not fit this version's model ({first_line(e)}); it is now "
                              f"{_set_aside(path).name}, and a resume starts the cell over") from None


def discard(directory: Path, cell_id: str) -> None:
    file(directory, cell_id).unlink(missing_ok=True)
