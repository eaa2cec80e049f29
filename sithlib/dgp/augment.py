r"""Image-space positive pairs: the SimCLR / BYOL augmentation recipe, per sample, in batches.

A view is :math:`t(x)` with :math:`t \sim \Omega` drawn independently for every image of the
batch: random resized crop, horizontal flip, colour jitter (brightness, contrast, saturation,
hue in a random order, applied with probability ``jitter_p``), grayscale, Gaussian blur and
solarization, in that order (Chen et al., 2020; Grill et al., 2020). The random part and the
deterministic part are separate functions: :func:`sample_params` draws every parameter from an
explicit ``torch.Generator`` and :func:`apply_params` applies them, so a view can be recomputed
from its parameters, and :func:`augment` returns both. Each operation follows the definition
of ``torchvision.transforms.v2.functional`` for float images in [0, 1] (same grayscale
weights, the same blends and clamps, reflect padding for the blur), which the tests use as the
reference, sample by sample.

Why plain torch. torchvision's transforms draw one set of parameters per call from the global
random state, so a batch either shares one crop or needs a Python loop over images, and their
randomness cannot be driven by a ``torch.Generator``. torchvision v2 ``functional`` ops take
one parameter per call as well (one crop box, one brightness factor). kornia batches random
parameters, but it is a further dependency (not installed here) with its own random state.
Here a crop and a flip of every image is one ``affine_grid`` / ``grid_sample`` call, the blur
is one grouped convolution with one kernel per image, and the colour operations are
elementwise, so a batch of views costs a handful of kernel launches on any device.

Differences from torchvision, on purpose: crop boxes are continuous (sub-pixel) rather than
rounded to whole pixels, and the resize is bilinear without antialiasing. That is exact when a
crop is enlarged (always the case when the output keeps the input size, as in the CIFAR and
rendered-image recipes); a crop shrunk to a much smaller output aliases, so keep ``size`` at
least as large as the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's rgb_to_grayscale
_ATTEMPTS = 10  # crop boxes tried per image before the central fallback (torchvision: 10)
_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation distribution :math:`\\Omega`; defaults are SimCLR's ImageNet recipe.

    Parameters
    ----------
    size : int or None
        Side of the square output; None keeps the input size.
    crop_scale : tuple of float
        Range of the crop area as a fraction of the image area, 0 < low <= high <= 1.
    crop_ratio : tuple of float
        Range of the crop aspect ratio width / height (drawn log-uniformly), 0 < low <= high.
    flip_p : float
        Probability of a horizontal flip.
    brightness : float
        Brightness jitter strength b: the factor is uniform on [max(0, 1 - b), 1 + b].
    contrast : float
        Contrast jitter strength, in the same way.
    saturation : float
        Saturation jitter strength, in the same way.
    hue : float
        Hue jitter strength in turns, in [0, 0.5]: the shift is uniform on [-hue, hue].
    jitter_p : float
        Probability that the colour jitter is applied at all.
    grayscale_p : float
        Probability of converting to grayscale.
    blur_p : float
        Probability of a Gaussian blur.
    blur_sigma : tuple of float
        Range of the blur standard deviation in pixels, 0 < low <= high.
    blur_kernel : float
        Side of the blur kernel as a fraction of the output side (SimCLR: 10%), rounded to the
        next odd integer >= 3.
    solarize_p : float
        Probability of solarization at threshold 0.5 (BYOL's second view: 0.2).
    """

    size: int | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: float = 0.1
    solarize_p: float = 0.0

    def __post_init__(self):
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int)
                                      or self.size < 1):
            raise ValueError(f"size must be None or an integer >= 1, got {self.size!r}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not all(math.isfinite(v) for v in lo_hi):
                raise ValueError(f"{name} must be a pair (low, high) of finite numbers, "
                                 f"got {lo_hi!r}")
            if not 0 < lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {lo_hi!r}")
        if self.crop_scale[1] > 1:
            raise ValueError(f"crop_scale must lie in (0, 1], got {self.crop_scale!r}")
        for f in fields(self):
            if f.name.endswith("_p") and not 0 <= getattr(self, f.name) <= 1:
                raise ValueError(f"{f.name} must be a probability in [0, 1], "
                                 f"got {getattr(self, f.name)!r}")
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (turns), got {self.hue!r}")
        if not 0 < self.blur_kernel <= 1:
            raise ValueError(f"blur_kernel must be in (0, 1], got {self.blur_kernel!r}")

    def kernel_size(self, side: int) -> int:
        """The odd blur kernel side for an output of side ``side`` (23 for 224, 3 for 32)."""
        return max(3, 2 * int(self.blur_kernel * side / 2) + 1)


def _jitter(s: float) -> dict:
    """SimCLR's colour distortion of strength s: (0.8 s, 0.8 s, 0.8 s, 0.2 s)."""
    return dict(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s)


_BYOL = AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)

