"""Fixtures for the pipeline tests: a tiny synthetic BOP dataset (2 images, 160 x 120, two
primitive objects) and an object registry pointing at its models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

W, H = 160, 120


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _write_models(root: Path) -> Path:
    """obj 1: an L of two boxes, obj 2: a cylinder with a handle (millimetres, vertex colours)."""
    root.mkdir(parents=True, exist_ok=True)
    a = trimesh.creation.box(extents=(80, 40, 30))
    b = trimesh.creation.box(extents=(30, 40, 60))
    b.apply_translation((25, 0, 40))
    c = trimesh.creation.cylinder(radius=25, height=70, sections=16)
    d = trimesh.creation.box(extents=(40, 15, 15))
    d.apply_translation((40, 0, 10))
    info = {}
    for obj_id, mesh in {1: trimesh.util.concatenate([a, b]), 2: trimesh.util.concatenate([c, d])}.items():
        mesh.apply_translation(-mesh.bounds.mean(axis=0))
        v = mesh.vertices
        rgb = ((v - v.min(0)) / np.ptp(v, axis=0) * 200 + 40).astype(np.uint8)
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.c_[rgb, np.full(len(v), 255, np.uint8)])
        mesh.export(root / f"obj_{obj_id:06d}.ply")
        lo, hi = mesh.bounds
        diffs = v[:, None] - v[None]
        info[str(obj_id)] = {"diameter": float(np.sqrt((diffs ** 2).sum(-1)).max()),
                             "min_x": lo[0], "min_y": lo[1], "min_z": lo[2],
                             "size_x": hi[0] - lo[0], "size_y": hi[1] - lo[1], "size_z": hi[2] - lo[2]}
    (root / "models_info.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="session")
def tiny_bop(tmp_path_factory) -> Path:
    """A BOP dataset: test/000000/{rgb, scene_gt*.json, scene_camera.json}, models/, splits.json."""
    from dsc_pose_core.data.synthetic import (LMO_K, DistractorConfig, PoseSamplingConfig, SynthConfig,
                                              generate_dataset, scale_intrinsics)

    base = tmp_path_factory.mktemp("pipeline")
    models = _write_models(base / "src_models")
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
