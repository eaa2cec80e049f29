"""The training engine: ensembles equal separate runs, kill-and-resume, guards, determinism."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from torch import nn

from sithlib import train as tr
from sithlib.results import Checkpoint, CorruptResultError
from sithlib.train import TrainConfig, TrainingFailure, keep_freed_cpu_memory, train

D = 4
A = torch.linspace(0.5, 1.5, D * D).reshape(D, D)  # a fixed, well-conditioned linear mixing


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # nn.Linear's init draws from the global generator
    return nn.Sequential(nn.Linear(D, 16), nn.LeakyReLU(0.2), nn.Linear(16, D))


def sample(generator: torch.Generator, n: int):
    z = torch.randn(n, D, generator=generator)
    return z, z @ A.T


def regression(model, batch):
    z, x = batch
    out = model(x)
    return ((out - z) ** 2).mean(), out


CFG = TrainConfig(steps=30, batch_size=64, lr=1e-2, seeds=3, eval_every=10)


def _params(result):
    return [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in result.models]


def test_training_reduces_the_loss_and_records_curves():
    result = train(make_model, sample, regression, CFG)
    first = {r["seed"]: r["loss"] for r in result.curves if r["step"] == 10}
    last = {r["seed"]: r["loss"] for r in result.curves if r["step"] == 30}
    assert set(last) == {0, 1, 2} and all(last[s] < first[s] for s in last)
    assert {r["step"] for r in result.curves} == {10, 20, 30} and result.failures == []


def test_vmap_ensemble_equals_separate_runs():
    together = _params(train(make_model, sample, regression, CFG))
    for s in range(CFG.seeds):
        alone = train(make_model, sample, regression,
                      dataclasses.replace(CFG, seeds=1, first_seed=s))
        torch.testing.assert_close(together[s], _params(alone)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ensemble", [True, False])
def test_one_sampler_per_seed_equals_separate_runs_on_each_data(ensemble):
    # Seed s learns data mixed by A scaled by s + 1: three different regressions in one ensemble.
    def scaled(c):
        def draw(generator, n):
            z, x = sample(generator, n)
            return z, c * x
        return draw

    samplers = [scaled(s + 1.0) for s in range(CFG.seeds)]
    cfg = dataclasses.replace(CFG, ensemble=ensemble)
    together = _params(train(make_model, samplers, regression, cfg))
    for s in range(CFG.seeds):
        alone = train(make_model, samplers[s], regression,
                      dataclasses.replace(cfg, seeds=1, first_seed=s))
        torch.testing.assert_close(together[s], _params(alone)[0], rtol=1e-5, atol=1e-6)
    # ... and not what seed 2 learns from seed 0's data.
    other = train(make_model, samplers[0], regression, dataclasses.replace(cfg, seeds=1,
                                                                           first_seed=2))
    assert not torch.allclose(together[2], _params(other)[0], atol=1e-3)
    with pytest.raises(ValueError, match="list of 3 functions"):
        train(make_model, samplers[:2], regression, cfg)


def test_vmap_ensemble_with_tied_weights_equals_separate_runs():
    # An autoencoder whose decoder reuses the encoder's weight: the ensemble must keep them tied.
    def tied(seed):
        torch.manual_seed(seed)
        enc, dec = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        dec.weight = enc.weight
        return nn.Sequential(enc, nn.Tanh(), dec)

    together = _params(train(tied, sample, regression, CFG))
    for s in range(CFG.seeds):
        alone = train(tied, sample, regression, dataclasses.replace(CFG, seeds=1, first_seed=s))
        torch.testing.assert_close(together[s], _params(alone)[0], rtol=1e-5, atol=1e-6)


def test_lars_ensemble_equals_separate_runs():
    """LARS trust ratios are per model, so stacking seeds under vmap changes nothing."""
    cfg = dataclasses.replace(CFG, optimizer="lars", lr=0.5, weight_decay=1e-4)
    together = train(make_model, sample, regression, cfg)
    for s in range(cfg.seeds):
        alone = train(make_model, sample, regression, dataclasses.replace(cfg, seeds=1,
                                                                          first_seed=s))
        torch.testing.assert_close(_params(together)[s], _params(alone)[0], rtol=1e-5,
                                   atol=1e-6)
    first = {r["seed"]: r["loss"] for r in together.curves if r["step"] == 10}
    last = {r["seed"]: r["loss"] for r in together.curves if r["step"] == 30}
    assert all(last[s] < first[s] for s in last)


@pytest.mark.parametrize("ensemble", [True, False])
def test_eval_at_start_records_step_zero_and_changes_nothing_else(ensemble):
    cfg = dataclasses.replace(CFG, ensemble=ensemble)
    plain = train(make_model, sample, regression, cfg)
    calls = []
    with_zero = train(make_model, sample, regression,
                      dataclasses.replace(cfg, eval_at_start=True),
                      evaluate=lambda m, s: calls.append(s) or {"probe": 1.0})
    assert [r["step"] for r in with_zero.curves if r["seed"] == 0] == [0, 10, 20, 30]
    assert calls[:3] == [0, 1, 2]  # the initial networks are evaluated first
    later = [r for r in with_zero.curves if r["step"] > 0]
    assert [r["loss"] for r in later] == [r["loss"] for r in plain.curves]
    for a, b in zip(_params(with_zero), _params(plain), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # step 0 is the untrained loss, above the trained one
    zero = {r["seed"]: r["loss"] for r in with_zero.curves if r["step"] == 0}
    assert all(zero[r["seed"]] > r["loss"] for r in with_zero.curves if r["step"] == 30)


def test_sequential_ensemble_equals_vmap_ensemble():
    a = _params(train(make_model, sample, regression, CFG))
    b = _params(train(make_model, sample, regression, dataclasses.replace(CFG, ensemble=False)))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_same_seed_gives_bit_identical_numbers():
    a = train(make_model, sample, regression, CFG)
    b = train(make_model, sample, regression, CFG)
    assert a.curves == b.curves
    for x, y in zip(_params(a), _params(b), strict=True):
        assert torch.equal(x, y)


def _kill_and_resume(tmp_path, cfg, draws: int):
    """Kill a run in its (draws + 1)-th call of sample per seed, then resume it; returns the
    step of the checkpoint it was killed after and the resumed run."""
    calls = {"n": 0}

    def dies(generator, n):
        calls["n"] += 1
        if calls["n"] > draws * cfg.seeds:
            raise KeyboardInterrupt("killed")
        return sample(generator, n)

    ckpt = Checkpoint(tmp_path / "run.pt", key="k")
    with pytest.raises(KeyboardInterrupt):
        train(make_model, dies, regression, cfg, checkpoint=ckpt)
    killed_at = ckpt.load()["step"]
    return killed_at, train(make_model, sample, regression, cfg, checkpoint=ckpt)


def test_learning_rate_warms_up_linearly_then_follows_the_cosine():
    import math

    cfg = TrainConfig(steps=10, lr=2.0, warmup_steps=4, lr_schedule="cosine", min_lr=0.2)
    got = [tr.learning_rate(t, cfg) for t in range(1, 11)]
    # Written from the recipe: lr t / W for t <= W, then a half cosine from lr (update W + 1)
    # to min_lr (the last update).
    want = [2.0 * t / 4 for t in range(1, 5)] + [
        0.2 + (2.0 - 0.2) * (1 + math.cos(math.pi * (t - 5) / 5)) / 2 for t in range(5, 11)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[4] == 2.0 and got[-1] == pytest.approx(0.2)
    flat = dataclasses.replace(cfg, lr_schedule="constant", min_lr=0.0)
    assert [tr.learning_rate(t, flat) for t in (1, 4, 5, 10)] == [0.5, 2.0, 2.0, 2.0]
    assert {tr.learning_rate(t, TrainConfig(steps=10)) for t in range(1, 11)} == {1e-4}


class _LrSpy:
    """Wraps the engine's optimizer and records the learning rate each update is taken with."""

    def __init__(self, opt, seen):
        self.opt, self.seen = opt, seen

    def step(self):
        self.seen.append({g["lr"] for g in self.opt.param_groups})
        return self.opt.step()

    def __getattr__(self, name):
        return getattr(self.opt, name)


