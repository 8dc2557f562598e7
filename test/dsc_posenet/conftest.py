"""Fixtures: a tiny synthetic BOP dataset (96x128, one trimesh primitive object) used both as the
synthetic set and, through a BOP "test" scene plus a pseudo-label folder, as the real set."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from synth_testlib import make_models_dir  # noqa: E402
from dsc_testlib import renders_as_real_scene  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dsc_data(tmp_path_factory):
    from dsc_pose_core.data.synthetic import LMO_K, PoseSamplingConfig, SynthConfig, generate_dataset, scale_intrinsics

    root = tmp_path_factory.mktemp("dsc_tiny")
    models = make_models_dir(root / "models")
    K = scale_intrinsics(np.array(LMO_K).reshape(3, 3), (640, 480), (128, 96))
    cfg = SynthConfig(models_dir=str(models), obj_ids=(1,), out_dir=str(root / "synth"), n_images=6, width=128,
                      height=96, K=tuple(K.ravel()), pose=PoseSamplingConfig(distance=(0.22, 0.3), image_margin=0.3),
                      progress=False, seed=3)
    generate_dataset(cfg)
    renders_as_real_scene(root)
    return {"root": root, "models": models, "synth": root / "synth", "real": root / "real",
            "pseudo": root / "pseudo", "K": K}

