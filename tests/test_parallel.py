"""Block-parallel NoProp-DT (methods/parallel_dt.py): the partition, the gathered model, failures, refusals."""
import pandas as pd
import pytest
import torch

from noprop_bench import cli as run_bench
from noprop_bench import faults
from noprop_bench.methods.parallel_dt import ParallelDT, head_owner, partition, worker_schedule
from noprop_bench.methods.noprop_dt import NoPropDT
from noprop_bench.report import write_report


@pytest.mark.parametrize("T", [1, 2, 5, 10, 13])
def test_the_partition_covers_every_block_once_in_balanced_groups(T):
    for K in range(1, T + 1):
        groups = partition(T, K)
        assert len(groups) == K and sorted(t for g in groups for t in g) == list(range(1, T + 1))
        assert max(map(len, groups)) - min(map(len, groups)) <= 1
    with pytest.raises(ValueError, match="between 1 and T"):
        partition(T, T + 1)


def test_the_head_gets_as_many_updates_as_in_algorithm_1():
    groups = partition(10, 3)  # sizes 4, 3, 3
    owner = head_owner(groups)
    assert len(groups[owner]) == 3
    schedule = worker_schedule(groups[owner], True, T=10, epochs=2, batches=5)
    assert schedule.count(("head", None)) == 2 * 10 * 5  # T passes per epoch, as Algorithm 1's T passes
    assert sum(kind == "block" for kind, _ in schedule) == 2 * 3 * 5


@pytest.mark.parametrize("T, K, batches", [(10, 2, 16), (10, 3, 47), (4, 4, 5), (5, 2, 1)])
def test_every_fraction_of_the_head_owners_schedule_holds_its_share_of_head_steps(T, K, batches):
    """The workers stop at the same fraction of their schedules at each evaluation point: were the head
    steps bunched at the end of an epoch, the head owner would still be training blocks while the others
    had finished theirs."""
    groups = partition(T, K)
    owner = head_owner(groups)
    schedule = worker_schedule(groups[owner], True, T=T, epochs=2, batches=batches)
    blocks = [t for kind, t in schedule if kind == "block"]
    assert blocks == [t for t in groups[owner] for _ in range(batches)] * 2  # blocks in order, a pass each
    heads, total = 0, len(schedule)
    for n, (kind, _) in enumerate(schedule, 1):
        heads += kind == "head"
        assert abs(heads - n * (T * batches * 2) / total) <= 1.5, (n, heads)


@pytest.mark.slow  # worker processes each import torch: seconds
def test_gathered_blocks_are_what_the_workers_trained(digits):
    torch.manual_seed(0)
    cfg = NoPropDT.default_config("digits", timesteps=4, epochs=1, workers=2, threads=1)
    method = NoPropDT(digits.spec, cfg, "cpu")
    before = {k: v.clone() for k, v in method.state_dict().items()}
    pool = ParallelDT(method, digits.train, seed=0, workers=2, threads=1, precision="fp32")
    try:
        losses = pool.train_until(1.0)  # one full epoch of every schedule
        assert set(losses) == {"loss", "ce", "kl", "mse"} and all(v == v for v in losses.values())
        pool.gather()
        after = method.state_dict()
        for rank, conn in enumerate(pool.conns):  # ask each worker again: the main model holds its tensors
            conn.send(("state", None))
            _, part = pool._receive(rank, "state")
            assert part and all(torch.equal(after[k], v) for k, v in part.items())
        for t in range(4):
            w = f"blocks.{t}.head.6.weight"
            assert not torch.equal(before[w], after[w])  # every block trained
        assert not torch.equal(before["head.weight"], after["head.weight"])
    finally:
        pool.close()
    assert all(not p.is_alive() for p in pool.procs)


TINY = ["--suite", "quick", "--datasets", "digits", "--train-limit", "300", "--test-limit", "100", "--no-progress",
        "--no-report", "--no-memory-probe", "--set", "noprop-dt.timesteps=4", "--set", "noprop-dt.threads=1"]


@pytest.mark.slow  # worker processes each import torch: seconds
def test_a_parallel_cell_runs_and_records_k_and_threads(tmp_path):
    out = tmp_path / "r"
    assert run_bench.main([*TINY, "--methods", "noprop-dt", "--set", "workers=2", "--eval-points", "2",
                           "--epochs", "8", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["workers"]) == {2} and set(df["threads"]) == {1} and len(df) == 2
    assert df["test_acc"].iloc[-1] > 20  # 10 classes: the gathered model has learned (32-36 % here, K = 1 or 2)
    diag = pd.read_csv(out / "diagnostics.csv")
    workers = diag[diag["diagnostic"].str.startswith("worker_")]
    assert set(workers["block"]) == {1, 2} and set(workers["step"]) == set(df["step"])  # every worker, every point
    busy = workers[workers["diagnostic"] == "worker_busy_s"]["value"]
    cpu = workers[workers["diagnostic"] == "worker_cpu_s"]["value"]
    assert (busy > 0).all() and (cpu > 0).all()
    steps = workers[workers["diagnostic"] == "worker_steps"].groupby("block")["value"].sum()
    assert steps[1] > 0 and steps[2] > 0
    parent = diag[diag["diagnostic"] == "parent_wall_s"]
    assert len(parent) == 2 and (parent["block"] == 0).all()
    # the main process waited at least as long as its slowest worker worked
    assert (parent.set_index("step")["value"] >= busy.groupby(workers.loc[busy.index, "step"]).max() * 0.99).all()
    report = (write_report(out) / "report.md").read_text()
    assert "| digits | noprop-dt | 2 | 1 | 1 |" in report and "| main process |" in report


@pytest.mark.slow  # worker processes each import torch: seconds
def test_a_dying_worker_fails_its_cell_clearly_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    marks = tmp_path / "faults"
    monkeypatch.setenv(faults.ENV, "worker-interval-1:2")  # worker 1 is killed as its second interval starts
    monkeypatch.setenv(faults.DIR_ENV, str(marks))
    out = tmp_path / "r"
    assert run_bench.main([*TINY, "--methods", "noprop-dt,backprop", "--set", "noprop-dt.workers=2",
                           "--eval-points", "2", "--out", str(out)]) == 1
    assert list(marks.glob("worker-interval-1-2-*"))  # the fault happened
    err = capsys.readouterr().err
    assert "noprop-dt/digits/one-hot/seed0[" in err and "]: worker 1 (blocks 3-4) died with exit code -9" in err
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"noprop-dt", "backprop"}  # the first point's rows stay; the next cell still ran
    assert set(df[df["method"] == "noprop-dt"]["step"]) == {df[df["method"] == "noprop-dt"]["step"].min()}


@pytest.mark.parametrize("embedding", ["dim20", "prototype"])
def test_learned_embeddings_are_refused_with_workers(embedding):
    with pytest.raises(ValueError, match=f"workers = 2 needs a fixed embedding: with {embedding}, W_Embed"):
        NoPropDT.default_config("mnist", embedding=embedding, workers=2)
    NoPropDT.default_config("mnist", embedding=embedding, workers=1)