@pytest.mark.parametrize("ensemble", [True, False])
def test_every_update_uses_the_scheduled_learning_rate(monkeypatch, ensemble):
    seen = []
    make_opt = tr._optimizer
    monkeypatch.setattr(tr, "_optimizer", lambda *a, **k: _LrSpy(make_opt(*a, **k), seen))
    cfg = dataclasses.replace(CFG, ensemble=ensemble, warmup_steps=5, lr_schedule="cosine",
                              min_lr=1e-3)
    train(make_model, sample, regression, cfg)
    assert all(len(s) == 1 for s in seen)  # every parameter group, every seed, the same rate
    assert [s.pop() for s in seen] == [tr.learning_rate(t, cfg) for t in range(1, cfg.steps + 1)]


def test_killed_scheduled_run_resumes_to_identical_numbers(tmp_path):
    cfg = dataclasses.replace(CFG, checkpoint_every=7, warmup_steps=8, lr_schedule="cosine")
    reference = train(make_model, sample, regression, cfg)
    killed_at, resumed = _kill_and_resume(tmp_path, cfg, draws=16)
    assert killed_at == 14  # inside the cosine, after the warm-up
    assert resumed.curves == reference.curves
    for x, y in zip(_params(resumed), _params(reference), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("ensemble", [True, False])
def test_killed_run_resumes_to_identical_numbers(tmp_path, ensemble):
    cfg = dataclasses.replace(CFG, checkpoint_every=7, ensemble=ensemble)
    reference = train(make_model, sample, regression, cfg)

    killed_at, resumed = _kill_and_resume(tmp_path, cfg, draws=16)  # killed at step 17
    assert killed_at == 14
    assert resumed.curves == reference.curves
    for x, y in zip(_params(resumed), _params(reference), strict=True):
        assert torch.equal(x, y)


def _uniform(generator, n):
    # torch.rand draws one stream in order, so K calls of n rows are one call of K * n rows.
    z = torch.rand(n, D, generator=generator) - 0.5
    return z, z @ A.T


@pytest.mark.parametrize("ensemble", [True, False])
def test_prefetch_draws_k_steps_per_call_and_changes_no_number(ensemble):
    cfg = dataclasses.replace(CFG, ensemble=ensemble, prefetch=1)
    reference = train(make_model, _uniform, regression, cfg)
    sizes = []

    def counted(generator, n):
        sizes.append(n)
        return _uniform(generator, n)

    # 30 steps in draws of 4: 8 calls per seed, the last one partly unused.
    fetched = train(make_model, counted, regression, dataclasses.replace(cfg, prefetch=4))
    assert sizes == [4 * cfg.batch_size] * 8 * cfg.seeds
    assert fetched.curves == reference.curves
    for x, y in zip(_params(fetched), _params(reference), strict=True):
        assert torch.equal(x, y)


def test_killed_prefetching_run_resumes_to_identical_numbers(tmp_path):
    cfg = dataclasses.replace(CFG, checkpoint_every=8, prefetch=4, eval_at_start=True)
    reference = train(make_model, sample, regression, cfg)
    killed_at, resumed = _kill_and_resume(tmp_path, cfg, draws=4)  # steps 17-20 never drawn
    assert killed_at == 16
    assert resumed.curves == reference.curves
    for x, y in zip(_params(resumed), _params(reference), strict=True):
        assert torch.equal(x, y)


def test_automatic_prefetch_is_one_on_the_cpu_and_fits_the_checkpoints_on_a_gpu():
    assert TrainConfig().prefetch_steps("cpu") == 1
    assert TrainConfig().prefetch_steps("cuda") == 16
    assert TrainConfig(checkpoint_every=100).prefetch_steps("cuda:0") == 4
    assert TrainConfig(prefetch=3).prefetch_steps("cpu") == 3
    with pytest.raises(ValueError, match="must be a multiple of prefetch"):
        TrainConfig(prefetch=3, checkpoint_every=10)


def test_checkpoint_for_another_config_is_ignored_and_corrupt_one_is_reported(tmp_path):
    Checkpoint(tmp_path / "c.pt", key="old").save({"step": 3})
    assert Checkpoint(tmp_path / "c.pt", key="new").load() is None
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptResultError, match="c.pt: unreadable checkpoint"):
        Checkpoint(tmp_path / "c.pt", key="new").load()


