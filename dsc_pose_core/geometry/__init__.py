"""Geometry: rotations, SE(3), pinhole cameras, crops with exact inverses, PnP.

The names below load their module on first use (PEP 562), so that ``geometry.camera``'s numpy half
(projection, image resampling) serves the torch-free evaluator without importing torch.
"""

import importlib

_MODULES = {
    "camera": ("backproject", "crop_affine", "crop_intrinsics", "project_points", "project_posed",
               "square_box_around", "uncrop_pixels", "warp_affine", "zoom_in_box"),
    "pnp": ("PnPResult", "differentiable_pnp", "solve_pnp"),
    "rotations": ("axis_angle_to_matrix", "matrix_to_axis_angle", "matrix_to_quaternion", "matrix_to_rotation_6d",
                  "nearest_rotation", "quaternion_to_matrix", "rotation_6d_to_matrix", "rotation_angle_between"),
    "se3": ("compose", "from_matrix", "invert", "to_matrix", "transform_points"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
