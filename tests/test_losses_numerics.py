"""Precision policy of every loss: float32 inside bf16 autocast, no Inf/NaN from fp16 inputs with
small temperatures, and argument errors that name the argument."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sithlib.losses as L


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


N, D, K = 16, 8, 10


def _inputs():
    za, zb = rand(N, D, seed=1), rand(N, D, seed=2)
    proto = F.normalize(rand(K, D, seed=3), dim=1)
    sa, sb = F.normalize(za, dim=1) @ proto.T, F.normalize(zb, dim=1) @ proto.T
    crops = rand(3, N, K, seed=4)
    return za, zb, sa, sb, crops


# name -> (function, tensor arguments, keyword arguments); tensors are float64 here
def cases():
    za, zb, sa, sb, crops = _inputs()
    labels = torch.arange(N) % K
    ua, ub = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    lp = {"similarity": "lp", "p": 1.0, "negatives": "anchors"}
    return {
        "nt_xent": (L.nt_xent, [za, zb], {}),
        "info_nce_dot": (L.info_nce, [ua, ub], {"temperature": 0.1}),
        "info_nce_lp": (L.info_nce, [za, zb], lp),
        "alignment": (L.alignment, [za, zb], {}),
        "uniformity": (L.uniformity, [ua], {}),
        "byol": (L.byol, [za, zb], {}),
        "simsiam": (L.simsiam, [za, zb], {}),
        "barlow_twins": (L.barlow_twins, [za, zb], {}),
        "vicreg": (L.vicreg, [za, zb], {}),
        "stability": (L.stability, [za, zb], {}),
        "swav": (L.swav, [sa, sb], {}),
        "dino": (L.dino, [crops, crops[:2], crops[0, 0]], {}),
        "diet": (L.diet, [sa * 5, labels], {"label_smoothing": 0.1}),
        "cross_entropy": (L.cross_entropy, [sa * 5, labels], {}),
        "logdet_entropy": (L.logdet_entropy, [za], {}),
        "pairwise_entropy": (L.pairwise_entropy, [za], {"kind": "bhattacharyya"}),
        "vicreg_entropy_logdet": (L.vicreg_entropy, [za, zb], {"estimator": "logdet"}),
        "vicreg_entropy_pairwise": (L.vicreg_entropy, [za, zb], {"estimator": "pairwise"}),
    }


NAMES = sorted(cases())


def cast(args, dtype):
    return [a.to(dtype) if a.is_floating_point() else a for a in args]


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_stays_close_to_float64(name):
    fn, args, kwargs = cases()[name]
    want = fn(*args, **kwargs).item()
    low = cast(args, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(*low, **kwargs)
    assert got.dtype == torch.float32
    assert abs(got.item() - want) <= 1e-2 * abs(want)
    # autocast is off inside: identical to the float32 computation on the same inputs
    assert got.item() == fn(*cast(low, torch.float32), **kwargs).item()


def test_bf16_autocast_sinkhorn_codes():
    _, _, sa, _, _ = _inputs()
    want = L.sinkhorn(sa)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = L.sinkhorn(sa.bfloat16())
    assert got.dtype == torch.float32
    assert (got.double() - want).abs().max() < 1e-2


def test_autocast_inputs_from_a_bf16_layer():
    """Embeddings that come out of an autocast linear layer (bf16) are upcast, not rounded on."""
    layer = torch.nn.Linear(D, D)
    x = rand(N, D, seed=5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        za, zb = layer(x), layer(x.flip(0))
        assert za.dtype == torch.bfloat16
        loss = L.vicreg(za, zb)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


SMALL_TEMPERATURE = {
    "nt_xent": {"temperature": 0.01},
    "info_nce_dot": {"temperature": 0.01},
    "swav": {"temperature": 0.01, "epsilon": 0.005},
    "dino": {"student_temp": 0.01, "teacher_temp": 0.005},
    "uniformity": {"t": 100.0},
}


@pytest.mark.parametrize("name", NAMES)
def test_a_nan_input_gives_a_nan_loss_not_an_error(name):
    """No loss checks its inputs for NaN (on a GPU that would wait for the host every step);
    a NaN embedding makes the loss NaN, which the engine reports with its step and seed."""
    fn, args, kwargs = cases()[name]
    args = [a.clone() for a in args]
    args[0].view(-1)[0] = float("nan")
    assert torch.isnan(fn(*args, **kwargs))


@pytest.mark.parametrize("name", NAMES)
def test_fp16_inputs_give_finite_values_and_gradients(name):
    """fp16 inputs are upcast exactly, so loss and gradient are the float32 computation's on the
    same values, the gradient rounded back to fp16; and finite with small temperatures."""
    fn, args, kwargs = cases()[name]
    kwargs = {**kwargs, **SMALL_TEMPERATURE.get(name, {})}
    if name in ("diet", "cross_entropy"):
        args = [args[0] * 1e3, args[1]]  # logits near the fp16 range
    half = [a.half().requires_grad_() if a.is_floating_point() else a for a in args]
    single = [a.detach().float().requires_grad_() if a.is_floating_point() else a for a in half]
    loss = fn(*half, **kwargs)
    want = fn(*single, **kwargs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.equal(loss, want)
    loss.backward()
    want.backward()
    for a, b in zip(half, single, strict=True):
        if a.is_floating_point():
            assert (a.grad is None) == (b.grad is None)
            if a.grad is not None:
                assert a.grad.dtype == torch.float16 and torch.isfinite(a.grad).all()
                assert torch.equal(a.grad, b.grad.half())


def test_fp16_sinkhorn_small_epsilon():
    _, _, sa, _, _ = _inputs()
    q = L.sinkhorn(sa.half(), epsilon=0.001)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    assert torch.allclose(q.sum(1), torch.ones(N), atol=1e-5)


PAIR_LOSSES = [
    L.nt_xent,
    L.info_nce,
    L.alignment,
    L.barlow_twins,
    L.vicreg,
    L.stability,
    L.vicreg_entropy,
]
TEMPERED = [
    (L.nt_xent, "temperature"),
    (L.info_nce, "temperature"),
    (L.swav, "temperature"),
    (L.swav, "epsilon"),
    (L.sinkhorn, "epsilon"),
]


@pytest.mark.parametrize("fn", PAIR_LOSSES, ids=lambda f: f.__name__)
def test_pair_losses_reject_bad_shapes_and_dtypes(fn):
    za = rand(6, 4)
    with pytest.raises(ValueError, match="z_a and z_b"):
        fn(za, rand(6, 3))
    with pytest.raises(TypeError, match="z_a"):
        fn(torch.ones(6, 4, dtype=torch.int64), za)
    with pytest.raises(TypeError, match="z_b"):
        fn(za, za.numpy())
    with pytest.raises(ValueError, match="z_a must have shape"):
        fn(za[0], za[0])
    with pytest.raises(ValueError, match="z_a must have at least one feature"):
        fn(za[:, :0], za[:, :0])


@pytest.mark.parametrize(("fn", "arg"), TEMPERED, ids=lambda x: getattr(x, "__name__", x))
@pytest.mark.parametrize("value", [0.0, -0.5, float("inf")])
def test_temperatures_must_be_positive(fn, arg, value):
    _, _, sa, sb, _ = _inputs()
    args = [sa] if fn is L.sinkhorn else [sa, sb]
    with pytest.raises(ValueError, match=arg):
        fn(*args, **{arg: value})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", NAMES)
def test_cuda_autocast_matches_float64(name, dtype):
    fn, args, kwargs = cases()[name]
    want = fn(*args, **kwargs).item()
    low = [a.cuda().to(dtype) if a.is_floating_point() else a.cuda() for a in args]
    with torch.autocast("cuda", dtype=dtype):
        got = fn(*low, **kwargs)
    assert got.dtype == torch.float32 and got.device.type == "cuda"
    assert abs(got.item() - want) <= 1e-2 * abs(want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_loss_and_gradient_never_wait_for_the_host(name):
    """A training step must not synchronise (the engine reads values back at eval steps only):
    forward and backward of every loss run under CUDA's sync debug mode set to 'error'."""
    fn, args, kwargs = cases()[name]
    gpu = [a.cuda().float().requires_grad_(True) if a.is_floating_point() else a.cuda()
           for a in args]

    def step():
        loss = fn(*gpu, **kwargs)
        torch.autograd.grad(loss, [a for a in gpu if a.requires_grad], allow_unused=True)

    step()  # lazy initialisation (cuBLAS / cuSOLVER handles) may synchronise once
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
