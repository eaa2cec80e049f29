"""SSL methods: registry and configs, wiring against the loss functions, training, state."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from sithlib import losses
from sithlib.methods import (
    METHODS,
    available_methods,
    build_method,
    method_config,
)
from sithlib.models import MLP, ema_momentum

N, D_IN, D_FEAT = 32, 5, 6

# Small heads so that every method trains on the CPU in well under a second.
SMALL = {
    "simclr": {"proj_hidden_dim": 32, "proj_dim": 8},
    "infonce": {},
    "byol": {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32, "tau0": 0.9},
    "simsiam": {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 4},
    "swav": {"proj_hidden_dim": 32, "proj_dim": 8, "num_prototypes": 10,
             "freeze_prototypes_steps": 0},
    "dino": {"out_dim": 20, "hidden_dim": 32, "bottleneck_dim": 8, "tau0": 0.9},
    "barlow_twins": {"proj_dims": (32, 32)},
    "vicreg": {"proj_dims": (32, 32)},
    "diet": {"num_instances": N},
    "supervised": {"num_classes": 4},
    "stability": {},
}

# float32 results against float64 references: torch.testing's float32 defaults.
F32 = {"rtol": 1.3e-6, "atol": 1e-5}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make(name, seed=0, **overrides):
    g = gen(seed)
    encoder = MLP([D_IN, 32, D_FEAT], generator=g)
    return build_method(name, encoder, {**SMALL[name], **overrides}, generator=g)


def batch(seed=1, noise=0.1):
    """Two noisy views of a fixed set of N samples (the noise depends on ``seed``)."""
    z = torch.randn(N, D_IN, generator=gen(0))
    g = gen(seed)
    x_a = z + noise * torch.randn(N, D_IN, generator=g)
    x_b = z + noise * torch.randn(N, D_IN, generator=g)
    index = torch.arange(N)
    return x_a, x_b, index, index % 4


def train(method, steps, lr=1e-2, seed=1):
    """Adam on the trainable parameters; the same fixed batch (with fresh noise) every step."""
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=lr)
    history = []
    for t in range(steps):
        x_a, x_b, index, y = batch(seed=seed * 1000 + t)
        loss, logs = method(x_a, x_b, index=index, y=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(t, steps)
        history.append(loss.item())
    return history, logs


# -- registry and configs ------------------------------------------------------------------------


def test_registry_names():
    assert available_methods() == (
        "simclr", "infonce", "byol", "simsiam", "swav", "dino", "barlow_twins", "vicreg",
        "diet", "supervised", "stability",
    )
    assert set(METHODS) == set(SMALL)


def test_unknown_method_lists_allowed_names():
    with pytest.raises(ValueError, match="unknown method 'mocov3'.*simclr.*stability"):
        build_method("mocov3", MLP([3, 4]))
    with pytest.raises(ValueError, match="allowed"):
        method_config("moco")


def test_defaults_are_the_official_values():
    c = method_config("simclr")
    assert (c.temperature, c.proj_dim, c.proj_layers, c.proj_hidden_dim) == (0.1, 128, 2, None)
    assert method_config("infonce").temperature == 1.0
    c = method_config("byol")
    assert (c.tau0, c.tau_end, c.proj_hidden_dim, c.proj_dim) == (0.996, 1.0, 4096, 256)
    c = method_config("simsiam")
    assert (c.proj_dim, c.proj_layers, c.pred_hidden_dim) == (2048, 3, 512)
    c = method_config("swav")
    assert (c.temperature, c.epsilon, c.sinkhorn_iterations) == (0.1, 0.05, 3)
    assert (c.num_prototypes, c.proj_dim, c.freeze_prototypes_steps, c.queue_length) == (
        3000, 128, 313, 0,
    )
    c = method_config("dino")
    assert (c.student_temp, c.teacher_temp, c.center_momentum, c.tau0) == (0.1, 0.04, 0.9, 0.996)
    assert (c.out_dim, c.hidden_dim, c.bottleneck_dim, c.norm_last_layer) == (
        65536, 2048, 256, True,
    )
    assert method_config("barlow_twins").lambd == 0.0051
    c = method_config("vicreg")
    assert (c.sim_coeff, c.std_coeff, c.cov_coeff, c.proj_dims) == (25, 25, 1, (8192,) * 3)
    assert method_config("diet", num_instances=10).label_smoothing == 0.0


def _defaults(fn) -> dict:
    import inspect

    return {k: v.default for k, v in inspect.signature(fn).parameters.items()
            if v.default is not inspect.Parameter.empty}


def test_loss_functions_default_to_the_papers_values():
    """The defaults of the loss functions themselves, for readers who call them directly (the
    papers' values, reference/papers.md 7.9; InfoNCE tau = 1 as cl-ica)."""
    assert _defaults(losses.nt_xent)["temperature"] == 0.1
    assert _defaults(losses.info_nce)["temperature"] == 1.0
    assert _defaults(losses.barlow_twins)["lambd"] == 0.0051
    d = _defaults(losses.vicreg)
    assert (d["sim_coeff"], d["std_coeff"], d["cov_coeff"], d["gamma"], d["eps"]) == (
        25.0, 25.0, 1.0, 1.0, 1e-4)
    d = _defaults(losses.swav)
    assert (d["temperature"], d["epsilon"], d["iterations"]) == (0.1, 0.05, 3)
    assert (_defaults(losses.sinkhorn)["epsilon"], _defaults(losses.sinkhorn)["iterations"]) == (
        0.05, 3)
    d = _defaults(losses.dino)
    assert (d["student_temp"], d["teacher_temp"]) == (0.1, 0.04)
    assert _defaults(losses.dino_center_update)["momentum"] == 0.9
    d = _defaults(losses.dino_teacher_temp)
    assert (d["start"], d["end"], d["warmup_steps"]) == (0.04, 0.04, 0)


def test_config_is_frozen_and_accepts_mappings_and_overrides():
    c = method_config("vicreg", {"proj_dims": [16, 8]}, sim_coeff=10.0)
    assert c.proj_dims == (16, 8) and c.sim_coeff == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.sim_coeff = 1.0
    assert method_config("vicreg", c) == c
    assert method_config("vicreg", c, cov_coeff=2.0).cov_coeff == 2.0
    assert hash(c) == hash(method_config("vicreg", {"proj_dims": (16, 8)}, sim_coeff=10.0))


@pytest.mark.parametrize(
    "name, values, match",
    [
        ("simclr", {"temperature": 0.0}, "temperature"),
        ("simclr", {"proj_layers": -1}, "proj_layers"),
        ("infonce", {"similarity": "cos"}, "similarity"),
        ("infonce", {"negatives": "queue"}, "negatives"),
        ("byol", {"tau0": 1.5}, "tau0"),
        ("byol", {"tau0": 0.99, "tau_end": 0.9}, "tau_end"),
        ("byol", {"ema_buffers": "sync"}, "ema_buffers"),
        ("swav", {"epsilon": -1.0}, "epsilon"),
        ("swav", {"queue_length": -5}, "queue_length"),
        ("dino", {"teacher_temp": 0}, "teacher_temp"),
        ("dino", {"center_momentum": 2.0}, "center_momentum"),
        ("dino", {"tau0": 0.99, "tau_end": 0.9}, "tau_end must be >= tau0"),
        ("barlow_twins", {"proj_dims": ()}, "proj_dims"),
        ("barlow_twins", {"lambd": -1.0}, "lambd"),
        ("vicreg", {"estimator": "knn"}, "estimator"),
        ("diet", {"num_instances": 1}, "num_instances"),
        ("diet", {"num_instances": 5, "label_smoothing": 1.5}, "label_smoothing"),
        ("supervised", {"num_classes": 0}, "num_classes"),
        ("stability", {"lambd": float("nan")}, "lambd"),
        ("simclr", {"distributed": 1}, "distributed"),
        ("simclr", {"tau": 0.1}, "unknown config field"),
        ("diet", {}, "num_instances"),
    ],
)
def test_bad_config_values(name, values, match):
    with pytest.raises(ValueError, match=match):
        method_config(name, values)


def test_bad_config_type_and_build_arguments():
    with pytest.raises(TypeError, match="SimCLRConfig"):
        method_config("simclr", method_config("byol"))
    with pytest.raises(TypeError, match="encoder"):
        build_method("simclr", "resnet18")
    with pytest.raises(ValueError, match="feature_dim"):
        build_method("simclr", torch.nn.Linear(3, 4))
    m = build_method("infonce", torch.nn.Linear(3, 4), feature_dim=4)
    assert m.feature_dim == 4
    with pytest.raises(ValueError, match="feature_dim"):
        build_method("infonce", torch.nn.Linear(3, 4), feature_dim=0)


# -- wiring: the method's loss is the loss function on the right pieces ---------------------------


def test_simclr_is_nt_xent_on_the_jointly_normalised_projections():
    m = make("simclr")
    x_a, x_b, _, _ = batch()
    loss, logs = m(x_a, x_b)
    with torch.no_grad():
        z = m.projector(m.encoder(torch.cat([x_a, x_b])))  # one batch: BatchNorm over 2n
        ref = losses.nt_xent(z[:N], z[N:], temperature=0.1)
    torch.testing.assert_close(loss.detach(), ref)
    u = F.normalize(z, dim=1)
    torch.testing.assert_close(logs["center_norm"], u.mean(0).norm())
    assert logs["loss"] == loss.detach() and not logs["loss"].requires_grad


def test_infonce_uses_encoder_output_and_config():
    m = make("infonce", temperature=0.5, negatives="anchors", include_anchor=True, normalize=True)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    f_a = F.normalize(m.encoder(x_a), dim=1)
    f_b = F.normalize(m.encoder(x_b), dim=1)
    ref = losses.info_nce(f_a, f_b, temperature=0.5, negatives="anchors", include_anchor=True)
    torch.testing.assert_close(loss, ref)


def _move_student(m, *modules):
    """Shift the student's weights away from the teacher's copy (equal at construction), so a
    test can tell which network made the targets."""
    g = gen(7)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_byol_sums_both_directions_against_the_teacher():
    m = make("byol")
    _move_student(m, m.encoder, m.projector)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    encoder, projector = m.teacher.module
    with torch.no_grad():
        t_a, t_b = (projector(encoder(x)) for x in (x_a, x_b))
        p_a, p_b = (m.predictor(m.projector(m.encoder(x))) for x in (x_a, x_b))
        ref = losses.byol(p_a, t_b) + losses.byol(p_b, t_a)
        s_a, s_b = (m.projector(m.encoder(x)) for x in (x_a, x_b))
        from_student = losses.byol(p_a, s_b) + losses.byol(p_b, s_a)
    torch.testing.assert_close(loss.detach(), ref)
    assert not torch.allclose(ref, from_student, rtol=1e-3)  # the targets are the teacher's


def test_simsiam_averages_both_directions():
    m = make("simsiam")
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)) for x in (x_a, x_b))  # separate BatchNorm
        ref = 0.5 * (losses.simsiam(m.predictor(z_a), z_b) + losses.simsiam(m.predictor(z_b), z_a))
    torch.testing.assert_close(loss.detach(), ref)
    assert -1 <= loss.item() <= 1


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg", "stability"])
def test_redundancy_and_stability_losses(name):
    m = make(name)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)) for x in (x_a, x_b))
        fn = {"barlow_twins": losses.barlow_twins, "vicreg": losses.vicreg,
              "stability": losses.stability}[name]
        ref = fn(z_a, z_b)
    torch.testing.assert_close(loss.detach(), ref)


