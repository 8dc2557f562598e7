"""DeepIM's untangled relative pose (deepim sec. 3.3, eq. 1-3).

The rotation R_delta turns the object about its own centre, with axes parallel to the camera's, so
a rotation never moves the object in the image; the translation (vx, vy, vz) is the image-plane
shift of the projected centre (pixels when fx, fy are the focal lengths; DeepIM trains with
fx = fy = 1) and the log scale change vz = log(z_src / z_tgt).
"""

from __future__ import annotations

import torch


def relative_untangled(rot_src: torch.Tensor, trans_src: torch.Tensor, rot_tgt: torch.Tensor,
                       trans_tgt: torch.Tensor, fx: float | torch.Tensor = 1.0, fy: float | torch.Tensor = 1.0):
    """(src, tgt) poses [...,3,3], [...,3] -> (R_delta [...,3,3], v [...,3]) with eq. (1) for R and eq. (3) for v."""
    rot_delta = rot_tgt @ rot_src.transpose(-1, -2)
    x_src, y_src, z_src = trans_src.unbind(-1)
    x_tgt, y_tgt, z_tgt = trans_tgt.unbind(-1)
    v = torch.stack([
        fx * (x_tgt / z_tgt - x_src / z_src),
        fy * (y_tgt / z_tgt - y_src / z_src),
        torch.log(z_src / z_tgt),
    ], dim=-1)
    return rot_delta, v


def apply_untangled(rot_src: torch.Tensor, trans_src: torch.Tensor, rot_delta: torch.Tensor, v: torch.Tensor,
                    fx: float | torch.Tensor = 1.0, fy: float | torch.Tensor = 1.0):
    """Inverse of :func:`relative_untangled`: the target pose from the source pose and (R_delta, v)."""
    x_src, y_src, z_src = trans_src.unbind(-1)
    vx, vy, vz = v.unbind(-1)
    z_tgt = z_src * torch.exp(-vz)
    trans_tgt = torch.stack([
        (vx / fx + x_src / z_src) * z_tgt,
        (vy / fy + y_src / z_src) * z_tgt,
        z_tgt,
    ], dim=-1)
    return rot_delta @ rot_src, trans_tgt
