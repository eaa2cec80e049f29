"""Supervised cross-entropy and DIET against a float64 loop with label smoothing."""

from __future__ import annotations

import math

import pytest
import torch

from sithlib.losses import cross_entropy, diet

TOL = 1e-6


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def ref_ce(logits, labels, smoothing):
    """-(1 - a) log p_y - a/C sum_k log p_k, averaged over the batch."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        log_p = [v - lse for v in row]
        total += -(1 - smoothing) * log_p[y] - smoothing / len(row) * sum(log_p)
    return total / len(labels)


@pytest.mark.parametrize("loss_fn", [cross_entropy, diet])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.8])
def test_matches_loop(loss_fn, smoothing):
    logits = 3 * rand(9, 6, seed=1)
    labels = torch.tensor([0, 5, 2, 2, 3, 1, 4, 0, 5])
    got = loss_fn(logits, labels, label_smoothing=smoothing)
    assert abs(got.item() - ref_ce(logits, labels, smoothing)) < TOL


def test_known_values():
    uniform = torch.zeros(4, 7)
    assert abs(diet(uniform, torch.arange(4)).item() - math.log(7)) < 1e-6
    confident = torch.full((3, 5), -1e4)
    confident[torch.arange(3), torch.tensor([1, 2, 3])] = 1e4
    assert cross_entropy(confident, torch.tensor([1, 2, 3])).item() == 0.0
    # shifting every logit of a row by a constant changes nothing
    logits, y = rand(5, 4, seed=2), torch.tensor([0, 1, 2, 3, 0])
    shifted = logits + rand(5, 1, seed=3)
    assert abs(cross_entropy(shifted, y).item() - cross_entropy(logits, y).item()) < 1e-12


def test_accepts_any_integer_labels():
    logits = rand(4, 3)
    for dtype in (torch.int32, torch.int64, torch.uint8):
        labels = torch.tensor([0, 1, 2, 1], dtype=dtype)
        assert abs(diet(logits, labels).item() - ref_ce(logits, labels.long(), 0.0)) < TOL


@pytest.mark.parametrize("loss_fn", [cross_entropy, diet])
def test_vmap_over_seeds_equals_one_call_per_seed(loss_fn):
    """Seed ensembles train under torch.func.vmap: the label check must not branch on data."""
    logits = rand(3, 8, 5, seed=4)
    labels = torch.randint(0, 5, (3, 8), generator=torch.Generator().manual_seed(5))
    batched = torch.func.vmap(loss_fn)(logits, labels)
    for s in range(3):
        assert abs(batched[s].item() - loss_fn(logits[s], labels[s]).item()) < 1e-12


def test_bad_input():
    logits = rand(4, 3)
    with pytest.raises(TypeError, match="index"):
        diet(logits, torch.zeros(4))
    with pytest.raises(TypeError, match="y must"):
        cross_entropy(logits, [0, 1, 2, 0])
    with pytest.raises(ValueError, match="index"):
        diet(logits, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="index"):
        diet(logits, torch.tensor([0, -1, 2, 0]))
    with pytest.raises(ValueError, match="y must have shape"):
        cross_entropy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="label_smoothing"):
        diet(logits, torch.tensor([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.raises(TypeError, match=r"label_smoothing must be a real number in \[0.0, 1.0\]"):
        diet(logits, torch.tensor([0, 1, 2, 0]), label_smoothing="0.1")
    with pytest.raises(ValueError, match="logits"):
        diet(logits[0], torch.tensor([0]))
    with pytest.raises(TypeError, match="logits"):
        cross_entropy(torch.zeros(4, 3, dtype=torch.long), torch.tensor([0, 1, 2, 0]))
