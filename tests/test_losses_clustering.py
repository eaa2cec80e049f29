"""Sinkhorn, SwAV and DINO against float64 re-implementations of the official algorithms
(exp-domain Sinkhorn, explicit loops over crops), plus marginals, invariances and schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sithlib.losses import dino, dino_center_update, dino_teacher_temp, sinkhorn, swav

TOL = 1e-6


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def scores(n, k, seed=0):
    """Cosine scores of unit embeddings against unit prototypes, as SwAV computes them."""
    z = F.normalize(rand(n, 5, seed=seed), dim=1)
    c = F.normalize(rand(k, 5, seed=seed + 100), dim=1)
    return z @ c.T


# ---------------------------------------------------------------- references


def ref_sinkhorn(s, eps, iterations):
    """The official distributed_sinkhorn on one process, in the exp domain."""
    q = np.exp(s.numpy() / eps).T  # K x B
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def log_softmax_row(row, tau):
    m = max(row / tau)
    lse = m + math.log(sum(math.exp(x / tau - m) for x in row))
    return [x / tau - lse for x in row]


def ref_swav(sa, sb, tau, eps, iterations):
    qa, qb = ref_sinkhorn(sa, eps, iterations), ref_sinkhorn(sb, eps, iterations)
    sa, sb = sa.numpy(), sb.numpy()
    n, k = sa.shape
    total = 0.0
    for i in range(n):
        lpa, lpb = log_softmax_row(sa[i], tau), log_softmax_row(sb[i], tau)
        total += sum(qa[i, j] * lpb[j] + qb[i, j] * lpa[j] for j in range(k))
    return -0.5 * total / n


def ref_dino(student, teacher, center, ts, tt):
    total, terms = 0.0, 0
    for q, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == q:
                continue
            loss = 0.0
            for i in range(len(t)):
                logits = (t[i] - center) / tt
                p = np.exp(logits - logits.max())
                p = p / p.sum()
                loss += -sum(p[j] * lp for j, lp in enumerate(log_softmax_row(s[i], ts)))
            total += loss / len(t)
            terms += 1
    return total / terms


# ---------------------------------------------------------------- Sinkhorn


@pytest.mark.parametrize("iterations", [0, 1, 3, 10])
@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_sinkhorn_matches_official_algorithm(iterations, eps):
    s = scores(9, 4, seed=iterations)
    got = sinkhorn(s, epsilon=eps, iterations=iterations)
    assert torch.allclose(got, torch.from_numpy(ref_sinkhorn(s, eps, iterations)), atol=TOL, rtol=0)


def test_sinkhorn_marginals_and_no_gradient():
    s = scores(12, 3, seed=1).requires_grad_()
    q = sinkhorn(s, iterations=3)
    assert not q.requires_grad
    assert torch.allclose(q.sum(1), torch.ones(12, dtype=torch.float64), atol=1e-12)
    q = sinkhorn(s, iterations=500)  # converged: every prototype gets n/K of the mass
    assert torch.allclose(q.sum(0), torch.full((3,), 4.0, dtype=torch.float64), atol=1e-6)


def test_sinkhorn_invariant_to_prototype_offsets_and_converged_sample_offsets():
    s = scores(8, 5, seed=2)
    # The first step rescales every prototype, so a per-prototype offset cancels exactly.
    assert torch.allclose(sinkhorn(s + rand(1, 5, seed=4)), sinkhorn(s), atol=1e-12)
    # A per-sample offset only cancels at the fixed point (the unique doubly-scaled matrix).
    moved = s + 0.01 * rand(8, 1, seed=3)
    assert torch.allclose(sinkhorn(moved, iterations=500), sinkhorn(s, iterations=500), atol=1e-9)


def test_sinkhorn_log_domain_does_not_overflow():
    s = 100 * scores(6, 4, seed=3).float()  # exp(s / 0.05) = exp(2000) overflows float64 too
    q = sinkhorn(s)
    assert torch.isfinite(q).all() and q.dtype == torch.float32
    # The official exp-domain algorithm is exact under a per-prototype offset (its first step
    # rescales each prototype), so subtracting each column's maximum makes it computable.
    s64 = s.double()
    ref = ref_sinkhorn(s64 - s64.max(0, keepdim=True).values, 0.05, 3)
    assert np.isfinite(ref).all() and 0.2 < ref.max(1).min() < 0.8  # not all one-hot codes
    assert torch.allclose(sinkhorn(s64), torch.from_numpy(ref), atol=1e-12, rtol=0)
    # float32 rounds S / eps ~ 2000 to ulp 1.2e-4, which moves the codes by ~1e-4 at most.
    assert torch.allclose(q.double(), torch.from_numpy(ref), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- SwAV


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_swav_matches_loop(tau):
    sa, sb = scores(7, 4, seed=6), scores(7, 4, seed=7)
    got = swav(sa, sb, temperature=tau)
    assert abs(got.item() - ref_swav(sa, sb, tau, 0.05, 3)) < TOL


def test_swav_gradient_treats_codes_as_constants():
    sa, sb = scores(6, 4, seed=8).requires_grad_(), scores(6, 4, seed=9)
    loss = swav(sa, sb, temperature=0.1)
    (g,) = torch.autograd.grad(loss, sa)
    q_b = sinkhorn(sb)
    p_a = torch.softmax(sa.detach() / 0.1, dim=1)
    # d/ds_a of -1/(2n) sum q_b log softmax(s_a / tau), rows of q_b summing to 1
    assert torch.allclose(g, -(q_b - p_a) / (2 * 6 * 0.1), atol=1e-12)


def test_swav_queue_is_used_for_the_codes_only():
    sa, sb = scores(5, 4, seed=10), scores(5, 4, seed=11)
    qa_scores, qb_scores = scores(7, 4, seed=12), scores(7, 4, seed=13)
    got = swav(sa, sb, queue_a=qa_scores, queue_b=qb_scores)
    q_a = sinkhorn(torch.cat([qa_scores, sa]))[-5:]
    q_b = sinkhorn(torch.cat([qb_scores, sb]))[-5:]
    lp_a, lp_b = F.log_softmax(sa / 0.1, 1), F.log_softmax(sb / 0.1, 1)
    want = -0.5 * ((q_a * lp_b).sum(1).mean() + (q_b * lp_a).sum(1).mean())
    assert abs(got.item() - want.item()) < 1e-12
    assert abs(swav(sa, sb).item() - got.item()) > 1e-6  # the queue changes the codes
    assert abs(swav(sb, sa).item() - swav(sa, sb).item()) < 1e-12
    # A queue for one view only: the views' Sinkhorn inputs differ in length.
    one = swav(sa, sb, queue_a=qa_scores)
    want = -0.5 * ((q_a * lp_b).sum(1).mean() + (sinkhorn(sb) * lp_a).sum(1).mean())
    assert abs(one.item() - want.item()) < 1e-12


# ---------------------------------------------------------------- DINO


@pytest.mark.parametrize("n_local", [0, 2])
def test_dino_matches_loop(n_local):
    k = 6
    teacher = [rand(4, k, seed=20 + i) for i in range(2)]
    student = [rand(4, k, seed=30 + i) for i in range(2 + n_local)]
    center = rand(k, seed=40) * 0.1
    got = dino(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    student_np, teacher_np = [s.numpy() for s in student], [t.numpy() for t in teacher]
    ref = ref_dino(student_np, teacher_np, center.numpy(), 0.1, 0.04)
    assert abs(got.item() - ref) < TOL
    stacked = dino(torch.stack(student), torch.stack(teacher), center[None], teacher_temp=0.04)
    assert abs(stacked.item() - got.item()) < 1e-12


def test_dino_invariances_and_teacher_has_no_gradient():
    k = 5
    teacher = rand(2, 3, k, seed=50).requires_grad_()
    student = rand(3, 3, k, seed=51).requires_grad_()
    center = rand(k, seed=52)
    loss = dino(student, teacher, center)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    shift = rand(k, seed=53)
    with torch.no_grad():
        # shifting teacher and center together, or any logit row by a constant, changes nothing
        assert abs(dino(student, teacher + shift, center + shift).item() - loss.item()) < 1e-12
        row = rand(3, 3, 1, seed=54)
        assert abs(dino(student + row, teacher + row[:2], center).item() - loss.item()) < 1e-12


def test_dino_center_update():
    center = rand(1, 4, seed=60)
    t = rand(2, 3, 4, seed=61)
    new = dino_center_update(center, t, momentum=0.9)
    want = 0.9 * center + 0.1 * t.reshape(-1, 4).mean(0)
    assert torch.allclose(new, want, atol=1e-12) and new.shape == (1, 4)
    assert torch.equal(center, rand(1, 4, seed=60))  # not modified in place
    flat = dino_center_update(center.reshape(4), list(t), momentum=0.0)
    assert torch.allclose(flat, t.reshape(-1, 4).mean(0), atol=1e-12) and flat.shape == (4,)
    assert torch.equal(dino_center_update(center, t[0], momentum=1.0), center)


def test_dino_teacher_temp_is_official_linspace():
    warmup, epochs, start, end = 30, 40, 0.04, 0.07
    official = np.concatenate([np.linspace(start, end, warmup), np.ones(epochs - warmup) * end])
    ours = [dino_teacher_temp(e, warmup_steps=warmup, start=start, end=end) for e in range(epochs)]
    assert np.allclose(ours, official, atol=1e-15, rtol=0)
    assert dino_teacher_temp(0) == 0.04 and dino_teacher_temp(10**6) == 0.04
    assert dino_teacher_temp(0, warmup_steps=1, start=0.02, end=0.07) == 0.02


def test_clustering_bad_input():
    s = scores(4, 3)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(s, epsilon=0)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(s, iterations=-1)
    with pytest.raises(TypeError, match="iterations"):
        sinkhorn(s, iterations=2.5)
    with pytest.raises(ValueError, match="temperature"):
        swav(s, s, temperature=0)
    with pytest.raises(ValueError, match="same shape"):
        swav(s, scores(4, 5))
    with pytest.raises(ValueError, match="queue_a"):
        swav(s, s, queue_a=scores(3, 5))
    with pytest.raises(ValueError, match="teacher_temp"):
        dino([s, s], [s], torch.zeros(3), teacher_temp=0)
    with pytest.raises(ValueError, match="student_temp"):
        dino([s, s], [s], torch.zeros(3), student_temp=-0.1)
    with pytest.raises(ValueError, match="center"):
        dino([s, s], [s], torch.zeros(4))
    with pytest.raises(ValueError, match="crops"):
        dino([s], [s], torch.zeros(3))
    with pytest.raises(TypeError, match="student_out"):
        dino([], [s], torch.zeros(3))
    with pytest.raises(ValueError, match="momentum"):
        dino_center_update(torch.zeros(3), s, momentum=1.5)
    with pytest.raises(TypeError, match="center must be a floating-point tensor"):
        dino_center_update(torch.zeros(3, dtype=torch.long), s)
    with pytest.raises(ValueError, match=r"center must have shape \(3,\) or \(1, 3\)"):
        dino_center_update(torch.zeros(2, 3, dtype=torch.float64), s)
    with pytest.raises(ValueError, match="iterations must be an int >= 0"):
        swav(s, s, iterations=-1)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        dino_teacher_temp(-1)
    with pytest.raises(ValueError, match="warmup_steps"):
        dino_teacher_temp(0, warmup_steps=-1)
    with pytest.raises(ValueError, match="end"):
        dino_teacher_temp(0, end=0)
