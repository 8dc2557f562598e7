"""Fixtures for the pipeline tests: a tiny synthetic BOP dataset (2 images, 160 x 120, two
primitive objects) and an object registry pointing at its models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from synth_testlib import make_models_dir  # noqa: E402

W, H = 160, 120


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bop(tmp_path_factory) -> Path:
    """A BOP dataset: test/000000/{rgb, scene_gt*.json, scene_camera.json}, models/, splits.json."""
    from dsc_pose_core.data.synthetic import (LMO_K, DistractorConfig, PoseSamplingConfig, SynthConfig,
                                              generate_dataset, scale_intrinsics)

    base = tmp_path_factory.mktemp("pipeline")
    models = make_models_dir(base / "src_models")
    K = scale_intrinsics(np.asarray(LMO_K).reshape(3, 3), (640, 480), (W, H))
    out = base / "ds"
    generate_dataset(SynthConfig(models_dir=str(models), obj_ids=(1, 2), out_dir=str(out), n_images=2, seed=3,
                                 width=W, height=H, K=tuple(K.reshape(9)), objects_per_image=2,
                                 pose=PoseSamplingConfig(distance=(0.3, 0.5)), distractors=DistractorConfig(0, 0),
                                 split="test", scene_id=0, progress=False))
    (out / "splits.json").write_text(json.dumps({"val": [0, 1], "first": [0]}))
    return out


@pytest.fixture(scope="session")
def registry_yaml(tiny_bop) -> Path:
    path = tiny_bop / "objects.yaml"
    path.write_text("models_dir: models\nmesh_unit_scale: 0.001\nobjects:\n"
                    "  - {id: 1, name: ell, mesh: obj_000001.ply}\n"
                    "  - {id: 2, name: mug, mesh: obj_000002.ply}\n")
    return path


@pytest.fixture(scope="session")
def registry(registry_yaml):
    from dsc_pose_core.objects.registry import ObjectRegistry

    return ObjectRegistry.from_yaml(registry_yaml)
