"""sithlib.dgp.DGP: config validation, composition, determinism, serialization, finite datasets
and negatives."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from sithlib.dgp import DGP, PRESETS, DGPConfig, Pairs, mean_resultant_length


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _pairs(dgp, n, seed):
    g = _gen(seed)
    if dgp.finite:
        return dgp.sample_pairs(index=dgp.sample_index(n, g), generator=g)
    return dgp.sample_pairs(n, g)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_compose_and_are_bit_identical_per_seed(name):
    cfg = PRESETS[name]
    a, b = DGP(cfg), DGP(cfg)
    pa, pb = _pairs(a, 512, 1), _pairs(b, 512, 1)
    assert isinstance(pa, Pairs)
    for ta, tb in zip(pa, pb, strict=True):
        assert ta.shape == (512, cfg.dim) and ta.dtype == torch.float32
        assert torch.equal(ta, tb)
    assert torch.allclose(pa.x, a.mixing(pa.z)) and torch.allclose(pa.x_pos, a.mixing(pa.z_pos))
    assert not torch.equal(_pairs(a, 512, 2).z, pa.z)
    other = DGP(dataclasses.replace(cfg, seed=1))
    assert not torch.equal(other.mixing.weights[0], a.mixing.weights[0])
    assert not torch.equal(_pairs(other, 512, 1).x, pa.x)


def test_standard_sphere_pairs_follow_the_vmf_conditional():
    dgp = DGP(DGPConfig(dim=6, kappa=15.0), dtype=torch.float64)
    p = dgp.sample_pairs(20_000, _gen(3))
    assert torch.allclose(p.z.norm(dim=1), torch.ones(20_000, dtype=torch.float64))
    cos = (p.z * p.z_pos).sum(1)
    assert abs(cos.mean().item() - mean_resultant_length(15.0, 6)) < 4 * (cos.var() / 20_000) ** 0.5
    assert torch.allclose(dgp.mixing.inverse(p.x), p.z, atol=1e-10)


def test_parts_depend_only_on_seed_and_their_own_settings():
    a = DGP(DGPConfig(kappa=5.0))
    b = DGP(DGPConfig(conditional="normal", conditional_scale=0.1))
    assert all(torch.equal(u, v) for u, v in zip(a.mixing.weights, b.mixing.weights, strict=True))


def test_finite_dataset_and_negatives_exclude_the_anchor():
    dgp = DGP(DGPConfig(dim=4, n_samples=50, kappa=100.0))
    assert dgp.dataset.shape == (50, 4)
    g = _gen(4)
    idx = dgp.sample_index(300, g)
    p = dgp.sample_pairs(index=idx, generator=g)
    assert torch.equal(p.z, dgp.dataset[idx])  # anchors are dataset rows
    assert not torch.equal(p.z_pos, p.z)  # positives are fresh
    neg = dgp.sample_negatives(m=5, index=idx, generator=g)
    assert neg.z.shape == (300, 5, 4) and neg.x.shape == (300, 5, 4)
    assert not (neg.index == idx.unsqueeze(1)).any()
    assert torch.equal(neg.z, dgp.dataset[neg.index])
    with pytest.raises(ValueError, match="index="):
        dgp.sample_negatives(10)
    for m in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"m \(negatives per anchor\) must be an int >= 1"):
            DGP(DGPConfig(dim=3)).sample_negatives(4, m=m, generator=g)
    # Without index, anchors are random rows of the dataset.
    for z in (dgp.sample_latents(200, _gen(11)), dgp.sample_pairs(200, _gen(12)).z):
        nearest = torch.cdist(z.double(), dgp.dataset.double()).min(1).values
        assert z.shape == (200, 4) and (nearest == 0).all()
        assert len(torch.unique(z, dim=0)) > 30  # not one row repeated
    fresh = DGP(DGPConfig(dim=4), dtype=torch.float64)
    nf = fresh.sample_negatives(5000, 4, _gen(5))
    assert nf.z.shape == (5000, 4, 4) and nf.index is None
    assert torch.allclose(nf.x, fresh.mixing(nf.z))
    # Fresh negatives follow the uniform marginal on S^3: zero mean resultant and
    # (1 + z_j) / 2 ~ Beta(3/2, 3/2).
    flat = nf.z.reshape(-1, 4)
    assert flat.mean(0).abs().max() < 4 * (0.25 / len(flat)) ** 0.5
    for j in (0, 3):
        assert stats.kstest((1 + flat[:, j].numpy()) / 2, stats.beta(1.5, 1.5).cdf).pvalue > 0.01


def test_cluster_kind_pairs_are_two_fresh_draws_of_one_instance():
    dgp = DGP(PRESETS["reizinger_diet"], dtype=torch.float64)
    g = _gen(6)
    idx = dgp.sample_index(20_000, g)
    p = dgp.sample_pairs(index=idx, generator=g)
    v = dgp.clusters.cluster_vectors[dgp.cluster_of(idx)]
    a = mean_resultant_length(10.0, 5)
    for z in (p.z, p.z_pos):
        cos = (z * v).sum(1)
        assert abs(cos.mean().item() - a) < 4 * (cos.var() / 20_000) ** 0.5
    # Two independent draws around v: E[z . z_pos] = A^2.
    cos = (p.z * p.z_pos).sum(1)
    assert abs(cos.mean().item() - a**2) < 4 * (cos.var() / 20_000) ** 0.5
    neg = dgp.sample_negatives(m=3, index=idx[:100], generator=g)
    assert not (neg.index == idx[:100, None]).any()


def test_content_style_kind_wires_the_config_into_the_model():
    # conditional_scale is the style change scale, marginal_scale the marginal's, and
    # style_change_prob the per-coordinate change rate; causal_dependence shifts s by B c + a.
    cfg = dataclasses.replace(PRESETS["kugelgen"], style_change_prob=0.5, causal_dependence=True,
                              conditional_scale=0.7, marginal_scale=1.3)
    dgp = DGP(cfg, dtype=torch.float64)
    n = 20_000
    p = dgp.sample_pairs(n, _gen(7))
    assert torch.equal(p.z[:, :5], p.z_pos[:, :5])
    assert set(dgp.tensors()) >= {"content_style.B", "content_style.a", "mixing.weight.0"}
    changed = p.z_pos[:, 5:] != p.z[:, 5:]
    assert abs(changed.double().mean().item() - 0.5) < 4 * (0.25 / changed.numel()) ** 0.5
    delta = (p.z_pos - p.z)[:, 5:][changed]
    assert stats.kstest(delta.numpy(), stats.norm(scale=0.7).cdf).pvalue > 0.01
    # Least squares of the style on (content, 1) recovers B and a; the residual is the
    # independent N(0, 1.3^2) style noise and the content is N(0, 1.3^2) too.
    c, st = p.z[:, :5].numpy(), p.z[:, 5:].numpy()
    design = np.hstack([c, np.ones((n, 1))])
    coef, *_ = np.linalg.lstsq(design, st, rcond=None)
    cs, se_b = dgp.content_style, 1 / n**0.5  # residual sd / (content sd * sqrt(n))
    assert np.abs(coef[:5].T - cs.B.numpy()).max() < 4 * se_b
    assert np.abs(coef[5] - cs.a.numpy()).max() < 4 * 1.3 / n**0.5
    resid, se_sd = st - design @ coef, 1.3 / (2 * n) ** 0.5
    assert np.abs(resid.std(0) - 1.3).max() < 4 * se_sd
    assert np.abs(c.std(0) - 1.3).max() < 4 * se_sd


_ROUND_TRIP = {name: dataclasses.replace(cfg, n_samples=cfg.n_samples or 20)
               for name, cfg in PRESETS.items()}
_ROUND_TRIP["linear_mixing"] = DGPConfig(mixing="linear", n_samples=20)
_ROUND_TRIP["identity_mixing"] = DGPConfig(mixing="identity", space="box", conditional="normal",
                                           conditional_scale=0.05, n_samples=20)


@pytest.mark.parametrize("name", sorted(_ROUND_TRIP))
def test_state_dict_round_trip(name):
    cfg = _ROUND_TRIP[name]
    dgp = DGP(cfg)
    state = dgp.state_dict()
    assert set(state) == {"config", "config_hash", "tensors", "tensors_hash"}
    assert state["config_hash"] == cfg.hash
    again = DGP.from_state_dict(state)
    assert type(again.mixing) is type(dgp.mixing)
    pa, pb = _pairs(dgp, 64, 8), _pairs(again, 64, 8)
    assert all(torch.equal(u, v) for u, v in zip(pa, pb, strict=True))
    bad = {**state, "config": {**state["config"], "seed": 99}}
    with pytest.raises(ValueError, match="config_hash"):
        DGP.from_state_dict(bad)
    tensors = {k: v.clone() for k, v in state["tensors"].items()}
    key = "mixing.weight.0" if "mixing.weight.0" in tensors else "dataset.z"
    tensors[key][0, 0] += 1.0
    with pytest.raises(ValueError, match="tensors_hash"):
        DGP.from_state_dict({**state, "tensors": tensors})
    with pytest.raises(ValueError, match="state must be a dict with keys"):
        DGP.from_state_dict({"config": state["config"], "tensors": state["tensors"]})


def test_to_returns_a_moved_copy_that_draws_the_same_pairs():
    dgp = DGP(PRESETS["kugelgen"])
    moved = dgp.to("cpu")
    assert moved is not dgp and moved.device == torch.device("cpu")
    assert moved.config is dgp.config and moved.content_style is not dgp.content_style
    pa, pb = _pairs(dgp, 64, 9), _pairs(moved, 64, 9)
    assert all(torch.equal(u, v) for u, v in zip(pa, pb, strict=True))


@pytest.mark.parametrize("kwargs,error,match", (
    (dict(kind="gan"), ValueError, "kind must be one of"),
    (dict(space="torus"), ValueError, "space must be one of"),
    (dict(marginal="cauchy"), ValueError, "marginal must be one of"),
    (dict(conditional="flow"), ValueError, "conditional must be one of"),
    (dict(mixing="flow"), ValueError, "mixing must be one of"),
    (dict(dim=0), ValueError, "dim"),
    (dict(dim=1), ValueError, "sphere needs dim"),
    (dict(dim=2.5), TypeError, "dim must be an int"),
    (dict(kappa=-1.0), ValueError, "kappa"),
    (dict(kappa=float("nan")), ValueError, "kappa must be finite"),
    (dict(conditional_scale=0.0), ValueError, "conditional_scale"),
    (dict(space="box", box_low=1.0, box_high=0.0), ValueError, "box_low"),
    (dict(space="euclidean", marginal="uniform", conditional="normal"), ValueError, "uniform"),
    (dict(space="box"), ValueError, "'vmf' needs space 'sphere'"),
    (dict(mixing_cond=0.5), ValueError, "mixing_cond"),
    (dict(negative_slope=0.0), ValueError, "negative_slope"),
    (dict(statistical_dependence=True), ValueError, "content_style"),
    (dict(kind="cluster"), ValueError, "n_samples"),
    (dict(kind="content_style"), ValueError, "euclidean"),
    (dict(kind="content_style", space="euclidean", marginal="normal", conditional="normal",
          n_content=10), ValueError, "n_content"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(causal_dependence=1), TypeError, "bool"),
    (dict(style_change_prob=1.5), ValueError, "style_change_prob must be <= 1"),
    (dict(negative_slope=1.5), ValueError, "negative_slope must be <= 1"),
    (dict(kappa="10"), TypeError, "kappa must be a number, got str"),
    (dict(kind="cluster", space="box", conditional="normal", n_samples=10), ValueError,
     "kind 'cluster' needs space 'sphere', got 'box'"),
    (dict(dim=1, space="euclidean", marginal="normal", conditional="normal"), ValueError,
     "set mixing_cond=1"),
))
def test_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        DGPConfig(**kwargs)


def test_dgp_bad_calls():
    dgp = DGP(DGPConfig(dim=3))
    with pytest.raises(ValueError, match="n must"):
        dgp.sample_pairs(-1)
    with pytest.raises(ValueError, match="finite"):
        dgp.sample_pairs(index=torch.arange(3))
    with pytest.raises(ValueError, match="finite"):
        dgp.sample_index(3)
    with pytest.raises(TypeError, match="DGPConfig"):
        DGP({"dim": 3})
    with pytest.raises(ValueError, match="dtype"):
        DGP(DGPConfig(dim=3), dtype=torch.float16)
    finite = DGP(DGPConfig(dim=3, n_samples=5))
    with pytest.raises(ValueError, match="index entries"):
        finite.sample_pairs(index=torch.tensor([5]))
    with pytest.raises(ValueError, match="does not match"):
        finite.sample_pairs(2, index=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="index must be a 1-D integer tensor"):
        finite.sample_pairs(index=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="cluster_of needs kind 'cluster'"):
        finite.cluster_of(torch.tensor([0]))
    cluster = DGP(PRESETS["reizinger_diet"])
    with pytest.raises(ValueError, match="for kind 'cluster' a positive is a fresh draw"):
        cluster.positive(cluster.sample_latents(index=torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="index must be a 1-D integer tensor"):
        cluster.cluster_of(torch.tensor([0.0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dgp_on_gpu_matches_distribution_and_parts():
    cpu, gpu = DGP(DGPConfig()), DGP(DGPConfig(), device="cuda")
    assert torch.equal(cpu.mixing.weights[0], gpu.mixing.weights[0].cpu())
    moved = cpu.to("cuda")
    assert moved.mixing.weights[0].is_cuda and not cpu.mixing.weights[0].is_cuda
    p = gpu.sample_pairs(4096, torch.Generator(device="cuda").manual_seed(0))
    assert p.x.device.type == "cuda"
    cos = (p.z * p.z_pos).sum(1).double()
    assert abs(cos.mean().item() - mean_resultant_length(10.0, 10)) < 4 * (cos.var() / 4096) ** 0.5
