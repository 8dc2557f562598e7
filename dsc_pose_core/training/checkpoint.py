"""Checkpoints: a plain dict of tensors and primitives (weights, config, object ids, progress).

Written atomically (temporary file in the same folder, fsync, ``os.replace``): a crash or a failing
save never leaves a half-written file and keeps the previous checkpoint. Read with
``torch.load(weights_only=True)``: no pickle code runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a dsc_pose checkpoint (expected a dict)")
    return payload