@pytest.mark.parametrize("estimator", ["logdet", "pairwise"])
def test_vicreg_entropy_variants(estimator):
    m = make("vicreg", estimator=estimator, sim_coeff=5.0)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)) for x in (x_a, x_b))
        ref = losses.vicreg_entropy(z_a, z_b, estimator=estimator, sim_coeff=5.0)
    torch.testing.assert_close(loss.detach(), ref)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_diet_and_supervised_cross_entropy_over_views(smoothing):
    m = make("diet", beta=2.0, label_smoothing=smoothing)
    x_a, x_b, index, y = batch()
    logits = [2.0 * m.encoder(x) @ m.head.weight.t() for x in (x_a, x_b)]
    ce = functools.partial(F.cross_entropy, label_smoothing=smoothing)
    ref = 0.5 * sum(ce(lg, index) for lg in logits)
    torch.testing.assert_close(m(x_a, x_b, index=index)[0], ref)
    torch.testing.assert_close(m(x_a, index=index)[0], ce(logits[0], index))
    assert m.head.bias is None and not m.beta.requires_grad
    s = make("supervised", label_smoothing=smoothing)
    ref = ce(s.classifier(s.encoder(x_a)), y)
    torch.testing.assert_close(s(x_a, y=y)[0], ref)


SEPARATE_VIEWS = ["infonce", "byol", "simsiam", "barlow_twins", "vicreg", "stability", "diet"]


