"""``python training/train.py --config FILE [--out DIR] [--resume [CKPT]] [--stages a,b] [key=value ...]``.

Loads the YAML (``yaml.safe_load``), applies ``key.sub=value`` overrides, validates it against
:class:`TrainConfig` (unknown keys are errors) and runs the trainer named by ``stage:``; a config
with ``stages:`` instead runs the stage chain (``training/chain.py``). Started by
``torchrun --nproc_per_node=K``, every process joins one DDP group (``training/distributed.py``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import distributed
from ..typed_config import ConfigError, apply_overrides, from_dict, load_yaml
from .stages import STAGES, TrainConfig


def parse_config(path, overrides=()) -> TrainConfig:
    """A single-stage :class:`TrainConfig`, or a ``ChainConfig`` (a subclass) when it has ``stages:``."""
    raw = apply_overrides(load_yaml(path), list(overrides))
    if "stages" in raw:
        from .chain import parse_chain

        return parse_chain(raw)
    return from_dict(TrainConfig, raw, "config")


RESUME_LATEST = "<latest>"  # ``--resume`` without a path: a chain finds each stage's last checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="dsc_pose training entry point")
    p.add_argument("--config", required=True, help="training YAML (see config/train/)")
    p.add_argument("--out", help="output folder (overrides out:)")
    p.add_argument("--resume", nargs="?", const=RESUME_LATEST,
                   help="continue: a single stage from checkpoint CKPT; a chain (no CKPT) from each "
                        "interrupted stage's last checkpoint. Put key=value overrides before --resume")
    p.add_argument("--stages", help="chain configs: run only these stages, e.g. dsc_posenet,eval")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (value parsed as YAML)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "python training/train.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        config = parse_config(args.config, args.overrides)
        chain = bool(getattr(config, "stages", None))
        if args.stages and not chain:
            raise ConfigError("--stages needs a chain config (stages: [...]); this one has stage: " + config.stage)
        if chain and args.resume not in (None, RESUME_LATEST):
            raise ConfigError(f"--resume takes no checkpoint with a chain config (got {args.resume!r}); "
                              "put key=value overrides before --resume")
        if not chain and args.resume == RESUME_LATEST:
            raise ConfigError("--resume needs the checkpoint to continue from, e.g. OUT/checkpoints/seg_last.pt")
    except ConfigError as exc:
        print(f"train.py: config error: {exc}", file=sys.stderr)
        return 2
    config.device = distributed.init_from_env(config.device)
    from ..checkpoint import CheckpointError

    try:
        if distributed.is_main():
            save_resolved_config(config, args.out or config.out, command)
        if chain:
            from .chain import run_chain

            only = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
            run_chain(config, args.out, only, args.resume is not None, command)
        else:
            STAGES[config.stage](config, out=args.out, resume=args.resume, command=command)
    except ConfigError as exc:
        print(f"train.py: config error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:  # another method's file, another version, a version-1 file
        print(f"train.py: checkpoint error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


def save_resolved_config(config: TrainConfig, out: str, command: str) -> Path:
    """Print the fully resolved configuration (bases, defaults and overrides applied) and keep it as
    ``OUT/config.resolved.yaml``, so every run records exactly what it ran."""
    import yaml

    from ..data.bop_io import atomic_write_text
    from ..typed_config import to_dict
    from .common import resolve_path

    text = f"# {command}\n" + yaml.safe_dump(to_dict(config), sort_keys=False)
    print(text, flush=True)
    path = resolve_path(out) / "config.resolved.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
