"""The embedded demo object: a vertex-coloured bracket (two boxes and a cylinder, ~12 cm across)
that the package generates itself, so a fresh clone can run the pipeline without any dataset.
Written as a BOP models folder (``obj_000001.ply`` in millimetres + ``models_info.json``) and an
object registry YAML, like any other object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DEMO_OBJ_ID = 1
DEMO_NAME = "demo_bracket"


def demo_mesh():
    """The demo mesh (trimesh, millimetres, centred on its bounding box, coloured by position)."""
    import trimesh

    base = trimesh.creation.box(extents=(120.0, 50.0, 20.0))
    upright = trimesh.creation.box(extents=(20.0, 50.0, 70.0))
    upright.apply_translation((50.0, 0.0, 45.0))
    knob = trimesh.creation.cylinder(radius=14.0, height=40.0, sections=32)
    knob.apply_translation((-35.0, 0.0, 30.0))
    mesh = trimesh.util.concatenate([base, upright, knob])
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    # small faces, so the per-vertex colours below vary smoothly over every side
    vertices, faces = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=8.0)
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    # asymmetric colours: the pose is recognisable from the texture as well as the shape
    rel = (mesh.vertices - mesh.vertices.min(0)) / np.ptp(mesh.vertices, axis=0)
    rgb = np.stack([60 + 190 * rel[:, 0], 40 + 150 * rel[:, 2], 200 - 140 * rel[:, 1]], axis=1)
    colors = np.concatenate([rgb.astype(np.uint8), np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    return mesh


def write_demo_models(models_dir: str | Path) -> Path:
    """``models_dir/obj_000001.ply`` + ``models_info.json`` (BOP fields, millimetres)."""
    from scipy.spatial.distance import pdist

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    mesh = demo_mesh()
    mesh.export(models_dir / f"obj_{DEMO_OBJ_ID:06d}.ply")
    lo, hi = mesh.bounds
    info = {str(DEMO_OBJ_ID): {"diameter": float(pdist(np.asarray(mesh.convex_hull.vertices)).max()),
                               "min_x": float(lo[0]), "min_y": float(lo[1]), "min_z": float(lo[2]),
                               "size_x": float(hi[0] - lo[0]), "size_y": float(hi[1] - lo[1]),
                               "size_z": float(hi[2] - lo[2])}}
    (models_dir / "models_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return models_dir


def write_demo_registry(path: str | Path, models_dir: str | Path) -> Path:
    """An object registry YAML serving only the demo object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# the embedded demo object (dsc_pose_core/objects/demo_object.py)\n"
                    f"models_dir: {Path(models_dir).resolve()}\nmesh_unit_scale: 0.001\nobjects:\n"
                    f"  - {{id: {DEMO_OBJ_ID}, name: {DEMO_NAME}, mesh: obj_{DEMO_OBJ_ID:06d}.ply}}\n")
    return path
