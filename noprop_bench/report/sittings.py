"""The invocations ("sittings") that wrote a results directory, and the machine each ran on.

A resumed sweep can finish its cells on different machines, or under one machine label on different
hardware (two cloud instances of the same name, one without AVX-512), and at different revisions. Times,
FLOP/s and roofs are then comparable only within a sitting, so the report lists the sittings, which cells
finished in each (the ledger's `sitting`), and warns when the machines differ.
"""
from __future__ import annotations


def machine_key(machine: dict) -> tuple:
    """What makes two machines' timings comparable: the label, the CPU's instruction sets, the GPU, the
    torch build and its thread count. Not the host name (a scheduler's), nor memory to the byte."""
    cpu, gpu, build = machine.get("cpu") or {}, machine.get("gpu") or {}, machine.get("torch") or {}
    return (machine.get("label"), tuple(cpu.get("isa") or ()), gpu.get("name"), build.get("version"),
            build.get("threads"))


def describe(machine: dict) -> str:
    label, isa, _, version, threads = machine_key(machine)
    sets = f" ({', '.join(isa)})" if isa else ""
    return f"{label or '?'}{sets}, torch {version or '?'}, {threads or '?'} threads"


def sittings(meta: dict) -> list[dict]:
    """Every invocation's metadata, oldest first (metadata.json keeps the earlier ones in `previous`)."""
    current = {k: v for k, v in meta.items() if k != "previous"}
    return [*meta.get("previous", []), current] if meta else []


def lines(meta: dict, ledger: dict[str, dict], shown: set[str]) -> list[str]:
    """Header lines for a directory written by more than one invocation, or with cells that finished in an
    invocation metadata.json does not hold; nothing otherwise. `shown`: the ids of the cells whose rows are
    in the report."""
    all_ = sittings(meta)
    by_sitting: dict[str | None, list[str]] = {}
    for cell_id, entry in ledger.items():
        if cell_id in shown and entry.get("error") is None:
            by_sitting.setdefault(entry.get("sitting"), []).append(entry.get("label") or cell_id)
    foreign = set(by_sitting) - {None} - {s.get("started") for s in all_}
    if len(all_) < 2 and not foreign:
        return []
    out = [f"- sittings ({len(all_)} invocation(s) recorded in metadata.json, oldest first; the cells that "
           "finished in each):"]
    for s in all_:
        rev = ((s.get("git") or {}).get("revision") or "?")[:7]
        cells = ", ".join(sorted(by_sitting.pop(s.get("started"), []))) or "none"
        out.append(f"  - {s.get('started', '?')}, revision {rev}, {describe(s.get('machine') or {})}: {cells}")
    unknown = sorted(by_sitting.pop(None, []))
    if unknown:
        out.append(f"  - not recorded (the ledger names no sitting): {', '.join(unknown)}")
    for started, labels in sorted(by_sitting.items()):  # e.g. metadata.json replaced by another run's
        out.append(f"  - {started}, not in metadata.json (its machine is unknown): {', '.join(sorted(labels))}")
    machines = {machine_key(s.get("machine") or {}) for s in all_}
    if len(machines) > 1:
        out += ["", f"> ⚠ **The cells ran on {len(machines)} different machines** (label, instruction sets, GPU, "
                "torch build or threads differ between the sittings above): compare times, FLOP/s and roofs only "
                "between cells of the same machine."]
    return out