def _encoder_calls(m):
    calls = []
    m.encoder.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    return calls


@pytest.mark.parametrize("name", SEPARATE_VIEWS)
def test_row_independent_encoder_sees_both_views_in_one_batch(name, monkeypatch):
    # The encoder has no batch norm: one call on both views, with the loss and gradients of
    # the reference that runs every module once per view (the heads' batch norm keeps each
    # view's own statistics either way).
    def loss_and_grads(m):
        x_a, x_b, index, y = batch()
        loss, _ = m(x_a, x_b, index=index, y=y)
        loss.backward()
        return loss.detach(), {k: p.grad for k, p in m.named_parameters() if p.grad is not None}

    m = make(name)
    calls = _encoder_calls(m)
    loss, grads = loss_and_grads(m)
    assert calls[0] == 2 * N and all(c == 2 * N for c in calls)
    monkeypatch.setattr("sithlib.methods.mixes_rows", lambda net: True)
    ref = make(name)
    ref_calls = _encoder_calls(ref)
    ref_loss, ref_grads = loss_and_grads(ref)
    assert ref_calls[:2] == [N, N]
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], msg=k)


def test_pair_needs_modules_where_views_keep_their_own_statistics():
    m = make("vicreg")
    x_a, x_b, _, _ = batch()
    with pytest.raises(TypeError, match="modules"):
        m._pair(lambda x: x, x_a, x_b)
    out = make("simclr")._pair(lambda x: 2 * x, x_a, x_b)  # one batch throughout: any callable
    torch.testing.assert_close(out[0], 2 * x_a)


@pytest.mark.parametrize("name", SEPARATE_VIEWS)
def test_batch_norm_encoder_keeps_each_views_statistics(name):
    g = gen(0)
    encoder = MLP([D_IN, 32, D_FEAT], norm="batch", generator=g)
    m = build_method(name, encoder, SMALL[name], generator=g)
    x_a, x_b, index, y = batch()
    calls = _encoder_calls(m)
    m(x_a, x_b, index=index, y=y)
    assert calls[:2] == [N, N]


# -- training and determinism --------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in SMALL if n != "dino"])
def test_trains_and_loss_decreases(name):
    history, logs = train(make(name), steps=25)
    assert all(math.isfinite(v) for v in history)
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < first, f"{name}: {history}"
    assert set(logs) >= {"loss", "center_norm"}


def test_dino_trains_with_finite_loss_and_sharpened_targets():
    m = make("dino")
    history, logs = train(m, steps=10)
    assert all(math.isfinite(v) for v in history)
    assert logs["teacher_temp"] == 0.04 and m.step == 10


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_gives_identical_training(name):
    runs = []
    for _ in range(2):
        m = make(name, seed=3)
        history, _ = train(m, steps=3, seed=4)
        runs.append((history, [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1], runs[1][1], strict=True))
    other = make(name, seed=5)
    assert not all(
        torch.equal(p, q) for p, q in zip(runs[0][1], other.parameters(), strict=True)
    )


def test_state_dict_round_trip_keeps_step_and_state():
    m = make("swav", queue_length=2 * N)
    train(m, steps=3)
    clone = make("swav", seed=9, queue_length=2 * N)
    clone.load_state_dict(m.state_dict())
    assert (clone.step, clone.queue_filled) == (3, 2 * N)
    m.eval(), clone.eval()
    x_a, x_b, _, _ = batch(seed=7)
    torch.testing.assert_close(m(x_a, x_b)[0], clone(x_a, x_b)[0])


