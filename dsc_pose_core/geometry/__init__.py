"""Geometry: rotations, SE(3), pinhole cameras, crops with exact inverses, PnP."""

from .camera import (backproject, crop_affine, crop_intrinsics, project_points, project_posed, square_box_around,
                     uncrop_pixels, warp_affine, zoom_in_box)
from .pnp import PnPResult, differentiable_pnp, solve_pnp
from .rotations import (axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion,
                        matrix_to_rotation_6d, nearest_rotation, quaternion_to_matrix, rotation_6d_to_matrix,
                        rotation_angle_between)
from .se3 import compose, from_matrix, invert, to_matrix, transform_points

__all__ = [
    "backproject", "crop_affine", "crop_intrinsics", "project_points", "project_posed", "square_box_around",
    "uncrop_pixels", "warp_affine", "zoom_in_box", "PnPResult", "differentiable_pnp", "solve_pnp",
    "axis_angle_to_matrix", "matrix_to_axis_angle", "matrix_to_quaternion", "matrix_to_rotation_6d",
    "nearest_rotation", "quaternion_to_matrix", "rotation_6d_to_matrix", "rotation_angle_between", "compose", "from_matrix",
    "invert", "to_matrix", "transform_points",
]
