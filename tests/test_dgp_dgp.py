"""sithlib.dgp.DGP: config validation, composition, determinism, serialization, finite datasets
and negatives."""

import dataclasses

import pytest
import torch

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
    fresh = DGP(DGPConfig(dim=4))
    nf = fresh.sample_negatives(7, 3, _gen(5))
    assert nf.z.shape == (7, 3, 4) and nf.index is None
    assert torch.allclose(nf.x, fresh.mixing(nf.z))


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


def test_content_style_kind():
    cfg = dataclasses.replace(PRESETS["kugelgen"], style_change_prob=0.5, causal_dependence=True)
    dgp = DGP(cfg)
    p = dgp.sample_pairs(1000, _gen(7))
    assert torch.equal(p.z[:, :5], p.z_pos[:, :5])
    assert set(dgp.tensors()) >= {"content_style.B", "content_style.a", "mixing.weight.0"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_state_dict_round_trip(name):
    cfg = dataclasses.replace(PRESETS[name], n_samples=PRESETS[name].n_samples or 20)
    dgp = DGP(cfg)
    state = dgp.state_dict()
    assert set(state) == {"config", "config_hash", "tensors", "tensors_hash"}
    assert state["config_hash"] == cfg.hash
    again = DGP.from_state_dict(state)
    pa, pb = _pairs(dgp, 64, 8), _pairs(again, 64, 8)
    assert all(torch.equal(u, v) for u, v in zip(pa, pb, strict=True))
    bad = {**state, "config": {**state["config"], "seed": 99}}
    with pytest.raises(ValueError, match="config_hash"):
        DGP.from_state_dict(bad)
    tensors = {k: v.clone() for k, v in state["tensors"].items()}
    tensors["mixing.weight.0"][0, 0] += 1.0
    with pytest.raises(ValueError, match="tensors_hash"):
        DGP.from_state_dict({**state, "tensors": tensors})


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dgp_on_gpu_matches_distribution_and_parts():
    cpu, gpu = DGP(DGPConfig()), DGP(DGPConfig(), device="cuda")
    assert torch.equal(cpu.mixing.weights[0], gpu.mixing.weights[0].cpu())
    p = gpu.sample_pairs(4096, torch.Generator(device="cuda").manual_seed(0))
    assert p.x.device.type == "cuda"
    cos = (p.z * p.z_pos).sum(1).double()
    assert abs(cos.mean().item() - mean_resultant_length(10.0, 10)) < 4 * (cos.var() / 4096) ** 0.5