def test_non_finite_loss_fails_the_run_with_step_seed_method_and_config():
    def nan_loss(model, batch):
        loss, out = regression(model, batch)
        return loss + float("nan"), out

    cfg = dataclasses.replace(CFG, seeds=1, ensemble=False)
    with pytest.raises(TrainingFailure, match="every seed failed") as err:
        train(make_model, sample, nan_loss, cfg, name="toy")
    for part in ("'kind': 'non-finite loss'", "'step': 10", "'seed': 0", "'method': 'toy'",
                 "'lr': 0.01"):
        assert part in str(err.value)


@pytest.mark.parametrize("ensemble", [True, False])
def test_one_diverging_seed_is_recorded_and_the_others_finish(ensemble):
    def make(seed):
        model = make_model(seed)
        if seed == 1:  # weights so large that the loss overflows to inf
            with torch.no_grad():
                model[0].weight.mul_(1e30)
        return model

    result = train(make, sample, regression, dataclasses.replace(CFG, ensemble=ensemble))
    assert [(f["seed"], f["kind"], f["step"]) for f in result.failures] == [
        (1, "non-finite loss", 10)]
    assert {r["seed"] for r in result.curves if r["step"] == 30} == {0, 2}
    # Only the finite seeds are handed on to be scored; the dead one's weights are not finite.
    assert result.alive == [True, False, True]
    assert [i for i, _ in result.finished()] == [0, 2]
    assert not all(torch.isfinite(p).all() for p in result.models[1].parameters())