#: Named recipes. ``"simclr"``: ImageNet, colour strength 1, blur p 0.5 (Chen et al., 2020);
#: ``"simclr_cifar"``: strength 0.5 and no blur (the SimCLR CIFAR-10 recipe);
#: ``"simsiam"``: crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1), blur p 0.5;
#: ``"byol_1"`` / ``"byol_2"``: BYOL's asymmetric pair (blur p 1.0 / 0.1, solarize p 0 / 0.2),
#: also VICReg's recipe.
RECIPES = {
    "simclr": AugmentConfig(),
    "simclr_cifar": AugmentConfig(**_jitter(0.5), blur_p=0.0),
    "simsiam": AugmentConfig(crop_scale=(0.2, 1.0), **_jitter(0.5), blur_p=0.5),
    "byol_1": replace(_BYOL, blur_p=1.0, solarize_p=0.0),
    "byol_2": replace(_BYOL, blur_p=0.1, solarize_p=0.2),
}


def recipe(name: str, **overrides) -> AugmentConfig:
    """The named recipe of :data:`RECIPES`, with fields replaced by ``overrides``."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return replace(RECIPES[name], **overrides)


# ---------------------------------------------------------------------------------------------
# colour space


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma :math:`0.2989 R + 0.587 G + 0.114 B` of images (..., 3, H, W), shape (..., 1, H, W)."""
    r, g, b = x.unbind(-3)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(-3)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """HSV of RGB values in [0, 1] along axis -3; hue in turns [0, 1), 0 for grays."""
    r, g, b = x.unbind(-3)
    v, _ = x.max(-3)
    c = v - x.min(-3).values
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    # The hue sector is decided by which channel is the maximum (ties: red, then green).
    h = torch.where(v == r, torch.remainder((g - b) / safe_c, 6.0),
                    torch.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0))
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    return torch.stack([torch.remainder(h, 1.0), s, v], dim=-3)


def hsv_to_rgb(h: torch.Tensor, s, v) -> torch.Tensor:
    """RGB of hue h (turns), saturation s and value v, stacked along a new last axis.

    Uses the closed form :math:`c_k = v - v s \\, \\mathrm{clamp}(\\min(m_k, 4 - m_k), 0, 1)`
    with :math:`m_k = (k + 6h) \\bmod 6` and k = 5, 3, 1 for R, G, B, which is smooth in h.
    """
    h, s, v = torch.broadcast_tensors(*(torch.as_tensor(t, dtype=h.dtype, device=h.device)
                                        for t in (h, s, v)))
    out = []
    for k in (5.0, 3.0, 1.0):
        m = torch.remainder(k + 6.0 * h, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(m, 4.0 - m), 0.0, 1.0))
    return torch.stack(out, dim=-1)


# ---------------------------------------------------------------------------------------------
# parameters


def _uniform(n, lo, hi, generator, device, dtype=torch.float32):
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device, dtype=dtype)


def _crop_boxes(n, cfg, height, width, generator, device) -> torch.Tensor:
    """torchvision's RandomResizedCrop box distribution, continuous, vectorized over images:
    up to 10 (area, ratio) draws per image, the first that fits wins, else a central crop."""
    shape = (n, _ATTEMPTS)
    area = _uniform(shape, *cfg.crop_scale, generator, device)
    log_r = _uniform(shape, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]),
                     generator, device)
    u_top = torch.rand(shape, generator=generator, device=device)
    u_left = torch.rand(shape, generator=generator, device=device)
    ratio = torch.exp(log_r)
    aspect = height / width
    w = torch.sqrt(area * ratio * aspect)  # fractions of the width and the height
    h = torch.sqrt(area / (ratio * aspect))
    ok = (w <= 1) & (h <= 1)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)
    pick = lambda t: t.gather(1, first).squeeze(1)  # noqa: E731
    w, h, u_top, u_left = pick(w), pick(h), pick(u_top), pick(u_left)
    box = torch.stack([u_top * (1 - h), u_left * (1 - w), h, w], dim=1)
    # Fallback: the largest central crop whose ratio is clamped into crop_ratio.
    in_ratio = width / height
    lo, hi = cfg.crop_ratio
    if in_ratio < lo:
        fw, fh = 1.0, in_ratio / lo
    elif in_ratio > hi:
        fw, fh = hi / in_ratio, 1.0
    else:
        fw, fh = 1.0, 1.0
    fallback = torch.tensor([(1 - fh) / 2, (1 - fw) / 2, fh, fw], device=device)
    return torch.where(ok.any(dim=1, keepdim=True), box, fallback)


