"""Block-parallel NoProp-DT: the T blocks (and the head) trained at the same time by K worker processes.

With a fixed embedding (one-hot), block t's term of Eq. 8, (T/2) eta (SNR(t) - SNR(t-1)) ||u_hat_t - u_y||^2,
depends only on block t, and the head's CE(head(z_T), y) only on the head: the KL term has no parameters.
So Algorithm 1's T sequential passes can run concurrently with the same objective per block; only the
order of updates changes. Here:

  - the blocks are split into K contiguous groups, one per worker; each worker trains its blocks one after
    another (a pass over the data each, per epoch, in its own data order and noise, with its own optimiser
    over its own parameters, as Table 3's optimiser keeps per-parameter state);
  - the head gets as many updates as in Algorithm 1 (T passes of minibatches per epoch, on the CE term
    alone) from the worker with the fewest blocks;
  - at each evaluation point every worker stops at the same fraction of its schedule, the main process
    gathers the blocks and the head (clock stopped) and evaluates the model as for any cell.

Workers are torch.multiprocessing processes (spawn) on the CPU with `threads` torch threads each; the
data set is shared with them, not copied. A worker that dies fails the cell with its exit code; the
main process never waits on a dead worker. Learned embeddings (dim20, prototype) are refused: W_Embed is
shared by every pass, so the blocks are not independent (NoPropDT's config says so).
"""
from __future__ import annotations

import time

import torch
import torch.multiprocessing as mp

from noprop_bench import faults
from noprop_bench.data import Split
from noprop_bench.run.precision import autocast, fast_layout, matmul_mode
from noprop_bench.run.step import TrainerError

POLL_S = 0.5
START_TIMEOUT_S = 300


class WorkerError(TrainerError):
    """A worker died or failed: the cell fails with this message."""


def partition(T: int, workers: int) -> list[list[int]]:
    """Blocks 1..T in K contiguous groups whose sizes differ by at most one."""
    if not 1 <= workers <= T:
        raise ValueError(f"workers must be between 1 and T = {T}, got {workers}")
    base, extra = divmod(T, workers)
    groups, start = [], 1
    for k in range(workers):
        size = base + (k < extra)
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def head_owner(groups: list[list[int]]) -> int:
    return min(range(len(groups)), key=lambda k: (len(groups[k]), -k))


def worker_schedule(blocks: list[int], owns_head: bool, T: int, epochs: int, batches: int) -> list[tuple]:
    """(kind, t) per optimiser step of one worker: each epoch, a pass per block; the head owner also makes
    T passes of head steps (as many head updates as Algorithm 1), spread evenly among its block steps, so
    that every fraction of the schedule, where the workers stop for an evaluation point, holds the same
    share of each and no worker waits on another's head steps."""
    block_steps = [("block", t) for t in blocks for _ in range(batches)]
    if not owns_head:
        return block_steps * epochs
    head_steps = T * batches
    where = [((i + 0.5) / len(block_steps), 0, step) for i, step in enumerate(block_steps)]
    where += [((i + 0.5) / head_steps, 1, ("head", None)) for i in range(head_steps)]
    return [step for _, _, step in sorted(where, key=lambda w: w[:2])] * epochs


