"""The latents of the image DGP are decodable: a small CNN trained supervised on rendered
32 x 32 images recovers every continuous latent with held-out R^2 >= 0.9 (rotation >= 0.85),
and the shape.

About 20 s on 2 CPU cores. Rotation is the slowest latent to learn (six shapes, each with its
own outline); the network sees pixel coordinates as two extra input channels (CoordConv) and
reads out globally pooled features, so position and orientation are both weight-shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score
from torch import nn

from sithlib.dgp.images import LATENTS, SHAPES, render, sample_latents

SIZE, N_TRAIN, N_TEST, STEPS, BATCH = 32, 16000, 1000, 1500, 64


class SmallCNN(nn.Module):
    """Four 3x3 conv layers (8-16-32-32 channels, two max-pools), then mean and max pooling
    and a two-layer head: 6 latents and 6 shape logits."""

    def __init__(self, c: int = 8):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.features = nn.Sequential(*block(5, c), nn.MaxPool2d(2), *block(c, 2 * c),
                                      nn.MaxPool2d(2), *block(2 * c, 4 * c), *block(4 * c, 4 * c))
        self.head = nn.Sequential(nn.Linear(8 * c, 256), nn.ReLU(), nn.Linear(256, 12))
        grid = torch.linspace(-1, 1, SIZE)
        self.register_buffer("coords", torch.stack(torch.meshgrid(grid, grid, indexing="ij")))

    def forward(self, x):
        coords = self.coords.expand(x.shape[0], -1, -1, -1)
        f = self.features(torch.cat([x, coords], 1))
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))


def test_small_cnn_recovers_the_latents():
    gen = torch.Generator().manual_seed(0)
    z_test = sample_latents(N_TEST, generator=gen)
    z_train = sample_latents(N_TRAIN, generator=gen)
    x_test, x_train = render(z_test, SIZE), render(z_train, SIZE)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the network's initialisation
        net = SmallCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=STEPS)
    for _ in range(STEPS):
        i = torch.randint(N_TRAIN, (BATCH,), generator=gen)
        out = net(x_train[i])
        loss = (10 * F.mse_loss(out[:, :6], z_train[i, :6])
                + F.cross_entropy(out[:, 6:], z_train[i, 6].long()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        pred = net(x_test)
    r2 = r2_score(z_test[:, :6].numpy(), pred[:, :6].numpy(), multioutput="raw_values")
    accuracy = (pred[:, 6:].argmax(1) == z_test[:, 6].long()).float().mean().item()
    # Rotation, the slowest latent to learn, ends near 0.92 here and moves by about 0.005 with
    # the BLAS kernels of another CPU: its bar is lower, so that the test measures decodability,
    # not the machine.
    floor = [0.85 if name == "rotation" else 0.9 for name in LATENTS[:6]]
    assert (r2 >= floor).all(), dict(zip(LATENTS, r2.round(3), strict=False))
    assert accuracy >= 0.95, f"shape accuracy {accuracy:.3f} over {len(SHAPES)} shapes"
