import numpy as np
import pytest
import torch
import trimesh

from dsc_pose_core.data.synthetic import LMO_K, scale_intrinsics
from dsc_pose_core.objects.mesh import ObjectMesh


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def colored_box_mesh(extents=(0.08, 0.05, 0.03), subdivide: int = 2) -> ObjectMesh:
    """A box with vertex colours from the position (no visual symmetry), in metres."""
    tm = trimesh.creation.box(extents=extents)
    for _ in range(subdivide):
        tm = tm.subdivide()
    v = np.asarray(tm.vertices, dtype=np.float64)
    colors = ((v - v.min(0)) / np.ptp(v, axis=0)).astype(np.float32)
    return ObjectMesh(v, np.asarray(tm.faces), colors, np.asarray(tm.vertex_normals, dtype=np.float64), "box")


@pytest.fixture(scope="session")
def box_mesh() -> ObjectMesh:
    return colored_box_mesh()


@pytest.fixture(scope="session")
def small_K() -> np.ndarray:
    """LM-O intrinsics scaled to 160 x 120."""
    return scale_intrinsics(np.asarray(LMO_K).reshape(3, 3), (640, 480), (160, 120))


@pytest.fixture(scope="session")
def renderer(box_mesh):
    from dsc_pose_core.render import FastRenderer

    with FastRenderer(160, 120) as r:
        r.add_object(1, box_mesh)
        yield r