# -- EMA teacher state ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_teacher_starts_as_exact_frozen_copy(name):
    m = make(name)
    head = m.projector if name == "byol" else m.head
    student = torch.nn.Sequential(m.encoder, head).state_dict()
    teacher = m.teacher.module.state_dict()
    assert student.keys() == teacher.keys()
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    assert not any(p.requires_grad for p in m.teacher.parameters())


@pytest.mark.parametrize("name", ["byol", "dino"])
def test_teacher_update_follows_the_cosine_ema(name):
    m = make(name)
    head = m.projector if name == "byol" else m.head
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    total = 4
    for step in range(total):
        before = [p.double().clone() for p in m.teacher.parameters()]
        x_a, x_b, _, _ = batch(seed=step)
        loss, _ = m(x_a, x_b)
        opt.zero_grad()
        loss.backward()
        after_opt = [p.clone() for p in m.teacher.parameters()]
        opt.step()
        # The optimiser never moves the teacher.
        assert all(torch.equal(a.double(), b) for a, b in zip(after_opt, before, strict=True))
        logs = m.after_step(step, total)
        tau = ema_momentum(step, total, 0.9)
        assert logs["tau"] == tau
        student = list(torch.nn.Sequential(m.encoder, head).parameters())
        for t_new, t_old, s in zip(m.teacher.parameters(), before, student, strict=True):
            ref = tau * t_old + (1 - tau) * s.detach().double()
            torch.testing.assert_close(t_new.double(), ref, atol=1e-7, rtol=1e-6)
    assert logs["tau"] == 1.0


def test_byol_teacher_buffers_are_copied_by_default():
    m = make("byol")
    train(m, steps=2)
    s_bn, t_bn = m.projector[1], m.teacher.module[1][1]
    assert torch.equal(s_bn.running_mean, t_bn.running_mean)
    m2 = make("byol", ema_buffers="own")
    train(m2, steps=2)
    assert not torch.equal(m2.projector[1].running_mean, m2.teacher.module[1][1].running_mean)


# -- DINO state ----------------------------------------------------------------------------------


def test_dino_center_update_in_training_only():
    m = make("dino")
    assert torch.equal(m.center, torch.zeros(1, 20))
    x_a, x_b, _, _ = batch()
    with torch.no_grad():
        t = m.teacher(torch.cat([x_a, x_b])).double()
    m(x_a, x_b)
    ref = 0.1 * t.mean(0, keepdim=True)  # 0.9 * 0 + (1 - 0.9) * batch mean over both views
    torch.testing.assert_close(m.center.double(), ref, atol=1e-7, rtol=0)
    c1 = m.center.clone()
    m(x_a, x_b)
    torch.testing.assert_close(m.center.double(), 0.9 * c1.double() + 0.1 * t.mean(0, keepdim=True))
    frozen = m.center.clone()
    m.eval()
    m(x_a, x_b)
    assert torch.equal(m.center, frozen)


def test_dino_loss_uses_center_and_teacher_temperature():
    m = make("dino", warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=4)
    _move_student(m, m.encoder, m.head)
    with torch.no_grad():
        m.center.copy_(torch.randn(1, 20, generator=gen(2)))
    c = m.center.clone()
    x_a, x_b, _, _ = batch()
    loss, logs = m(x_a, x_b)
    with torch.no_grad():
        s = m.head(m.encoder(torch.cat([x_a, x_b])))
        t = m.teacher(torch.cat([x_a, x_b]))
        ref = losses.dino(
            torch.stack([s[:N], s[N:]]), torch.stack([t[:N], t[N:]]), c, teacher_temp=0.04
        )
        from_student = losses.dino(
            torch.stack([s[:N], s[N:]]), torch.stack([s[N:], s[:N]]), c, teacher_temp=0.04
        )
    torch.testing.assert_close(loss.detach(), ref)
    assert not torch.allclose(ref, from_student, rtol=1e-3)  # the targets are the teacher's
    temps = []
    for step in range(6):
        temps.append(m.teacher_temp())
        m.after_step(step, 6)
    assert temps == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert logs["teacher_temp"].item() == pytest.approx(0.04)


def test_dino_last_layer_frozen_for_the_first_steps():
    m = make("dino", freeze_last_layer_steps=2)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    grads = []
    for step in range(3):
        x_a, x_b, _, _ = batch(seed=step)
        loss, _ = m(x_a, x_b)
        opt.zero_grad()
        loss.backward()
        grads.append(m.head.last_layer.weight_v.grad is not None)
        opt.step()
        m.after_step(step, 3)
    assert grads == [False, False, True]
    assert not m.head.last_layer.weight_g.requires_grad


# -- SwAV state ----------------------------------------------------------------------------------


def test_swav_prototypes_stay_on_the_sphere_and_freeze():
    m = make("swav", freeze_prototypes_steps=2)
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(10))
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    grads = []
    for step in range(4):
        x_a, x_b, _, _ = batch(seed=step)
        loss, _ = m(x_a, x_b)
        opt.zero_grad()
        loss.backward()
        grads.append(m.prototypes.weight.grad is not None)
        opt.step()
        if grads[-1]:  # the optimiser moved the prototypes off the sphere ...
            assert not torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(10))
        m.after_step(step, 4)  # ... and after_step puts them back
        torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(10))
    assert grads == [False, False, True, True]


