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


# Keys of a training checkpoint that only resuming needs.
RESUME_ONLY_KEYS = ("optimizer", "history")


def compact_payload(payload: dict) -> dict:
    """A checkpoint for inference and distribution: float weights in float16, optimiser state and
    history dropped (about 1/6 of a float32 Adam checkpoint). Loading into a float32 model converts
    back (``load_state_dict`` copies with a cast)."""
    compact = {}
    for key, value in payload.items():
        if key in RESUME_ONLY_KEYS:
            continue
        if key in ("model", "state_dict") and isinstance(value, dict):
            value = {k: (v.detach().cpu().half() if torch.is_tensor(v) and v.is_floating_point() else v)
                     for k, v in value.items()}
        compact[key] = value
    compact["compact"] = True
    return compact


def main(argv=None) -> int:
    """``python -m dsc_pose_core.checkpoint SRC DST``: write a compact float16 copy."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args(argv)
    import pickle

    try:
        payload = load_checkpoint(args.src)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        print(f"checkpoint: error: {exc}", file=sys.stderr)
        return 2
    path = save_checkpoint(args.dst, compact_payload(payload))
    print(f"{args.src} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
