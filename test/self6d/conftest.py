import pytest
import torch

from dsc_pose_core.objects.demo_object import DEMO_OBJ_ID, write_demo_models
from dsc_pose_core.objects.mesh import load_mesh



@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    return write_demo_models(tmp_path_factory.mktemp("demo_models"))


@pytest.fixture(scope="session")
def demo_mesh(demo_models):
    return load_mesh(demo_models / f"obj_{DEMO_OBJ_ID:06d}.ply", 0.001)


@pytest.fixture(scope="session")
def renderer(demo_mesh):
    from dsc_pose_core.render.differentiable import DifferentiableRenderer

    r = DifferentiableRenderer(faces_per_pixel=30, sigma_px=0.5)
    r.add_object(0, demo_mesh, target_faces=800)
    return r
