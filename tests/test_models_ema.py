"""EMA teacher: cosine momentum schedule, exact init copy, the update formula, buffers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sithlib.models import EMATeacher, cosine_schedule, ema_momentum


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_schedule_start_end_pinned_and_midpoint():
    T = 101
    assert ema_momentum(0, T, 0.99) == 0.99
    assert ema_momentum(T - 1, T, 0.99) == 1.0  # exactly, not 1 - 1e-17
    assert ema_momentum(T + 5, T, 0.99) == 1.0
    assert ema_momentum(-3, T, 0.99) == 0.99
    assert ema_momentum(50, T, 0.99) == pytest.approx(0.995, abs=1e-15)
    assert ema_momentum(0, 1, 0.99) == 1.0
    assert cosine_schedule(0, 11, 0.04, 0.07) == 0.04
    assert cosine_schedule(10, 11, 0.04, 0.07) == 0.07
    assert ema_momentum(np.int64(50), np.int64(101), 0.99) == pytest.approx(0.995, abs=1e-15)


def test_schedule_matches_byol_formula():
    T, tau0 = 57, 0.996
    t = np.arange(T)
    ref = 1 - (1 - tau0) * (np.cos(np.pi * t / (T - 1)) + 1) / 2
    ours = np.array([ema_momentum(int(s), T, tau0) for s in t])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(
    total=st.integers(1, 500),
    tau0=st.floats(0.0, 1.0),
)
def test_schedule_monotone_and_bounded(total, tau0):
    values = [ema_momentum(s, total, tau0) for s in range(total)]
    assert all(b >= a for a, b in zip(values[:-1], values[1:], strict=True))
    assert all(tau0 <= v <= 1.0 for v in values)
    assert values[-1] == 1.0


@pytest.mark.parametrize(
    "args, err",
    [
        ((0, 0, 0.99), ValueError),
        ((0, 10, 1.5), ValueError),
        ((0, 10, -0.1), ValueError),
        ((0, 10, 0.99, 0.98), ValueError),
        ((0.5, 10, 0.99), TypeError),
        ((0, 10.0, 0.99), TypeError),
        ((True, 10, 0.99), TypeError),
    ],
)
def test_schedule_bad_arguments(args, err):
    with pytest.raises(err):
        ema_momentum(*args)


def test_teacher_is_exact_frozen_copy():
    student = net()
    teacher = EMATeacher(student)
    s_state, t_state = student.state_dict(), teacher.module.state_dict()
    assert s_state.keys() == t_state.keys()
    assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert all(
        p.data_ptr() != q.data_ptr()
        for p, q in zip(student.parameters(), teacher.module.parameters(), strict=True)
    )


def _train_step(student, opt, seed):
    x = torch.randn(16, 4, generator=gen(seed))
    loss = student(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_update_after_optimizer_step_equals_formula():
    student = net()
    teacher = EMATeacher(student, tau0=0.9)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    total = 5
    for step in range(total):
        before = {k: v.double().clone() for k, v in teacher.module.named_parameters()}
        _train_step(student, opt, step)
        tau = teacher.update(student, step=step, total_steps=total)
        assert tau == ema_momentum(step, total, 0.9)
        for name, p_s in student.named_parameters():
            ref = tau * before[name] + (1 - tau) * p_s.detach().double()
            torch.testing.assert_close(
                dict(teacher.module.named_parameters())[name].double(), ref, atol=1e-7, rtol=1e-6
            )
    assert teacher.last_tau == 1.0
    # The teacher moved, but not all the way to the student.
    w_t, w_s = teacher.module[0].weight, student[0].weight
    assert not torch.equal(w_t, w_s) and not torch.equal(w_t, EMATeacher(net()).module[0].weight)


def test_multi_tensor_update_is_bitwise_the_per_tensor_arithmetic():
    student = net()
    teacher = EMATeacher(student, tau0=0.9)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    _train_step(student, opt, 0)
    before = {k: v.clone() for k, v in teacher.module.named_parameters()}
    tau = teacher.update(student, tau=0.7)
    for name, p_s in student.named_parameters():
        ref = before[name].mul(tau).add(p_s.detach(), alpha=1.0 - tau)
        assert torch.equal(dict(teacher.module.named_parameters())[name], ref), name


def test_tau_limits():
    student = net()
    teacher = EMATeacher(student)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    _train_step(student, opt, 0)
    frozen = [p.clone() for p in teacher.parameters()]
    teacher.update(student, tau=1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, teacher.parameters(), strict=True))
    teacher.update(student, tau=0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters(), strict=True)
    )


@pytest.mark.parametrize("mode", ["copy", "ema", "own"])
def test_batchnorm_buffers(mode):
    student = net()
    teacher = EMATeacher(student, buffers=mode)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    _train_step(student, opt, 0)  # the student's running statistics move
    t_bn, s_bn = teacher.module[1], student[1]
    old_mean = t_bn.running_mean.clone()
    assert not torch.equal(old_mean, s_bn.running_mean)
    teacher.update(student, tau=0.75)
    if mode == "copy":
        assert torch.equal(t_bn.running_mean, s_bn.running_mean)
        assert torch.equal(t_bn.running_var, s_bn.running_var)
    elif mode == "ema":
        ref = 0.75 * old_mean.double() + 0.25 * s_bn.running_mean.double()
        torch.testing.assert_close(t_bn.running_mean.double(), ref, atol=1e-7, rtol=1e-6)
    else:
        assert torch.equal(t_bn.running_mean, old_mean)
    if mode != "own":  # integer buffers are copied, never averaged
        assert t_bn.num_batches_tracked.item() == s_bn.num_batches_tracked.item() == 1


def test_forward_uses_teacher_weights():
    student = net()
    teacher = EMATeacher(student).eval()
    x = torch.randn(5, 4, generator=gen(1))
    torch.testing.assert_close(teacher(x), student.eval()(x))
    assert not teacher(x).requires_grad


def test_bad_arguments():
    student = net()
    with pytest.raises(ValueError, match="buffers"):
        EMATeacher(student, buffers="sync")
    with pytest.raises(ValueError, match="tau0"):
        EMATeacher(student, tau0=1.1)
    with pytest.raises(TypeError, match="student"):
        EMATeacher("resnet")
    teacher = EMATeacher(student)
    with pytest.raises(ValueError, match="tau"):
        teacher.update(student)
    with pytest.raises(ValueError, match="tau"):
        teacher.update(student, tau=1.5)
    with pytest.raises(ValueError, match="not both"):
        teacher.update(student, tau=0.5, step=1, total_steps=3)
    with pytest.raises(ValueError, match="do not match"):
        teacher.update(nn.Linear(4, 3), tau=0.5)
    assert math.isclose(teacher.momentum(0, 10), 0.996)
