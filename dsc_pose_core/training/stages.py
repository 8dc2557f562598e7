"""The trainers by stage name and the single-stage training config.

Every trainer has one shape: ``run_<stage>(config: TrainConfig, out=None, resume=None, command="") -> dict``
(results, also written to ``OUT/results.json``). ``training/cli.py`` (``training/train.py``) and the
stage chain (``training/chain.py``) both call them through ``STAGES``; a new trainer is a config
dataclass, a ``run_*`` function and an entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..typed_config import ConfigError
from .deepim import DeepImConfig, run_deepim
from .dsc_posenet import DscPoseNetConfig, run_dsc_posenet
from .segmentation import SegmentationConfig, run_segmentation
from .self6d import Self6dConfig, run_self6d


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
    self6d: Self6dConfig | None = None  # stage "self6d" (self6d sec. 3)

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage: {self.stage!r} is not one of {sorted(STAGES)}")
        if getattr(self, self.stage, None) is None:
            raise ConfigError(f"stage {self.stage!r} needs a {self.stage!r} section")


# stage name -> run_<stage>(config, out=None, resume=None, command="")
STAGES = {"segmentation": run_segmentation, "deepim": run_deepim, "dsc_posenet": run_dsc_posenet,
          "self6d": run_self6d}