def _worker(rank, conn, spec, config, state, blocks, owns_head, data, seed, threads, precision):
    """One worker: trains its blocks (and the head) on command; see the module docstring."""
    from noprop_bench.methods.base import make_optimizer
    from noprop_bench.methods.noprop_dt import NoPropDT
    from noprop_bench.run.allocator import keep_freed_memory
    keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(seed * 1_000_003 + 7919 * (rank + 1))  # its own data order and noise
    method = fast_layout(NoPropDT(spec, config, "cpu"))
    method.load_state_dict(state)
    method.train()
    split = Split(*data)
    params = [p for t in blocks for p in method.blocks[t - 1].parameters()]
    params += list(method.head.parameters()) if owns_head else []
    opt = make_optimizer(config, params, "cpu")
    T, batch_size = config.timesteps, config.batch_size
    batches = -(-len(split) // batch_size)
    schedule = worker_schedule(blocks, owns_head, T, config.epochs, batches)
    stream = _batches(split, batch_size, config.augment)
    done = 0
    conn.send(("ready", len(schedule)))
    with matmul_mode(precision, torch.device("cpu")):
        while True:
            waited = time.perf_counter()
            cmd, arg = conn.recv()
            waited = time.perf_counter() - waited
            if cmd == "stop":
                return
            if cmd == "state":
                conn.send(("state", {k: v for k, v in method.state_dict().items()
                                     if k.startswith(tuple(f"blocks.{t - 1}." for t in blocks))
                                     or (owns_head and k.startswith("head."))}))
                continue
            sums = {"mse_w": 0.0, "mse": 0.0, "ce": 0.0, "kl": 0.0}
            counts = {"block": 0, "head": 0}
            target = round(arg * len(schedule))
            acc = {k: torch.zeros(()) for k in sums}
            faults.point(f"worker-interval-{rank}")
            wall, cpu = time.perf_counter(), time.process_time()
            while done < target:
                kind, t = schedule[done]
                x, y = next(stream)
                opt.zero_grad(set_to_none=True)
                with autocast(precision, x.device):  # the terms of NoPropDT.loss, one owner each
                    u = method.embed(y)
                    if kind == "block":
                        loss, mse = method.denoising_term(x, u, t)
                        acc["mse_w"] += loss.detach().float()
                        acc["mse"] += mse.detach().float()
                    else:
                        ce, kl = method.head_terms(u, y)
                        loss = ce + kl
                        acc["ce"] += ce.detach().float()
                        acc["kl"] += kl.detach().float()
                loss.backward()
                opt.step()
                counts[kind] += 1
                done += 1
            timing = {"busy_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "wait_s": waited}
            conn.send(("done", {k: v.item() for k, v in acc.items()}, counts, timing))


def _batches(split: Split, batch_size: int, augment: str):
    while True:
        yield from split.batches(batch_size, shuffle=True, augment=augment)


class ParallelDT:
    """The K workers of one NoProp-DT cell, driven by the runner as its trainer: train(), gather(), close()."""

    def __init__(self, method, split: Split, seed: int, workers: int, threads: int, precision: str):
        if split.labels.device.type != "cpu":
            raise WorkerError(f"noprop-dt workers={workers} runs its workers on CPU cores; this cell is on "
                              f"{split.labels.device} (use workers=1 there)")
        cfg = method.config
        self.method, self.groups = method, partition(cfg.timesteps, workers)
        owner = head_owner(self.groups)
        ctx = mp.get_context("spawn")
        state = {k: v.detach().cpu().clone() for k, v in method.state_dict().items()}
        data = (split.images, split.labels, split._mean, split._std)
        self.conns, self.procs = [], []
        for rank, blocks in enumerate(self.groups):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(rank, theirs, method.spec, cfg, state, blocks, rank == owner,
                                                     data, seed, threads, precision), daemon=True)
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
        self.lengths = [self._receive(rank, "ready", START_TIMEOUT_S)[1] for rank in range(workers)]

    def _receive(self, rank: int, kind: str, timeout: float | None = None):
        conn, proc, start = self.conns[rank], self.procs[rank], time.monotonic()
        while True:
            dead = not proc.is_alive()
            if conn.poll(POLL_S):
                try:
                    message = conn.recv()
                    if message[0] == kind:
                        return message
                except EOFError:  # its end of the pipe closed: it has died
                    dead = True
            if dead:
                proc.join(5)
                blocks = self.groups[rank]
                raise WorkerError(f"worker {rank} (blocks {blocks[0]}-{blocks[-1]}) died with exit code "
                                  f"{proc.exitcode} while the main process waited for '{kind}'")
            if timeout is not None and time.monotonic() - start > timeout:
                raise WorkerError(f"worker {rank} did not answer '{kind}' within {timeout:.0f} s")

    def train(self, done: int, point: int, total: int, progress) -> dict[str, float]:
        """The runner's trainer interface (run/step.SequentialTrainer): up to step `point` of `total`."""
        losses = self.train_until(point / total)
        progress(point - done)
        return losses

    def train_until(self, fraction: float) -> dict[str, float]:
        """Every worker trains up to `fraction` of its schedule; returns the interval's mean loss terms."""
        wall, cpu = time.perf_counter(), time.process_time()
        for conn in self.conns:
            conn.send(("train", fraction))
        sums, counts, self.timing = {}, {"block": 0, "head": 0}, []
        for rank in range(len(self.conns)):
            _, s, c, timing = self._receive(rank, "done")
            self.timing.append({**timing, "steps": sum(c.values())})
            for k, v in s.items():
                sums[k] = sums.get(k, 0.0) + v
            for k, v in c.items():
                counts[k] += v
        self.parent = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        nb, nh = max(counts["block"], 1), max(counts["head"], 1)
        mse_w, ce, kl = sums["mse_w"] / nb, sums["ce"] / nh, sums["kl"] / nh
        return {"loss": ce + kl + mse_w, "ce": ce, "kl": kl, "mse": sums["mse"] / nb}

    def diagnostics(self) -> list[dict]:
        """Where the last interval's time went: per worker (`block` = its rank) its busy seconds (in its
        training loop), the CPU seconds it got in them (less than busy: it waited for a core), the
        seconds it had waited for this interval's command (idle after the last one), and its steps; and the
        main process's wall and CPU seconds for the interval (block 0)."""
        rows = [{"diagnostic": f"worker_{key}", "block": rank + 1, "value": value}
                for rank, timing in enumerate(self.timing) for key, value in timing.items()]
        return rows + [{"diagnostic": f"parent_{key}", "block": 0, "value": value} for key, value in self.parent.items()]

    def gather(self) -> None:
        """Copy every worker's blocks (and the head) into the main process's model."""
        for rank, conn in enumerate(self.conns):
            conn.send(("state", None))
            _, part = self._receive(rank, "state")
            self.method.load_state_dict(part, strict=False)

    def state(self) -> None:
        """Not checkpointed: each worker's optimiser, data order and noise live in its own process, so a
        killed block-parallel cell starts over."""
        return None

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            try:
                if proc.is_alive():
                    conn.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