def test_collapse_is_detected_once_at_the_first_evaluation_that_sees_it():
    def collapsed(model, batch):
        z, x = batch
        out = model(x) * 0  # every sample maps to the same point
        return ((out - z) ** 2).mean(), out

    result = train(make_model, sample, collapsed, dataclasses.replace(CFG, seeds=1, steps=30))
    assert [(f["kind"], f["step"]) for f in result.failures] == [("collapse", 10)]
    assert result.alive == [True]  # a collapsed network is finite: it is still scored


@pytest.mark.parametrize("ensemble", [True, False])
def test_frozen_parameters_stay_frozen(ensemble):
    def make(seed):
        model = make_model(seed)
        model[0].bias.requires_grad_(False)
        return model

    result = train(make, sample, regression, dataclasses.replace(CFG, ensemble=ensemble))
    for seed, model in result.finished():
        torch.testing.assert_close(model[0].bias, make(seed)[0].bias, rtol=0, atol=0)
        assert not torch.equal(model[0].weight, make(seed)[0].weight)


@pytest.mark.parametrize("ensemble", [True, False])
def test_project_keeps_parameters_on_the_constraint_and_ensembles_agree(ensemble):
    """Unit-norm rows of the first layer for seeds 0 and 2, free for seed 1."""
    def unit_rows(i, params):
        if i != 1:
            w = params["0.weight"]
            w.div_(w.norm(dim=1, keepdim=True))

    result = train(make_model, sample, regression, dataclasses.replace(CFG, ensemble=ensemble),
                   project=unit_rows)
    norms = [m[0].weight.norm(dim=1) for m in result.models]
    for i in (0, 2):
        torch.testing.assert_close(norms[i], torch.ones_like(norms[i]))
    assert not torch.allclose(norms[1], torch.ones_like(norms[1]), atol=1e-3)
    other = train(make_model, sample, regression, dataclasses.replace(CFG, ensemble=not ensemble),
                  project=unit_rows)
    for a, b in zip(_params(result), _params(other), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_evaluation_keeps_precision_modes_and_plain_floats(tmp_path):
    """Evaluations run outside autocast (step 0 too), leave a submodule's eval mode alone and
    store plain floats, so a NumPy value does not make the checkpoint unreadable."""
    import numpy as np

    def make(seed):
        model = make_model(seed)
        model[1].eval()  # say, a frozen normalisation layer
        return model

    def evaluate(model, seed):
        return {"autocast": np.float64(torch.is_autocast_enabled("cpu"))}

    cfg = dataclasses.replace(CFG, seeds=1, steps=20, precision="bf16", eval_at_start=True,
                              checkpoint_every=10)
    result = train(make, sample, regression, cfg, evaluate=evaluate,
                   checkpoint=Checkpoint(tmp_path / "ckpt.pt"))
    assert [r["autocast"] for r in result.curves] == [0.0, 0.0, 0.0]
    assert all(type(r["autocast"]) is float for r in result.curves)
    assert result.models[0].training and not result.models[0][1].training
    assert Checkpoint(tmp_path / "ckpt.pt").load()["curves"] == result.curves


def test_evaluate_hook_adds_columns():
    def evaluate(model, seed):
        z, x = sample(torch.Generator().manual_seed(99), 256)
        return {"heldout_mse": float(((model(x) - z) ** 2).mean())}

    result = train(make_model, sample, regression, CFG, evaluate=evaluate)
    assert all("heldout_mse" in r for r in result.curves)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("optimizer", "lion", "optimizer must be one of adam, adamw, sgd"),
     ("steps", 0, "steps must be an int >= 1, got 0"), ("steps", 2.5, "steps must be an int"),
     ("lr", -1.0, "lr must be a finite number > 0"), ("lr", float("nan"), "lr must be a finite"),
     ("lr", "1e-3", "lr must be a real number > 0, got '1e-3'"),
     ("batch_size", 0, "batch_size must be an int >= 1"),
     ("batch_size", "8", "batch_size must be an int >= 1, got '8'"),
     ("seeds", 0, "seeds must be an int >= 1"), ("seeds", True, "seeds must be an int"),
     ("first_seed", -3, "first_seed must be an int >= 0"),
     ("eval_every", 0, "eval_every must be an int >= 1"),
     ("eta", -1.0, r"eta \(the LARS trust coefficient\) must be a finite number >= 0"),
     ("checkpoint_every", -1, r"checkpoint_every \(0 turns checkpoints off\) must be an int >= 0"),
     ("weight_decay", -1.0, "weight_decay must be a finite number >= 0"),
     ("momentum", 5.0, r"momentum must lie in \[0.0, 1.0\)"),
     ("collapse_std", -1.0, "collapse_std must be a finite number >= 0"),
     ("ensemble", 1, "ensemble must be True or False"),
     ("precision", "fp16", "precision must be one of fp32, tf32, bf16"),
     ("compile", "fast", "compile must be False, True or one of default, reduce-overhead"),
     ("prefetch", 0, "prefetch must be None"), ("prefetch", True, "prefetch must be None"),
     ("lr_schedule", "step", "lr_schedule must be one of constant, cosine, got 'step'"),
     ("warmup_steps", -1, "warmup_steps must be an int >= 0"),
     ("warmup_steps", 2000, r"warmup_steps must be <= steps \(1000\), got 2000"),
     ("min_lr", 1.0, r"min_lr must lie in \[0.0, 0.0001\]"),
     ("min_lr", 1e-5, "min_lr is the end of lr_schedule='cosine'")],
)
def test_config_validation(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig(**{field: value})


class _Counting(nn.Module):
    """A model with an after_step hook and a buffer, like an SSL method with an EMA teacher."""

    def __init__(self, seed: int):
        super().__init__()
        self.net = make_model(seed)
        self.register_buffer("ema", torch.zeros(D))
        self.calls: list[tuple[int, int]] = []

    def forward(self, x):
        return self.net(x)

    def after_step(self, step: int, total_steps: int) -> None:
        self.calls.append((step, total_steps))
        with torch.no_grad():
            self.ema.mul_(0.5).add_(0.5 * self.net[0].bias[:D])


def _with_logs(model, batch):
    loss, out = regression(model, batch)
    return loss, out, {"out_norm": out.norm(dim=1).mean()}


@pytest.mark.parametrize("ensemble", [True, False])
def test_logs_from_the_loss_become_curve_columns(ensemble):
    result = train(make_model, sample, _with_logs, dataclasses.replace(CFG, ensemble=ensemble))
    assert all(r["out_norm"] > 0 for r in result.curves) and len(result.curves) == 9
    plain = train(make_model, sample, regression, dataclasses.replace(CFG, ensemble=ensemble))
    for x, y in zip(_params(result), _params(plain), strict=True):
        torch.testing.assert_close(x, y)  # the logs do not change training


def test_after_step_hook_is_called_with_zero_based_steps_and_models_with_buffers_train():
    result = train(_Counting, sample, regression, CFG)  # ensemble=True falls back to a loop
    for model in result.models:
        assert model.calls == [(s, CFG.steps) for s in range(CFG.steps)]
        assert model.ema.abs().sum() > 0
    plain = train(make_model, sample, regression, CFG)
    for x, y in zip(_params(result), _params(plain), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_stays_close_to_fp32_and_restores_matmul_precision():
    before = torch.get_float32_matmul_precision()
    exact = train(make_model, sample, regression, CFG)
    low = train(make_model, sample, regression, dataclasses.replace(CFG, precision="bf16"))
    assert torch.get_float32_matmul_precision() == before
    for x, y in zip(_params(low), _params(exact), strict=True):
        assert not torch.equal(x, y)  # autocast really ran the matmuls in bfloat16
        torch.testing.assert_close(x, y, rtol=0, atol=0.05)
    last = [r["loss"] for r in low.curves if r["step"] == CFG.steps]
    assert all(isinstance(v, float) for v in last)  # logged losses are fp32 python floats


def test_tf32_only_in_the_steps_that_ask_and_evaluations_in_full_fp32():
    """PyTorch lets cuDNN convolutions use TF32 by default. The engine switches TF32 (matmuls
    and convolutions) on for the training steps of a tf32 / bf16 run only, draws the data and
    reads the model at evaluations in full float32, and restores the process's settings."""
    seen = []

    def flags(where):
        seen.append((where, torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32))

    def loss(model, batch):
        flags("step")
        return regression(model, batch)

    def evaluate(model, seed):
        flags("eval")
        return {}

    def draw(generator, n):
        flags("data")
        return sample(generator, n)

    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    for precision, tf32 in (("fp32", False), ("tf32", True), ("bf16", True)):
        cfg = dataclasses.replace(CFG, seeds=1, steps=4, eval_every=2, precision=precision)
        # TF32 is a GPU format: on the CPU every phase stays in full float32 (on CPUs with
        # AMX, PyTorch's "high" would also lower the precision of CPU matmuls).
        seen.clear()
        train(make_model, draw, loss, cfg, evaluate=evaluate)
        assert {s[1:] for s in seen} == {("highest", False)}
        # The switch a GPU run's steps get (it sets flags only: no GPU needed to check it).
        with tr._matmul_precision(cfg, "cuda"):
            flags("step")
        assert seen[-1][1:] == ("high" if tf32 else "highest", tf32)
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


def test_tf32_switches_mixed_with_pytorchs_newer_api_are_left_alone(monkeypatch):
    """PyTorch >= 2.9 raises on reading the legacy switches once a process has used its
    fp32_precision API; the engine then leaves TF32 to the caller, with a warning."""
    from sithlib.train import full_fp32

    def refuse():
        raise RuntimeError("mix of the legacy and new APIs")

    monkeypatch.setattr(torch, "get_float32_matmul_precision", refuse)
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    with pytest.warns(UserWarning, match="TF32 left as set"), full_fp32():
        pass
    assert calls == []


def test_experiments_run_in_full_fp32(monkeypatch, tmp_path):
    """Measurements outside ``train`` (an untrained ResNet's embeddings, say) must not use
    TF32 convolutions on a GPU: ``run_experiment`` runs the experiment under ``full_fp32``."""
    from sithlib import results
    from sithlib.experiments import vmf_concentration

    seen = []

    def run(cfg, device="cpu"):
        seen.append((torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32))
        return real(cfg, device)

    real = vmf_concentration.run
    monkeypatch.setattr(vmf_concentration, "run", run)
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path))
    before = torch.backends.cudnn.allow_tf32
    results.run_experiment("vmf_concentration", "quick", {"n": 200, "dims": (3,), "seeds": 1},
                           device="cpu", out=tmp_path / "out")
    assert seen == [("highest", False)]
    assert torch.backends.cudnn.allow_tf32 == before


