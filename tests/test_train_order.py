"""What the engine does around each step: opt.step, then project, then after_step; evaluations
in eval mode that leave no trace in training; BatchNorm made SyncBatchNorm under DDP on GPUs."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sithlib import train as tr
from sithlib.methods import build_method
from sithlib.models import MLP
from sithlib.models.ema import ema_momentum
from sithlib.train import TrainConfig, train
from tests.test_train_ddp import D_IN, _pairs

D_FEAT = 4
CFG = TrainConfig(steps=5, batch_size=32, lr=1e-2, seeds=1, eval_every=5)


def _method_loss(method, batch):
    x_a, x_b = batch
    loss, _ = method(x_a, x_b)
    return loss, method.embed(x_a)


def _method(name: str, config: dict, norm: str | None = None):
    def make(seed: int):
        g = torch.Generator().manual_seed(seed)
        return build_method(name, MLP([D_IN, 16, D_FEAT], norm=norm, generator=g), config,
                            generator=g)
    return make


BYOL = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, "tau0": 0.9}


# -- order: opt.step -> project -> after_step ---------------------------------------------------

def test_swav_prototypes_end_every_step_on_the_unit_sphere():
    """SwAV renormalises its prototypes in after_step: run before opt.step, the last update
    would leave them off the sphere (by ~0.07 after 5 steps)."""
    make = _method("swav", {"proj_hidden_dim": 16, "proj_dim": 8, "num_prototypes": 10,
                            "freeze_prototypes_steps": 0, "epsilon": 0.5})
    norms = []

    def evaluate(model, seed):
        norms.append(model.prototypes.weight.norm(dim=1))
        return {}

    result = train(make, _pairs, _method_loss, dataclasses.replace(CFG, eval_every=1),
                   evaluate=evaluate)
    assert len(norms) == CFG.steps
    for n in norms:
        torch.testing.assert_close(n, torch.ones_like(n), rtol=0, atol=1e-6)
    # The prototypes did learn: unit norm is not just the initial state left alone.
    assert not torch.allclose(result.models[0].prototypes.weight, make(0).prototypes.weight,
                              atol=1e-3)


def _unit_first_rows(i, params):
    w = params["encoder.net.0.weight"]
    w.div_(w.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("project", [None, _unit_first_rows], ids=["plain", "projected"])
def test_byol_teacher_is_the_ema_of_the_students_after_each_step(project):
    """xi_t = tau_t xi_{t-1} + (1 - tau_t) theta_t, theta_t the student after step t's update
    (and projection): a teacher updated before opt.step, or before project, lags behind."""
    make = _method("byol", BYOL)
    students = []

    def evaluate(model, seed):  # eval_every=1: called after every step's after_step
        student = nn.Sequential(model.encoder, model.projector)
        students.append({k: p.detach().clone() for k, p in student.named_parameters()})
        return {}

    cfg = dataclasses.replace(CFG, eval_every=1)
    result = train(make, _pairs, _method_loss, cfg, evaluate=evaluate, project=project)
    assert len(students) == cfg.steps
    xi = {k: p.detach().clone() for k, p in make(0).teacher.module.named_parameters()}
    for t, theta in enumerate(students):
        tau = ema_momentum(t, cfg.steps, BYOL["tau0"], 1.0)  # after_step gets 0-based steps
        xi = {k: tau * v + (1 - tau) * theta[k] for k, v in xi.items()}
    teacher = dict(result.models[0].teacher.module.named_parameters())
    assert teacher.keys() == xi.keys()
    for k, v in xi.items():
        torch.testing.assert_close(teacher[k], v, rtol=1e-6, atol=1e-7, msg=k)
    if project is not None:  # the student really was projected
        w = students[-1]["0.net.0.weight"]
        torch.testing.assert_close(w.norm(dim=1), torch.ones(w.shape[0]))


# -- evaluations: eval mode, then training mode again, no trace in BatchNorm -------------------

def _bn_model(seed: int) -> nn.Module:
    return MLP([D_IN, 16, D_FEAT], norm="batch", generator=torch.Generator().manual_seed(seed))


def _bn_loss(model, batch):
    x_a, x_b = batch
    out = model(x_a)
    return ((out - model(x_b)) ** 2).mean() - out.std(dim=0).mean(), out


_HELD_OUT = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(7))


def test_evaluate_sees_every_module_in_eval_mode_and_training_resumes_in_train_mode():
    modes, during_steps = [], []

    def loss(model, batch):
        during_steps.append([m.training for m in model.modules()])
        return _bn_loss(model, batch)

    def evaluate(model, seed):
        modes.append([m.training for m in model.modules()])
        return {"out": float(model(_HELD_OUT).mean())}

    cfg = dataclasses.replace(CFG, eval_every=2, eval_at_start=True)
    result = train(_bn_model, _pairs, loss, cfg, evaluate=evaluate)
    assert len(modes) == 4  # steps 0, 2, 4, 5
    assert all(not any(m) for m in modes)
    # Steps after an evaluation train in train mode again (the eval_at_start pass is the first).
    assert len(during_steps) == cfg.steps + 1 and all(all(m) for m in during_steps[1:])
    assert all(m.training for m in result.models[0].modules())


def test_evaluations_leave_batch_norm_statistics_and_weights_bitwise_alone():
    """A forward pass in train mode would move the running statistics: evaluations must not."""
    cfg = dataclasses.replace(CFG, eval_every=1)
    plain = train(_bn_model, _pairs, _bn_loss, cfg).models[0]
    evaluated = train(_bn_model, _pairs, _bn_loss, cfg,
                      evaluate=lambda m, s: {"out": float(m(_HELD_OUT).mean())}).models[0]
    a, b = dict(plain.named_buffers()), dict(evaluated.named_buffers())
    assert any("running_mean" in k for k in a) and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for (k, p), q in zip(plain.named_parameters(), evaluated.parameters(), strict=True):
        assert torch.equal(p, q), k


# -- SyncBatchNorm under DDP on GPUs -----------------------------------------------------------

def _byol_with_batch_norm() -> nn.Module:
    # 5 BatchNorm layers: in the encoder, the projector, the predictor and the EMA teacher's
    # copy of the first two, which the method builds in make_model, before any conversion.
    return _method("byol", BYOL, norm="batch")(0)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_sync_batchnorm_converts_every_batch_norm_teacher_included(device):
    reference = _byol_with_batch_norm()
    model = tr._sync_batchnorm(copy.deepcopy(reference), 2, device)  # builds modules only
    bns = [(k, m) for k, m in model.named_modules() if isinstance(m, _BatchNorm)]
    assert len(bns) == 5 and any(k.startswith("teacher.") for k, _ in bns)
    assert all(isinstance(m, nn.SyncBatchNorm) for _, m in bns), bns
    # Same weights and running statistics under the same names: the teacher still matches.
    ref = reference.state_dict()
    assert model.state_dict().keys() == ref.keys()
    for k, v in model.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, ref[k]), k


@pytest.mark.parametrize(("world", "device"), [(1, "cuda"), (1, "cpu"), (2, "cpu"),
                                               (2, torch.device("cpu"))])
def test_sync_batchnorm_leaves_single_process_and_cpu_runs_alone(world, device):
    """gloo on the CPU has no SyncBatchNorm; one process has nothing to synchronise."""
    model = _byol_with_batch_norm()
    assert tr._sync_batchnorm(model, world, device) is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert sum(isinstance(m, _BatchNorm) for m in model.modules()) == 5


def test_train_trains_the_models_the_sync_batchnorm_helper_returns(monkeypatch):
    calls, returned = [], []

    def spy(model, world_size, device):
        calls.append((world_size, device))
        returned.append(model)
        return model

    monkeypatch.setattr(tr, "_sync_batchnorm", spy)
    result = train(_bn_model, _pairs, _bn_loss, dataclasses.replace(CFG, steps=1, seeds=2))
    assert calls == [(1, "cpu")] * 2
    assert all(a is b for a, b in zip(result.models, returned, strict=True))
