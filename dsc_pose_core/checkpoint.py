"""Checkpoints: one schema for every method of the package, written atomically, read weights-only.

Schema (``FORMAT``, ``VERSION`` 2), a plain dict of tensors and primitives:

- ``format`` = ``"dsc_pose.checkpoint"``, ``version`` = 2, ``method``: one of ``METHODS``;
- ``network``: everything needed to rebuild the network (its config as a dict of primitives);
- ``obj_ids``: the registry ids of the objects it serves (one for the per-object networks);
- ``weights``: the state dict;
- ``inference``: what inference needs beside the network (DSC-PoseNet: ``keypoints_3d`` [K,3]
  metres; Self6D: ``diameter`` metres; DeepIM: ``zoom``, ``translation_units``, ``observed_box``);
- ``train_config``: the training stage's config; ``provenance``: commit, machine, time, object names;
- ``resume``: training progress (stage, step or iteration, optimiser state, history): only resuming
  needs it, and compact copies drop it.

Written with :func:`save_checkpoint` (temporary file in the same folder, fsync, ``os.replace``): a
crash or a failing save never leaves a half-written file and keeps the previous checkpoint. Read
with :func:`read_checkpoint` (``torch.load(weights_only=True)``: no pickle code runs); a file of
another method, of an unknown version or of the package's earlier per-method formats is one
:class:`CheckpointError` (the earlier formats name the converter:
``python -m dsc_pose_core.checkpoint upgrade PATH``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMAT = "dsc_pose.checkpoint"
VERSION = 2
METHODS = ("segmentation", "dsc_posenet", "self6d", "deepim")

# the per-method formats written before this schema (version 1), by method
LEGACY_FORMATS = {"dsc_pose.segmentation/1": "segmentation", "dsc_pose.dsc_posenet/1": "dsc_posenet",
                  "dsc_pose.self6d/1": "self6d", "dsc_pose.deepim.v1": "deepim"}


# what of ``resume`` a compact copy keeps, in ``provenance["progress"]``
PROGRESS_KEYS = ("stage", "step", "iteration", "train_seconds")


class CheckpointError(ValueError):
    """A file that is not a checkpoint this package can use (as asked)."""


@dataclass
class Checkpoint:
    method: str  # one of METHODS
    network: dict  # the network's config (primitives)
    obj_ids: list[int]
    weights: dict  # state dict
    inference: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    resume: dict = field(default_factory=dict)
    compact: bool = False  # float16 weights, no resume state

    def payload(self) -> dict:
        if self.method not in METHODS:
            raise CheckpointError(f"unknown method {self.method!r}; one of {METHODS}")
        return {"format": FORMAT, "version": VERSION, "method": self.method, "network": dict(self.network),
                "obj_ids": [int(o) for o in self.obj_ids], "weights": self.weights, "inference": dict(self.inference),
                "train_config": dict(self.train_config), "provenance": dict(self.provenance),
                "resume": dict(self.resume), "compact": bool(self.compact)}

    @classmethod
    def from_payload(cls, payload, path="checkpoint", method: str | None = None) -> "Checkpoint":
        """The checkpoint of a loaded payload; ``method``: the method the caller needs (None: any)."""
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path}: not a dsc_pose checkpoint (expected a dict)")
        fmt = payload.get("format")
        if fmt in LEGACY_FORMATS:
            raise CheckpointError(f"{path}: an earlier {LEGACY_FORMATS[fmt]} checkpoint format ({fmt}); convert it "
                                  f"once with: python -m dsc_pose_core.checkpoint upgrade {path}")
        if fmt != FORMAT:
            raise CheckpointError(f"{path}: not a dsc_pose checkpoint (format {fmt!r})")
        if payload.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {payload.get('version')!r}; this dsc_pose reads "
                                  f"version {VERSION}")
        found = payload.get("method")
        if found not in METHODS:
            raise CheckpointError(f"{path}: unknown method {found!r}; one of {METHODS}")
        if method is not None and found != method:
            raise CheckpointError(f"{path}: a {found} checkpoint, not a {method} one")
        missing = [k for k in ("network", "obj_ids", "weights") if not isinstance(payload.get(k), (dict, list))]
        if missing:
            raise CheckpointError(f"{path}: {found} checkpoint without {', '.join(missing)}")
        return cls(found, payload["network"], [int(o) for o in payload["obj_ids"]], payload["weights"],
                   payload.get("inference") or {}, payload.get("train_config") or {},
                   payload.get("provenance") or {}, payload.get("resume") or {}, bool(payload.get("compact", False)))


def save_checkpoint(path: str | os.PathLike, payload: "dict | Checkpoint") -> Path:
    """Write ``payload`` (a :class:`Checkpoint` or a dict) to ``path`` atomically."""
    if isinstance(payload, Checkpoint):
        payload = payload.payload()
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
    """The raw payload dict of a file (weights-only); :func:`read_checkpoint` checks the schema."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a dsc_pose checkpoint (expected a dict)")
    return payload


def read_checkpoint(path: str | os.PathLike, method: str | None = None, map_location="cpu") -> Checkpoint:
    """The checkpoint at ``path``, of ``method`` (None: any); :class:`CheckpointError` otherwise."""
    return Checkpoint.from_payload(load_checkpoint(path, map_location), path, method)