def sample_params(
    n: int,
    config: AugmentConfig | None = None,
    *,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device=None,
) -> dict[str, torch.Tensor]:
    """Independent augmentation parameters for n images of size height x width.

    Every tensor is drawn in a fixed order whatever the outcomes, so a seed fixes all of them.

    Parameters
    ----------
    n : int
        Number of images.
    config : AugmentConfig, optional
        The distribution (SimCLR's recipe when None).
    height : int
        Input image height (the crop box depends on the aspect ratio).
    width : int
        Input image width.
    generator : torch.Generator, optional
        Source of randomness on ``device``.
    device : torch.device or str, optional
        Device of the parameters.

    Returns
    -------
    params : dict of Tensor
        One row per image: ``crop`` (n, 4), the box as fractions of the input (top, left,
        height, width); ``flip`` (n,) bool; ``jitter`` (n, 4), the brightness, contrast and
        saturation factors and the hue shift in turns (1, 1, 1, 0 where the jitter is not
        applied); ``jitter_order`` (n, 4), the order of the four jitter operations
        (0 brightness, 1 contrast, 2 saturation, 3 hue); ``jitter_applied``, ``grayscale`` and
        ``solarize`` (n,) bool; ``blur_sigma`` (n,) in pixels, 0 where no blur is applied.
    """
    cfg = AugmentConfig() if config is None else config
    if not isinstance(cfg, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(cfg).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    g, dev = generator, device

    def coin(p):
        return torch.rand(n, generator=g, device=dev) < p

    crop = _crop_boxes(n, cfg, height, width, g, dev)
    flip = coin(cfg.flip_p)
    factors = [_uniform(n, max(0.0, 1 - s), 1 + s, g, dev)
               for s in (cfg.brightness, cfg.contrast, cfg.saturation)]
    shift = _uniform(n, -cfg.hue, cfg.hue, g, dev)
    order = torch.rand(n, 4, generator=g, device=dev).argsort(dim=1)
    applied = coin(cfg.jitter_p)
    gray = coin(cfg.grayscale_p)
    sigma = _uniform(n, *cfg.blur_sigma, g, dev)
    blur = coin(cfg.blur_p)
    solarize = coin(cfg.solarize_p)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev)
    jitter = torch.where(applied[:, None], torch.stack(factors + [shift], dim=1), identity)
    return {
        "crop": crop,
        "flip": flip,
        "jitter": jitter,
        "jitter_order": order,
        "jitter_applied": applied,
        "grayscale": gray,
        "blur_sigma": torch.where(blur, sigma, torch.zeros_like(sigma)),
        "solarize": solarize,
    }


# ---------------------------------------------------------------------------------------------
# operations (each on a batch, with one parameter per image)