def test_swav_loss_is_swapped_prediction_on_prototype_scores():
    m = make("swav")
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z = m.projector(m.encoder(torch.cat([x_a, x_b])))
        s = z @ m.prototypes.weight.t()
        ref = losses.swav(s[:N], s[N:])
    torch.testing.assert_close(loss.detach(), ref)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2 * N))


def test_swav_queue_fills_then_is_used():
    m = make("swav", queue_length=2 * N)
    assert m.queue.shape == (2, 2 * N, 8) and m.queue_filled == 0
    used = []
    for step in range(3):
        x_a, x_b, _, _ = batch(seed=step)
        loss, logs = m(x_a, x_b)
        used.append(logs["queue_used"].item())
        with torch.no_grad():
            z = m.projector(m.encoder(torch.cat([x_a, x_b])))
        # The newest projections sit at the front of the queue, detached.
        torch.testing.assert_close(m.queue[0, :N], z[:N])
        torch.testing.assert_close(m.queue[1, :N], z[N:])
        assert not m.queue.requires_grad
        m.after_step(step, 3)
    assert used == [0.0, 0.0, 1.0] and m.queue_filled == 2 * N
    # With the full queue the codes come from Sinkhorn over queue + batch.
    x_a, x_b, _, _ = batch(seed=11)
    q = m.queue.clone()
    m.eval()
    loss, _ = m(x_a, x_b)
    assert torch.equal(m.queue, q)  # eval mode does not push
    with torch.no_grad():
        z = m.projector(m.encoder(torch.cat([x_a, x_b])))
        c = m.prototypes.weight
        s = z @ c.t()
        ref = losses.swav(s[:N], s[N:], queue_a=q[0] @ c.t(), queue_b=q[1] @ c.t())
    torch.testing.assert_close(loss, ref)


