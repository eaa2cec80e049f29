"""Content hashes for configs and tensors, so that a serialized DGP proves what it is."""

from __future__ import annotations

import hashlib
import json

import torch


def config_hash(config: dict) -> str:
    """sha256 (first 16 hex digits) of the config as canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) over names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
