"""Helpers for the synthetic-data and picture tests: a tiny BOP models folder of coloured primitives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh


def _coloured(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    v = mesh.vertices
    rgb = (v - v.min(0)) / np.ptp(v, axis=0).clip(1e-9)
    colors = np.concatenate([(rgb * 200 + 40).astype(np.uint8), np.full((len(v), 1), 255, np.uint8)], axis=1)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    return mesh


def make_models_dir(root: Path) -> Path:
    """obj 1: an L-shaped pair of boxes, obj 2: a cylinder with a box handle (millimetres)."""
    root.mkdir(parents=True, exist_ok=True)
    a = trimesh.creation.box(extents=(80, 40, 30))
    b = trimesh.creation.box(extents=(30, 40, 60))
    b.apply_translation((25, 0, 40))
    c = trimesh.creation.cylinder(radius=25, height=70, sections=24)
    d = trimesh.creation.box(extents=(40, 15, 15))
    d.apply_translation((40, 0, 10))
    shapes = {1: trimesh.util.concatenate([a, b]), 2: trimesh.util.concatenate([c, d])}
    info = {}
    for obj_id, mesh in shapes.items():
        mesh.apply_translation(-mesh.bounds.mean(axis=0))
        _coloured(mesh).export(root / f"obj_{obj_id:06d}.ply")
        lo, hi = mesh.bounds
        diffs = mesh.vertices[:, None] - mesh.vertices[None]
        info[str(obj_id)] = {"diameter": float(np.sqrt((diffs ** 2).sum(-1)).max()),
                             "min_x": lo[0], "min_y": lo[1], "min_z": lo[2],
                             "size_x": hi[0] - lo[0], "size_y": hi[1] - lo[1], "size_z": hi[2] - lo[2]}
    (root / "models_info.json").write_text(json.dumps(info, indent=2))
    return root