def test_swav_queue_start_and_size_check():
    m = make("swav", queue_length=2 * N, queue_start_step=2)
    train(m, steps=2)
    assert m.queue_filled == 0
    small = make("swav", queue_length=N // 2)
    x_a, x_b, _, _ = batch()
    with pytest.raises(ValueError, match="queue_length"):
        small(x_a, x_b)


# -- DIET state ----------------------------------------------------------------------------------


def test_diet_row_normalisation_and_learnable_beta():
    m = make("diet", normalize_rows=True, learn_beta=True)
    torch.testing.assert_close(m.head.weight.norm(dim=1), torch.ones(N))
    assert m.beta.requires_grad
    train(m, steps=3)
    torch.testing.assert_close(m.head.weight.norm(dim=1), torch.ones(N))
    assert m.beta.item() != 1.0


# -- bad inputs ----------------------------------------------------------------------------------


def test_bad_inputs():
    m = make("simclr")
    x_a, x_b, index, y = batch()
    with pytest.raises(ValueError, match="needs two views"):
        m(x_a)
    with pytest.raises(ValueError, match="same shape"):
        m(x_a, x_b[:-1])
    with pytest.raises(TypeError, match="x_a"):
        m(x_a.numpy(), x_b)
    with pytest.raises(TypeError, match="x_b"):
        m(x_a, x_b.tolist())
    with pytest.raises(ValueError, match="needs index"):
        make("diet")(x_a, x_b)
    with pytest.raises(ValueError, match="needs y"):
        make("supervised")(x_a, x_b)
    with pytest.raises(ValueError, match="index"):
        make("diet")(x_a, x_b, index=index + N)  # out of range: the loss names the argument
    with pytest.raises(ValueError, match="step"):
        m.after_step(-1, 10)
    with pytest.raises(ValueError, match="total_steps"):
        m.after_step(0, 0)


def test_embed_is_the_encoder_output():
    m = make("byol")
    x_a, _, _, _ = batch()
    torch.testing.assert_close(m.embed(x_a), m.encoder(x_a).detach())
    assert m.embed(x_a).shape == (N, D_FEAT)


# -- images and mixed precision ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["simclr", "byol", "swav", "dino"])
def test_resnet_encoder_on_images(name):
    from sithlib.models import ResNet18

    g = gen(0)
    m = build_method(name, ResNet18(width=4, generator=g), SMALL[name], generator=g)
    assert m.feature_dim == 32
    x = torch.rand(8, 3, 16, 16, generator=gen(1))
    x_a, x_b = x, x.flip(-1)
    loss, _ = m(x_a, x_b)
    loss.backward()
    assert torch.isfinite(loss) and m.encoder.conv1.weight.grad is not None
    m.after_step(0, 10)


@pytest.mark.parametrize("name", list(SMALL))
def test_bf16_autocast_gives_a_float32_loss_close_to_float32(name):
    m = make(name)
    x_a, x_b, index, y = batch()
    ref, _ = m(x_a, x_b, index=index, y=y)
    m = make(name)  # fresh state (the DINO center and the SwAV queue moved)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = m(x_a, x_b, index=index, y=y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # bf16 rounds the network activations (8 bits of mantissa), not the loss arithmetic.
    assert abs(loss.item() - ref.item()) <= 0.02 * abs(ref.item()) + 0.01
    loss.backward()


# -- two-process DDP on the CPU (gloo) -----------------------------------------------------------
# Methods without BatchNorm in their heads, so that per-process and global batches agree: DDP's
# averaged gradients must equal those of the single-process method on the global batch, and the
# DINO center must be the global one.

DDP_CASES = {
    "infonce": {"negatives": "anchors", "normalize": True},
    "stability": {"lambd": 2.0},
    "dino": {},
}


def _ddp_worker(rank, store, out_dir):
    import json
    import traceback
    from pathlib import Path

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    # A file store, not a TCP port picked in advance (another xdist worker could take it).
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    results = {}
    try:
        for name, cfg in DDP_CASES.items():
            try:
                x_a, x_b, _, _ = (t.double() if t.is_floating_point() else t for t in batch())
                # The reference sees the whole batch in each process: it must not gather.
                ref = make(name, **cfg, distributed=False).double()
                ref_loss, _ = ref(x_a, x_b)
                ref_loss.backward()
                m = make(name, **cfg, distributed=True).double()
                ddp = DDP(m)
                rows = slice(rank * N // 2, (rank + 1) * N // 2)
                loss, _ = ddp(x_a[rows], x_b[rows])
                loss.backward()
                grad_err = max(
                    float((p.grad - q.grad).abs().max())
                    for p, q in zip(m.parameters(), ref.parameters(), strict=True)
                    if p.requires_grad
                )
                center_err = 0.0
                if name == "dino":
                    center_err = float((m.center - ref.center).abs().max())
                results[name] = [grad_err, center_err]
            except Exception:
                results[name] = traceback.format_exc()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    import json

    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp_methods")
    mp.spawn(_ddp_worker, args=(str(out / "store"), str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("name", list(DDP_CASES))
def test_ddp_gradients_and_state_equal_the_global_batch(ddp_results, name):
    for rank, results in enumerate(ddp_results):
        res = results[name]
        assert not isinstance(res, str), f"rank {rank} failed:\n{res}"
        grad_err, center_err = res
        assert grad_err < 1e-10, f"rank {rank}: gradients differ by {grad_err}"
        assert center_err < 1e-12, f"rank {rank}: DINO center differs by {center_err}"


# -- a data-generating process: vMF positive pairs on the sphere ---------------------------------


def test_infonce_and_diet_learn_on_a_vmf_dgp():
    from sithlib.dgp import sample_vmf

    kappa, d = 10.0, 3
    g = gen(0)
    enc = MLP([d, 32, d], output_norm="sphere", generator=g)
    infonce = build_method("infonce", enc, {"temperature": 1 / kappa}, generator=g)
    centers = F.normalize(torch.randn(8, d, generator=g), dim=1)  # DIET: 8 clusters
    diet = build_method("diet", MLP([d, 32, d], generator=g), {"num_instances": 64}, generator=g)
    opts = [torch.optim.Adam(m.parameters(), lr=3e-3) for m in (infonce, diet)]
    history = {"infonce": [], "diet": []}
    for step in range(40):
        z = F.normalize(torch.randn(128, d, generator=g), dim=1)  # uniform on the sphere
        z_pos = sample_vmf(z, kappa, generator=g)
        index = torch.randint(0, 64, (128,), generator=g)
        x_c = sample_vmf(centers[index % 8], kappa, generator=g)
        for m, opt, (x_a, x_b) in ((infonce, opts[0], (z, z_pos)), (diet, opts[1], (x_c, None))):
            loss, _ = m(x_a, x_b, index=index)
            opt.zero_grad()
            loss.backward()
            opt.step()
            m.after_step(step, 40)
            history[m.name].append(loss.item())
    for name, losses_ in history.items():
        first, last = sum(losses_[:5]) / 5, sum(losses_[-5:]) / 5
        assert last < first - 0.02, (name, losses_)


# -- collapse ablations: each switch removes exactly one anti-collapse device ---------------------

ABLATIONS = {
    "simsiam_no_predictor": ("simsiam", {"predictor": False}),
    "simsiam_no_stop_gradient": ("simsiam", {"stop_gradient": False}),
    "byol_no_predictor": ("byol", {"predictor": False}),
    "byol_ema_0": ("byol", {"tau0": 0.0, "tau_end": 0.0}),
    "byol_ema_1": ("byol", {"tau0": 1.0, "tau_end": 1.0}),
    "dino_no_centering": ("dino", {"centering": False}),
    "dino_no_sharpening": ("dino", {"sharpening": False}),
    "swav_softmax": ("swav", {"targets": "softmax"}),
    "barlow_twins_no_off_diagonal": ("barlow_twins", {"lambd": 0.0}),
    "vicreg_no_variance": ("vicreg", {"std_coeff": 0.0}),
}


def test_ablation_switches_default_to_the_official_method():
    assert (method_config("simsiam").predictor, method_config("simsiam").stop_gradient) == (
        True, True,
    )
    assert method_config("byol").predictor is True
    c = method_config("dino")
    assert (c.centering, c.sharpening) == (True, True)
    assert method_config("swav").targets == "sinkhorn"


@pytest.mark.parametrize(
    "name, values, match",
    [
        ("simsiam", {"predictor": 0}, "predictor"),
        ("simsiam", {"stop_gradient": "no"}, "stop_gradient"),
        ("byol", {"predictor": None}, "predictor"),
        ("dino", {"centering": 1}, "centering"),
        ("dino", {"sharpening": "false"}, "sharpening"),
        ("swav", {"targets": "uniform"}, "targets.*sinkhorn.*softmax"),
        ("swav", {"targets": "softmax", "queue_length": 64}, "queue_length"),
    ],
)
def test_bad_ablation_values(name, values, match):
    with pytest.raises(ValueError, match=match):
        method_config(name, values)


def _cos64(p, z):
    return F.cosine_similarity(p.double(), z.double(), dim=1).mean()


def test_simsiam_without_predictor_has_no_predictor():
    m = make("simsiam", predictor=False)
    assert m.predictor is None
    assert not any(k.startswith("predictor") for k in m.state_dict())
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)) for x in (x_a, x_b))
    ref = -0.5 * (_cos64(z_a, z_b) + _cos64(z_b, z_a))
    # A float32 loss against a float64 reference: float32 tolerances (the float64 defaults
    # leave room for a handful of float32 roundings, which a different BLAS kernel can exceed).
    torch.testing.assert_close(loss.detach().double(), ref, **F32)
    # The library loss on the unaffected pieces: identity predictor, stop-gradient kept.
    torch.testing.assert_close(
        loss.detach(), 0.5 * (losses.simsiam(z_a, z_b) + losses.simsiam(z_b, z_a))
    )


def _grads(m, x_a, x_b):
    m.zero_grad()
    loss, _ = m(x_a, x_b)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_stop_gradient_switch_sets_where_the_gradient_flows(stop_gradient):
    x_a, x_b, _, _ = batch()
    m = make("simsiam", stop_gradient=stop_gradient)
    loss, grads = _grads(m, x_a, x_b)
    # Independent float64 reference: the same network, the target detached or not.
    ref = make("simsiam").double()
    z_a, z_b = (ref.projector(ref.encoder(x.double())) for x in (x_a, x_b))
    t_a, t_b = (z_a.detach(), z_b.detach()) if stop_gradient else (z_a, z_b)
    ref_loss = -0.5 * (_cos64(ref.predictor(z_a), t_b) + _cos64(ref.predictor(z_b), t_a))
    ref_loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss.detach(), **F32)
    for k, p in ref.named_parameters():
        torch.testing.assert_close(grads[k].double(), p.grad, atol=1e-6, rtol=1e-4)
    # The two variants share the loss value and differ in the gradient.
    other_loss, other = _grads(make("simsiam", stop_gradient=not stop_gradient), x_a, x_b)
    torch.testing.assert_close(loss, other_loss)
    assert any(not torch.allclose(grads[k], other[k]) for k in grads)