def crop_flip(x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Resized crops with optional horizontal flips, one ``grid_sample`` for the whole batch.

    With align_corners=False the output pixel centre j of a box (top, left, height, width)
    samples the input at :math:`u = w (2j + 1) / s - w + 2 l + w - 1` in grid units, so a
    whole-pixel box of side s lands exactly on input pixel centres (the crop is a slice).
    """
    n = x.shape[0]
    top, left, h, w = crop.to(x.dtype).unbind(1)
    sign = 1.0 - 2.0 * flip.to(x.dtype)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * left + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * top + h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    # Border padding: boxes never leave the image, but a sample on the last pixel centre may
    # round outside it by an ulp.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.to(a.dtype).view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathrm{clamp}(b x, 0, 1)` per image."""
    return (x * factor.to(x.dtype).view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its luma: :math:`\\mathrm{clamp}(c x + (1 - c) \\bar
    y, 0, 1)`."""
    mean = rgb_to_gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its own grayscale version."""
    return _blend(x, rgb_to_gray(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` turns in HSV, keeping S and V.

    The RGB -> HSV -> RGB round trip is written out so that only the hue is computed: with
    value M, chroma C and hue h in sixths, the result is :math:`M - C \\, \\mathrm{clamp}(
    \\min(m_k, 4 - m_k), 0, 1)`, :math:`m_k = (k + h + 6 \\delta) \\bmod 6` (the form of
    :func:`hsv_to_rgb`), which costs a third of the general conversions.
    """
    r, g, b = x.unbind(-3)
    v = x.amax(-3)
    c = v - x.amin(-3)
    # Hue in sixths from the channel that is the maximum (ties: red, then green); grays
    # (c = 0) get any hue, which C = 0 then multiplies away.
    h6 = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * c, r - g + 4 * c))
    h6 = h6 / c.clamp_min(torch.finfo(x.dtype).tiny) + 6 * shift.to(x.dtype).view(-1, 1, 1)
    k = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    m = torch.remainder(k + h6.unsqueeze(1), 6.0)
    return v.unsqueeze(1) - c.unsqueeze(1) * torch.minimum(m, 4.0 - m).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one standard deviation per image, reflect padding."""
    n, c, hgt, wid = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma.to(x.dtype)[:, None]) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n c, k)
    pad = kernel_size // 2
    # Reflect padding needs pad < side; larger kernels than the image fall back to replicate.
    mode = "reflect" if pad < min(hgt, wid) else "replicate"
    y = F.pad(x.reshape(1, n * c, hgt, wid), (pad, pad, pad, pad), mode=mode)
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, hgt, wid)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """:math:`1 - x` where :math:`x \\geq` threshold, x elsewhere."""
    return torch.where(x >= threshold, 1.0 - x, x)


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _on_subset(x: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` to the rows of ``x`` where ``mask`` holds, in place (``x`` is always a
    fresh tensor of :func:`apply_params`; copying the whole batch for every operation was
    the main cost on large batches)."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        x.index_copy_(0, idx, fn(x.index_select(0, idx), idx))
    return x


def apply_params(
    x: torch.Tensor, params: dict, config: AugmentConfig | None = None
) -> torch.Tensor:
    """Apply the augmentations of :func:`sample_params` to a batch of images.

    Parameters
    ----------
    x : Tensor, shape (n, 3, H, W)
        Float RGB images in [0, 1], on any device.
    params : dict
        Output of :func:`sample_params` for n images, on ``x``'s device.
    config : AugmentConfig, optional
        Used for the output size and the blur kernel size only (SimCLR's recipe when None).

    Returns
    -------
    Tensor, shape (n, 3, size, size)
        The augmented images, with ``x``'s dtype, in [0, 1].
    """
    cfg = AugmentConfig() if config is None else config
    _check_images(x)
    n = x.shape[0]
    if params["crop"].shape != (n, 4):
        raise ValueError(f"params are for {params['crop'].shape[0]} images, x holds {n}")
    size = cfg.size or x.shape[-1]
    if cfg.size is None and x.shape[-1] != x.shape[-2]:
        raise ValueError("non-square images need config.size (the output side)")
    if x.device.type != "cpu":
        return _apply(x, params, size, cfg.kernel_size(size))
    # On the CPU the chain of elementwise operations is memory-bound: chunks of about 2^18
    # pixels per channel stay in cache and run 2-3 times faster than one large batch.
    chunk = max(1, 2**18 // (size * size))
    out = torch.empty(n, 3, size, size, dtype=x.dtype)
    for start in range(0, n, chunk):
        part = {k: v[start : start + chunk] for k, v in params.items()}
        out[start : start + chunk] = _apply(x[start : start + chunk], part, size,
                                            cfg.kernel_size(size))
    return out


def _apply(x, params, size, k):
    y = crop_flip(x, params["crop"], params["flip"], size)
    jitter, order = params["jitter"], params["jitter_order"]
    for stage in range(4):
        for op in range(4):
            mask = params["jitter_applied"] & (order[:, stage] == op)
            y = _on_subset(y, mask, lambda t, i, op=op: _OPS[op](t, jitter[i, op]))
    y = _on_subset(y, params["grayscale"], lambda t, i: rgb_to_gray(t).expand_as(t))
    sigma = params["blur_sigma"]
    y = _on_subset(y, sigma > 0, lambda t, i: gaussian_blur(t, sigma[i], k))
    y = _on_subset(y, params["solarize"], lambda t, i: solarize(t))
    # Interpolation and blur weights sum to 1 only up to rounding: keep the range exact.
    return y.clamp_(0.0, 1.0)


def _check_images(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (n, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (n, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor with values in [0, 1], got dtype {x.dtype}")


def augment(
    x: torch.Tensor,
    config: AugmentConfig | str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One random view :math:`t(x)`, :math:`t \\sim \\Omega`, of every image of a batch.

    Parameters
    ----------
    x : Tensor, shape (n, 3, H, W)
        Float RGB images in [0, 1].
    config : AugmentConfig or str, optional
        The distribution, or the name of a recipe in :data:`RECIPES` (default ``"simclr"``).
    generator : torch.Generator, optional
        Source of randomness on ``x``'s device; two calls with generators in the same state
        give bit-identical views on the CPU.

    Returns
    -------
    views : Tensor, shape (n, 3, size, size)
        The augmented images.
    params : dict of Tensor
        The parameters of each view (see :func:`sample_params`).
    """
    cfg = recipe(config) if isinstance(config, str) else config
    cfg = AugmentConfig() if cfg is None else cfg
    _check_images(x)
    params = sample_params(x.shape[0], cfg, height=x.shape[-2], width=x.shape[-1],
                           generator=generator, device=x.device)
    return apply_params(x, params, cfg), params
