"""calibrate_batchnorm: running statistics as training computes them, everything else restored."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sithlib.models import MLP, ResNet18, calibrate_batchnorm


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class _Marked(nn.Module):
    """An identity with a buffer of its own, which calibration must leave alone."""

    def __init__(self, width):
        super().__init__()
        self.register_buffer("mark", torch.arange(float(width)))

    def forward(self, x):
        return x


def net(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), _Marked(8),
                             nn.Linear(8, 4), nn.BatchNorm1d(4, momentum=0.3)).double()


def batch_stats(model, x):
    """Per layer, the batch mean and unbiased batch variance of each batch norm's input, with
    the layers before it normalising by batch statistics (training's forward), written out."""
    lin1, bn1, _, _, lin2, bn2 = model
    h1 = x @ lin1.weight.T + lin1.bias
    mean1, var1 = h1.mean(0), h1.var(0, correction=1)
    a = (h1 - mean1) / torch.sqrt(h1.var(0, correction=0) + bn1.eps) * bn1.weight + bn1.bias
    h2 = a.clamp(min=0) @ lin2.weight.T + lin2.bias
    return (mean1, var1), (h2.mean(0), h2.var(0, correction=1))


def test_one_batch_gives_its_mean_and_unbiased_variance():
    model = net().eval()
    x = rand(64, 3, seed=1)
    assert calibrate_batchnorm(model, [x]) == 2
    for bn, (mean, var) in zip((model[1], model[5]), batch_stats(model, x), strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=0, atol=1e-12)
        assert int(bn.num_batches_tracked) == 1


def test_several_batches_give_the_average_of_their_statistics():
    model = net()
    # Statistics far from the defaults, so a reset that did not happen would show.
    batches = [3.0 + 2.0 * rand(50, 3, seed=s) for s in range(3)]
    calibrate_batchnorm(model, iter(batches))
    per_batch = [batch_stats(model, x) for x in batches]
    for i, bn in enumerate((model[1], model[5])):
        mean = torch.stack([stats[i][0] for stats in per_batch]).mean(0)
        var = torch.stack([stats[i][1] for stats in per_batch]).mean(0)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)
        assert int(bn.num_batches_tracked) == 3
    # The same estimate as torch's own recomputation for weight averaging.
    other = net()
    torch.optim.swa_utils.update_bn(batches, other)
    for bn, ref in zip((model[1], model[5]), (other[1], other[5]), strict=True):
        torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-10, atol=1e-12)


def test_previous_statistics_are_replaced_not_averaged_in():
    fresh, used = net(), net()
    used.train()
    with torch.no_grad():
        for s in range(5):
            used(10.0 + rand(40, 3, seed=10 + s))
    x = rand(64, 3, seed=1)
    calibrate_batchnorm(fresh, [x])
    calibrate_batchnorm(used, [x])
    for a, b in zip(fresh.buffers(), used.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_momentum_flags_parameters_and_other_buffers_are_restored():
    model = net()
    model.eval()
    model[2].train()  # a mixed state, restored module by module
    flags = {name: m.training for name, m in model.named_modules()}
    params = {k: v.clone() for k, v in model.named_parameters()}
    mark = model[3].mark.clone()
    seen = []

    def forward(x):
        seen.append({name: m.training for name, m in model.named_modules()})
        return model(x)

    calibrate_batchnorm([model], [rand(32, 3, seed=s) for s in range(2)], forward)
    assert len(seen) == 2 and all(all(s.values()) for s in seen)  # training mode inside
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert model[1].momentum == 0.1 and model[5].momentum == 0.3
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]) and v.grad is None
    assert torch.equal(model[3].mark, mark)


def test_restored_after_a_failing_forward():
    model = net().eval()

    def fails(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        calibrate_batchnorm(model, [rand(8, 3)], fails)
    assert not any(m.training for m in model.modules())
    assert model[1].momentum == 0.1 and model[5].momentum == 0.3


def test_several_modules_with_one_forward_and_no_batch_norm():
    encoder = ResNet18(width=2, generator=torch.Generator().manual_seed(0)).eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        head = nn.Sequential(nn.Linear(encoder.feature_dim, 4), nn.BatchNorm1d(4)).eval()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    n_norms = sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) + 1
    assert calibrate_batchnorm([encoder, head], [x], lambda b: head(encoder(b))) == n_norms
    assert not any(m.training for m in [*encoder.modules(), *head.modules()])
    first = next(m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(first.running_var, torch.ones_like(first.running_var))
    with torch.no_grad():
        h = copy.deepcopy(encoder).train()(x)  # batch statistics throughout
    torch.testing.assert_close(head[1].running_mean, head[0](h).mean(0).detach())
    plain = MLP([3, 8, 2], generator=torch.Generator().manual_seed(0))
    assert calibrate_batchnorm(plain, [rand(4, 3).float()],
                               lambda b: pytest.fail("no batch norm: nothing to run")) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        calibrate_batchnorm(net(), [])
    with pytest.raises(ValueError, match="forward is needed"):
        calibrate_batchnorm([net(), net()], [rand(8, 3)])
    with pytest.raises(TypeError, match="nn.Module"):
        calibrate_batchnorm([net(), "encoder"], [rand(8, 3)], print)
    model = net()
    with pytest.raises(ValueError, match="empty"):
        calibrate_batchnorm(model, iter([]))
    assert torch.equal(model[1].running_var, torch.ones(8, dtype=torch.float64))


def test_calibration_batches_come_from_their_own_seeded_stream():
    from sithlib.models import calibration_batches

    def sample(generator, n):  # torch.rand draws one stream in order, whatever the call sizes
        return torch.rand(n, 3, generator=generator)

    a = calibration_batches(sample, 5, n_batches=3)
    torch.manual_seed(123)  # the global generator plays no part
    b = calibration_batches(sample, 5, n_batches=3)
    assert len(a) == 3 and all(x.shape == (5, 3) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    want = torch.rand(15, 3, generator=torch.Generator().manual_seed(2**31 - 2))
    assert torch.equal(torch.cat(a), want)  # one stream, batch after batch