def test_without_stop_gradient_the_target_receives_a_gradient():
    from sithlib.methods import _negative_cosine

    g = gen(3)
    p = torch.randn(N, 8, generator=g, requires_grad=True)
    for fn, flows in ((losses.simsiam, False), (_negative_cosine, True)):
        z = torch.randn(N, 8, generator=gen(4), requires_grad=True)
        value = fn(p, z)
        value.backward()
        assert (z.grad is not None) == flows
        torch.testing.assert_close(value.detach().double(), -_cos64(p.detach(), z.detach()))


def test_byol_without_predictor_regresses_the_projection_on_the_target():
    m = make("byol", predictor=False)
    assert m.predictor is None and not any(k.startswith("predictor") for k in m.state_dict())
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)) for x in (x_a, x_b))
        t_a, t_b = (m.teacher(x) for x in (x_a, x_b))
    # 2 - 2 cos summed over both directions, in float64.
    ref = (2 - 2 * F.cosine_similarity(z_a.double(), t_b.double())).mean() + (
        2 - 2 * F.cosine_similarity(z_b.double(), t_a.double())).mean()
    torch.testing.assert_close(loss.detach().double(), ref, **F32)
    torch.testing.assert_close(loss.detach(), losses.byol(z_a, t_b) + losses.byol(z_b, t_a))


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_byol_ema_0_copies_the_student_and_ema_1_freezes_the_target(tau):
    m = make("byol", tau0=tau, tau_end=tau)
    initial = {k: v.clone() for k, v in m.teacher.module.state_dict().items()}
    _, logs = train(m, steps=4)
    assert logs["loss"] >= 0 and m.teacher.last_tau == tau
    student = torch.nn.Sequential(m.encoder, m.projector).state_dict()
    teacher = m.teacher.module.state_dict()
    params = {k for k, _ in m.teacher.module.named_parameters()}
    for k in params:
        if tau == 0.0:
            assert torch.equal(teacher[k], student[k]), k
        else:
            assert torch.equal(teacher[k], initial[k]), k
            assert not torch.equal(student[k], initial[k]), k


def test_dino_without_centering_never_subtracts_or_updates_a_center():
    m = make("dino", centering=False)
    x_a, x_b, _, _ = batch()
    train(m, steps=3)
    assert torch.equal(m.center, torch.zeros(1, 20))
    with torch.no_grad():
        m.center.copy_(torch.randn(1, 20, generator=gen(2)))  # ignored without centering
    loss, logs = m(x_a, x_b)
    with torch.no_grad():
        s = m.head(m.encoder(torch.cat([x_a, x_b]))).double()
        t = m.teacher(torch.cat([x_a, x_b])).double()
    # Float64 reference of the two-crop DINO loss with a zero center.
    p_t = F.softmax(t / 0.04, dim=1)
    log_p_s = F.log_softmax(s / 0.1, dim=1)

    def ce(q, v):  # teacher crop q against student crop v
        return -(p_t[q * N:(q + 1) * N] * log_p_s[v * N:(v + 1) * N]).sum(1).mean()

    ref = 0.5 * (ce(0, 1) + ce(1, 0))
    torch.testing.assert_close(loss.detach().double(), ref, atol=1e-5, rtol=1e-5)
    with_center = make("dino")
    with_center.load_state_dict(m.state_dict())
    assert not torch.allclose(with_center(x_a, x_b)[0], loss)