def compact(checkpoint: Checkpoint) -> Checkpoint:
    """A copy for inference and distribution: float weights in float16, resume state dropped (about
    1/6 of a float32 Adam checkpoint). Loading into a float32 model converts back
    (``load_state_dict`` copies with a cast)."""
    weights = {k: (v.detach().cpu().half() if torch.is_tensor(v) and v.is_floating_point() else v)
               for k, v in checkpoint.weights.items()}
    # how far training had come stays known (provenance), the state to continue it does not
    progress = {k: v for k, v in checkpoint.resume.items() if k in PROGRESS_KEYS}
    record = dict(checkpoint.provenance) | ({"progress": progress} if progress else {})
    return Checkpoint(checkpoint.method, checkpoint.network, checkpoint.obj_ids, weights, checkpoint.inference,
                      checkpoint.train_config, record, {}, True)


# --------------------------------------------------------------------------------------------
# The converter from the per-method formats of version 1
# --------------------------------------------------------------------------------------------
def upgrade(payload: dict, path="checkpoint") -> Checkpoint:
    """The version-2 checkpoint of a version-1 payload (weights and values unchanged, moved; a compact
    file stays compact: its progress goes to ``provenance["progress"]``)."""
    checkpoint = _upgrade(payload, path)
    return compact(checkpoint) if checkpoint.compact else checkpoint


def _upgrade(payload: dict, path) -> Checkpoint:
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == FORMAT:
        return Checkpoint.from_payload(payload, path)
    method = LEGACY_FORMATS.get(fmt)
    if method is None:
        raise CheckpointError(f"{path}: not a dsc_pose checkpoint of any known format ({fmt!r})")
    legacy_provenance = {"upgraded_from": fmt}
    if "object_names" in payload:
        legacy_provenance["object_names"] = list(payload["object_names"])
    history = {"history": payload["history"]} if "history" in payload else {}
    optimizer = {"optimizer": payload["optimizer"]} if payload.get("optimizer") else {}
    if method in ("dsc_posenet", "self6d"):
        inference = ({"keypoints_3d": payload["keypoints_3d"]} if method == "dsc_posenet"
                     else {"diameter": float(payload["diameter"])})
        resume = ({"stage": payload["stage"], "step": int(payload["step"])} if "stage" in payload else {})
        # a shared DSC-PoseNet (several objects, per-object head channels) named them all
        ids = ([int(o) for o in torch.as_tensor(payload["obj_ids"]).reshape(-1).tolist()] if "obj_ids" in payload
               else [int(payload["obj_id"])])
        return Checkpoint(method, payload["model_config"], ids, payload["model"], inference,
                          payload.get("config", {}), legacy_provenance, resume | optimizer | history,
                          bool(payload.get("compact", False)))
    if method == "deepim":
        inference = {"zoom": payload.get("zoom", {}), "translation_units": payload.get("translation_units", "normalized"),
                     "observed_box": payload.get("observed_box", "rendered")}
        resume = {"step": int(payload.get("step", 0)), "train_seconds": float(payload.get("train_seconds", 0.0))}
        return Checkpoint(method, dict(payload["model"]), list(payload.get("obj_ids") or []), payload["state_dict"],
                          inference, payload.get("config", {}), legacy_provenance, resume | optimizer,
                          bool(payload.get("compact", False)))
    # segmentation: the network is its model config (files written without one name at least their encoder);
    # saved before the prior correction existed: none
    network = ((payload.get("config") or {}).get("segmentation") or {}).get("model")
    if network is None:
        if "encoder" not in payload:
            raise CheckpointError(f"{path}: a {fmt} file without its network's config or encoder: cannot convert")
        network = {"encoder": payload["encoder"]}
    weights = dict(payload["state_dict"])
    weights.setdefault("foreground_prior_logit", torch.zeros(len(payload["obj_ids"])))
    return Checkpoint(method, dict(network), list(payload["obj_ids"]), weights, {}, payload.get("config") or {},
                      legacy_provenance, {"iteration": int(payload.get("iteration", 0))},
                      bool(payload.get("compact", False)))


def main(argv=None) -> int:
    """``python -m dsc_pose_core.checkpoint compact SRC DST``: a compact float16 copy;
    ``python -m dsc_pose_core.checkpoint upgrade SRC [DST]``: convert a version-1 file to this schema
    (in place without DST); ``python -m dsc_pose_core.checkpoint show SRC``: method, objects, sizes."""
    import argparse
    import pickle
    import sys

    parser = argparse.ArgumentParser(prog="python -m dsc_pose_core.checkpoint", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("compact", help="float16 weights, no resume state")
    p.add_argument("src")
    p.add_argument("dst")
    p = commands.add_parser("upgrade", help="convert a version-1 checkpoint to this schema")
    p.add_argument("src")
    p.add_argument("dst", nargs="?")
    p = commands.add_parser("show", help="what a checkpoint holds")
    p.add_argument("src")
    args = parser.parse_args(argv)
    try:
        payload = load_checkpoint(args.src)
        checkpoint = upgrade(payload, args.src) if args.command == "upgrade" else Checkpoint.from_payload(payload, args.src)
    except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
        print(f"checkpoint: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "show":
        n = sum(v.numel() for v in checkpoint.weights.values() if torch.is_tensor(v))
        print(f"{args.src}: {checkpoint.method}, objects {checkpoint.obj_ids}, {n / 1e6:.2f}M weights"
              f"{' (compact)' if checkpoint.compact else ''}, provenance {checkpoint.provenance}")
        return 0
    if args.command == "compact":
        checkpoint = compact(checkpoint)
    dst = args.dst or args.src
    path = save_checkpoint(dst, checkpoint)
    print(f"{args.src} -> {path} ({path.stat().st_size / 1e6:.1f} MB, {checkpoint.method} v{VERSION})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
