"""``python training/train.py --config FILE [--out DIR] [--resume CKPT] [key=value ...]``.

Loads the YAML (``yaml.safe_load``), applies ``key.sub=value`` overrides, validates it against
:class:`TrainConfig` (unknown keys are errors) and runs the trainer named by ``stage:``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, apply_overrides, from_dict, load_yaml
from .segmentation import SegmentationConfig, run_segmentation
from .deepim import DeepImConfig, run_deepim
from .dsc_posenet import DscPoseNetConfig, run_dsc_posenet


@dataclass
class TrainConfig:
    stage: str  # one of STAGES
    out: str = "out/train"  # output folder (relative paths: to the repository root)
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch CPU threads (0 = torch's default)
    segmentation: SegmentationConfig | None = None  # stage "segmentation" (dsc-posenet sec. 3.1)
    deepim: DeepImConfig | None = None  # stage "deepim" (deepim sec. 3)
    dsc_posenet: DscPoseNetConfig | None = None  # stage "dsc_posenet" (dsc-posenet sec. 3.2)

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage: {self.stage!r} is not one of {sorted(STAGES)}")
        if getattr(self, self.stage, None) is None:
            raise ConfigError(f"stage {self.stage!r} needs a {self.stage!r} section")


def _segmentation(config: TrainConfig, args, command: str):
    return run_segmentation(config, out=args.out, resume=args.resume, command=command)


def _deepim(config: TrainConfig, args, command: str):
    return run_deepim(config, out=args.out, resume=args.resume, command=command)


def _dsc_posenet(config: TrainConfig, args, command: str):
    return run_dsc_posenet(config, out=args.out, resume=args.resume, command=command)


# stage name -> runner(config, args, command); later issues add their stages here
STAGES = {"segmentation": _segmentation, "deepim": _deepim, "dsc_posenet": _dsc_posenet}


def parse_config(path, overrides=()) -> TrainConfig:
    raw = apply_overrides(load_yaml(path), list(overrides))
    return from_dict(TrainConfig, raw, "config")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="dsc_pose training entry point")
    p.add_argument("--config", required=True, help="training YAML (see config/train/)")
    p.add_argument("--out", help="output folder (overrides out:)")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (value parsed as YAML)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        config = parse_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"train.py: config error: {exc}", file=sys.stderr)
        return 2
    command = "python training/train.py " + " ".join(shlex.quote(a) for a in argv)
    save_resolved_config(config, args.out or config.out, command)
    STAGES[config.stage](config, args, command)
    return 0


def save_resolved_config(config: TrainConfig, out: str, command: str) -> Path:
    """Print the fully resolved configuration (bases, defaults and overrides applied) and keep it as
    ``OUT/config.resolved.yaml``, so every run records exactly what it ran."""
    import yaml

    from ..data.bop_io import atomic_write_text
    from .config import to_dict
    from .segmentation import resolve_path

    text = f"# {command}\n" + yaml.safe_dump(to_dict(config), sort_keys=False)
    print(text, flush=True)
    path = resolve_path(out) / "config.resolved.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