def test_dino_without_sharpening_uses_the_student_temperature():
    m = make("dino", sharpening=False, warmup_teacher_temp=0.02, warmup_teacher_temp_steps=4)
    x_a, x_b, _, _ = batch()
    temps = []
    for step in range(5):
        temps.append(m.teacher_temp())
        m.after_step(step, 5)
    assert temps == [0.1] * 5
    m = make("dino", sharpening=False)
    loss, logs = m(x_a, x_b)
    with torch.no_grad():
        s = m.head(m.encoder(torch.cat([x_a, x_b])))
        t = m.teacher(torch.cat([x_a, x_b]))
        ref = losses.dino(torch.stack([s[:N], s[N:]]), torch.stack([t[:N], t[N:]]),
                          torch.zeros(1, 20), student_temp=0.1, teacher_temp=0.1)
    torch.testing.assert_close(loss.detach(), ref)
    assert logs["teacher_temp"].item() == pytest.approx(0.1)


def test_swav_softmax_targets_are_row_softmaxes_of_the_scores():
    m = make("swav", targets="softmax", epsilon=0.5)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z = m.projector(m.encoder(torch.cat([x_a, x_b])))
        sc = (z @ m.prototypes.weight.t()).double()
    # Naive float64 loop: q_i = softmax(S_i / eps), p_i = softmax(S_i / tau).
    total = 0.0
    for i in range(N):
        for target, pred in ((sc[i], sc[N + i]), (sc[N + i], sc[i])):
            q = torch.exp(target / 0.5) / torch.exp(target / 0.5).sum()
            log_p = pred / 0.1 - torch.log(torch.exp(pred / 0.1).sum())
            total -= float((q * log_p).sum())
    torch.testing.assert_close(loss.item(), total / (2 * N), atol=1e-5, rtol=1e-5)
    sinkhorn = make("swav", epsilon=0.5)(x_a, x_b)[0]
    assert not torch.allclose(loss, sinkhorn)
    # The codes carry no gradient: the gradient equals that of the reference with q detached.
    m.zero_grad()
    loss.backward()
    ref = make("swav", targets="softmax", epsilon=0.5)
    z = ref.projector(ref.encoder(torch.cat([x_a, x_b])))
    sc = z @ ref.prototypes.weight.t()
    q = F.softmax(sc.detach() / 0.5, dim=1)
    log_p = F.log_softmax(sc / 0.1, dim=1)
    ref_loss = -0.5 * ((q[:N] * log_p[N:]).sum(1).mean() + (q[N:] * log_p[:N]).sum(1).mean())
    ref_loss.backward()
    for p, r in zip(m.parameters(), ref.parameters(), strict=True):
        if r.grad is not None:
            torch.testing.assert_close(p.grad, r.grad, atol=1e-6, rtol=1e-4)


def test_barlow_twins_without_off_diagonal_keeps_only_the_invariance_term():
    m = make("barlow_twins", lambd=0.0)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)).double() for x in (x_a, x_b))
    std = [(z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5) for z in (z_a, z_b)]
    c = std[0].T @ std[1] / N
    ref = sum((1 - c[i, i]) ** 2 for i in range(c.shape[0]))
    torch.testing.assert_close(loss.detach().double(), ref, atol=1e-5, rtol=1e-5)
    assert loss.item() < make("barlow_twins")(x_a, x_b)[0].item()


def test_vicreg_without_variance_keeps_invariance_and_covariance():
    m = make("vicreg", std_coeff=0.0)
    x_a, x_b, _, _ = batch()
    loss, _ = m(x_a, x_b)
    with torch.no_grad():
        z_a, z_b = (m.projector(m.encoder(x)).double() for x in (x_a, x_b))
    d = z_a.shape[1]
    cov = [torch.cov(z.T) for z in (z_a, z_b)]
    off = sum(float(c.square().sum() - c.diagonal().square().sum()) for c in cov) / d
    ref = 25 * float((z_a - z_b).square().mean()) + off
    torch.testing.assert_close(loss.item(), ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", list(ABLATIONS))
def test_ablations_train_deterministically_with_finite_losses(case):
    name, values = ABLATIONS[case]
    runs = []
    for _ in range(2):
        history, logs = train(make(name, seed=3, **values), steps=5, seed=4)
        runs.append(history)
    assert all(math.isfinite(v) for v in runs[0]) and runs[0] == runs[1]
    assert 0 <= logs["center_norm"].item() <= 1 + 1e-6


@pytest.mark.parametrize("case", ["simsiam_no_stop_gradient", "swav_softmax"])
def test_ablation_losses_stay_float32_under_bf16_autocast(case):
    name, values = ABLATIONS[case]
    x_a, x_b, _, _ = batch()
    ref, _ = make(name, **values)(x_a, x_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = make(name, **values)(x_a, x_b)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) <= 0.02 * abs(ref.item()) + 0.01


@pytest.mark.parametrize("name", list(SMALL))
def test_project_is_the_embedding_the_loss_sees(name):
    m = make(name)
    x_a, _, _, _ = batch()
    out = m.project(x_a)
    assert not out.requires_grad
    with torch.no_grad():
        head = {"simclr": "projector", "byol": "projector", "simsiam": "projector",
                "swav": "projector", "dino": "head", "barlow_twins": "projector",
                "vicreg": "projector"}.get(name)
        ref = m.encoder(x_a) if head is None else getattr(m, head)(m.encoder(x_a))
    torch.testing.assert_close(out, ref)
    if name == "simclr":  # the logged center norm is that of the projections of both views
        x_a, x_b, _, _ = batch()
        _, logs = m(x_a, x_b)
        with torch.no_grad():
            z = m.project(torch.cat([x_a, x_b]))
        torch.testing.assert_close(logs["center_norm"], F.normalize(z, dim=1).mean(0).norm())