def test_tf32_is_exact_on_the_cpu():
    a = _params(train(make_model, sample, regression, dataclasses.replace(CFG, precision="tf32")))
    b = _params(train(make_model, sample, regression, CFG))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_compiled_step_equals_eager_step():
    cfg = dataclasses.replace(CFG, steps=10, eval_every=5, seeds=2)
    a = _params(train(make_model, sample, regression, dataclasses.replace(cfg, compile=True)))
    b = _params(train(make_model, sample, regression, cfg))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def _conv_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, D))


def _images(generator, n):
    z = torch.randn(n, D, generator=generator)
    return z, (z @ A.T).repeat_interleave(12, dim=1).reshape(n, 3, 4, 4)


def test_channels_last_gives_the_same_model():
    cfg = dataclasses.replace(CFG, seeds=1)
    a = train(_conv_model, _images, regression, dataclasses.replace(cfg, channels_last=True))
    b = train(_conv_model, _images, regression, cfg)
    assert a.models[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_params(a)[0], _params(b)[0], rtol=1e-5, atol=1e-6)


def test_eval_at_start_leaves_batch_norm_statistics_alone():
    def make_bn(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(D, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, D))

    cfg = dataclasses.replace(CFG, seeds=1)
    plain = train(make_bn, sample, regression, cfg)
    with_zero = train(make_bn, sample, regression, dataclasses.replace(cfg, eval_at_start=True))
    for a, b in zip(plain.models[0].buffers(), with_zero.models[0].buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The step-0 evaluation itself sees the initial statistics (mean 0, variance 1), not those
    # the first batch's forward pass would have moved.
    seen = []

    def evaluate(model, seed):
        bn = model[1]
        seen.append((bn.running_mean.clone(), bn.running_var.clone()))
        return {}

    train(make_bn, sample, regression, dataclasses.replace(cfg, eval_at_start=True),
          evaluate=evaluate)
    mean0, var0 = seen[0]
    assert torch.equal(mean0, torch.zeros(16)) and torch.equal(var0, torch.ones(16))
    assert not torch.equal(seen[1][0], mean0)  # later evaluations see trained statistics


def test_eval_at_start_leaves_the_swav_queue_alone():
    """The queue fill count is Python-side state: restored with the queue it counts."""
    from sithlib.methods import build_method

    def make_swav(seed):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # nn.Linear's init draws from the global generator
        encoder = nn.Linear(D, 8)
        encoder.out_dim = 8
        return build_method("swav", encoder, {"proj_hidden_dim": 8, "proj_dim": 4,
                                              "num_prototypes": 5, "queue_length": 96,
                                              "freeze_prototypes_steps": 0}, generator=gen)

    def swav_loss(method, batch):
        x, _ = batch
        loss, logs = method(x, x + 0.05 * x.roll(1, dims=1))  # no global RNG draw
        return loss, method.embed(x), {"queue_used": logs["queue_used"]}

    cfg = dataclasses.replace(CFG, seeds=1, steps=4, eval_every=1, batch_size=32)
    plain = train(make_swav, sample, swav_loss, cfg)
    with_zero = train(make_swav, sample, swav_loss, dataclasses.replace(cfg, eval_at_start=True))
    # 96 rows fill after three batches of 32: the queue joins at the fourth step, not earlier.
    used = [row["queue_used"] for row in with_zero.curves if row["step"] > 0]
    assert used == [row["queue_used"] for row in plain.curves] == [0.0, 0.0, 0.0, 1.0]
    assert with_zero.models[0].queue_filled == plain.models[0].queue_filled == 96
    torch.testing.assert_close(_params(plain)[0], _params(with_zero)[0], rtol=0, atol=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_cpu_memory_is_reused_without_page_faults():
    import resource  # POSIX only

    # A training step's big temporaries are freed and allocated again every step; glibc's
    # defaults would hand them back to the kernel, and each step would fault in fresh pages.
    train(make_model, sample, regression, dataclasses.replace(CFG, steps=1, seeds=1))
    assert keep_freed_cpu_memory()  # train() on the CPU set it up

    def faults_per_round() -> float:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            big = torch.ones(16, 1024, 1024)  # 64 MiB, twice glibc's largest mmap threshold
            del big
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5

    faults_per_round()  # the first round may grow the heap
    assert faults_per_round() < 64 * 2**20 / 4096 / 10  # under a tenth of its pages
