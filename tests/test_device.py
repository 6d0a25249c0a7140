"""Correct on a GPU, shown without one. Every method (the built-in ones and the example plugin), every
embedding, a training step of every stage and every inference solver run on torch's `meta` device, which
raises on any op that mixes devices and on any read of a device value, under measure/dispatch.StepAudit,
which also records host-to-device copies and the host reads it answers for torchdiffeq's time grids;
forward passes and inference also run on a `cuda` device faked by FakeTensorMode.

Allowed: host reads inside torchdiffeq (its fixed-grid solvers compare grid times on the host, about 14
per step of an adjoint training step; the neural-ODE baselines keep torchdiffeq), excused by module name.
Nothing else: no host read, no host-to-device copy in any training step or sampler of ours."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from noprop_bench.data import DATASETS, Split
from noprop_bench.measure.dispatch import StepAudit, audit_training_step, excused, on_device, tiny_split
from noprop_bench.methods import EMBEDDINGS, METHODS
from noprop_bench.run.precision import fast_layout

EXCUSED = ("torchdiffeq.",)  # host reads of torchdiffeq's fixed-grid solvers, by module
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "local_ce"
SPEC = DATASETS["mnist"]


def _plugin():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from noprop_bench_local_ce import LocalCE
    finally:
        sys.path.remove(str(EXAMPLE))
    return LocalCE


CLASSES = {**METHODS, "local-ce (example plugin)": _plugin()}


def _accepts(cls, embedding) -> bool:
    try:
        cls.default_config("mnist", embedding=embedding)
        return True
    except ValueError:  # the example plugin trains on class labels only (one-hot)
        return False


CASES = [(name, embedding) for name in CLASSES for embedding in EMBEDDINGS if _accepts(CLASSES[name], embedding)]


def small_config(cls, embedding):
    """Two blocks, or four solver steps: every code path, little work (a method's own T where it has one)."""
    try:
        return cls.default_config("mnist", embedding=embedding, timesteps=4 if cls.continuous else 2)
    except ValueError:
        return cls.default_config("mnist", embedding=embedding)


def settings(cls, config):
    """Every inference rule the method has, at a small step count for the continuous ones."""
    solvers = cls.solvers or (cls.default_solver,)
    return [(3 if cls.continuous else None, s) for s in solvers]


def clean(audit: StepAudit) -> tuple[list, list]:
    """(host reads outside torchdiffeq, host-to-device copies): both must be empty."""
    _, rest = excused(audit.host_reads, EXCUSED)
    return sorted(rest), sorted(audit.h2d_copies)


@pytest.mark.parametrize("name,embedding", CASES)
def test_training_steps_on_meta_mix_no_devices_and_read_nothing_back(name, embedding):
    cls = CLASSES[name]
    torch.manual_seed(0)
    method, optimizer, split = on_device(cls, SPEC, small_config(cls, embedding), "meta", tiny_split(SPEC, 64))
    for stage in method.stages():
        audit = audit_training_step(method, optimizer, split, 32, stage, answer_grid_reads=True)
        assert clean(audit) == ([], []), f"{name} stage {stage}"
    assert all(p.device.type == "meta" for p in method.parameters())


@pytest.mark.parametrize("name,embedding", CASES)
def test_every_sampler_on_meta_mixes_no_devices_and_reads_nothing_back(name, embedding):
    cls = CLASSES[name]
    torch.manual_seed(0)
    config = small_config(cls, embedding)
    method, _, split = on_device(cls, SPEC, config, "meta", tiny_split(SPEC, 64))
    method.eval()
    x, _ = next(split.batches(16, shuffle=False))
    for steps, solver in settings(cls, config):
        with torch.no_grad(), StepAudit(answer_grid_reads=True) as audit:
            scores = method.predict(x, steps=steps, solver=solver)
        assert scores.device.type == "meta" and scores.shape == (16, SPEC.num_classes)
        assert clean(audit) == ([], []), f"{name} {solver}"


def fake_cuda(method, mode):
    """The method's parameters and buffers as FakeTensors on `cuda` (a GPU this machine does not have)."""
    params = [(m, k, mode.from_tensor(p.data), p.requires_grad) for m in method.modules()
              for k, p in m._parameters.items() if p is not None]
    buffers = [(m, k, mode.from_tensor(b)) for m in method.modules() for k, b in m._buffers.items() if b is not None]
    with mode:
        for m, k, fake, grad in params:
            m._parameters[k] = nn.Parameter(fake.to("cuda"), requires_grad=grad)
        for m, k, fake in buffers:
            m._buffers[k] = fake.to("cuda")
    method.device = torch.device("cuda")
    return method


@pytest.mark.parametrize("name,embedding", CASES)
def test_forward_passes_and_samplers_on_a_faked_cuda_device(name, embedding):
    from torch._subclasses.fake_tensor import FakeTensorMode
    cls = CLASSES[name]
    torch.manual_seed(0)
    config = small_config(cls, embedding)
    cpu = tiny_split(SPEC, 64)
    method = fast_layout(cls(SPEC, config, "cpu", train=cpu))
    mode = FakeTensorMode()
    fake_cuda(method, mode)
    fakes = [mode.from_tensor(t) for t in (cpu.images, cpu.labels, cpu._mean, cpu._std)]
    with mode:
        split = Split(*(t.to("cuda") for t in fakes))
        x, y = next(split.batches(16, shuffle=False))
        with StepAudit(answer_grid_reads=True) as audit:
            for stage in method.stages() if not cls.owns_backward else []:  # its backward: on meta, above
                loss, _ = method.loss(x, y, stage)
                assert loss.device.type == "cuda"
            method.eval()
            with torch.no_grad():
                for steps, solver in settings(cls, config):
                    assert method.predict(x, steps=steps, solver=solver).device.type == "cuda"
    assert clean(audit) == ([], [])


def test_the_audit_sees_what_it_must_refuse():
    """A host-to-device copy, a host read of a device value, and a cross-device op, each caught."""
    with StepAudit() as audit:
        torch.tensor([0.0, 1.0], device="meta")
        torch.ones(3).to("meta")
    assert sum(audit.h2d_copies.values()) == 2
    with pytest.raises(RuntimeError):
        torch.ones(3, device="meta").sum().item()
    with pytest.raises(RuntimeError):
        torch.cat([torch.ones(1), torch.ones(1, device="meta")])


def test_torchdiffeqs_host_reads_are_counted_per_step():
    """The cost the neural-ODE baselines keep: host reads per adjoint training step grow with T."""
    cls = METHODS["adjoint"]
    reads = {}
    for T in (4, 8):
        torch.manual_seed(0)
        method, opt, split = on_device(cls, SPEC, cls.default_config("mnist", timesteps=T), "meta", tiny_split(SPEC, 64))
        audit = audit_training_step(method, opt, split, 32, None, answer_grid_reads=True)
        ok, rest = excused(audit.host_reads, EXCUSED)
        assert not rest
        reads[T] = sum(ok.values())
    per_step = (reads[8] - reads[4]) / 4
    assert 12 <= per_step <= 16  # about 14 host reads per solver step (forward and adjoint backward)
