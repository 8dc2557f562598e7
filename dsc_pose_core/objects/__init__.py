"""Object models: meshes (metres), BOP models_info, symmetries, keypoints, the object registry."""

from .mesh import MeshLoadError, ObjectMesh, load_mesh
from .keypoints import farthest_point_sampling, object_keypoints
from .models_info import ContinuousSymmetry, ModelInfo, load_models_info, parse_models_info
from .registry import ObjectEntry, ObjectRegistry, RegistryError

__all__ = [
    "MeshLoadError",
    "ObjectMesh",
    "load_mesh",
    "ContinuousSymmetry",
    "ModelInfo",
    "load_models_info",
    "parse_models_info",
    "farthest_point_sampling",
    "object_keypoints",
    "ObjectEntry",
    "ObjectRegistry",
    "RegistryError",
]
