"""Pictures of poses: projected 3D boxes, model contours and masks over images (``dsc-pose-viz``)."""

from .overlay import (
    EST_COLOR,
    GT_COLOR,
    blend_mask,
    box_edges,
    draw_box3d,
    draw_contour,
    draw_legend,
    draw_poses,
)

__all__ = ["GT_COLOR", "EST_COLOR", "box_edges", "draw_box3d", "draw_contour", "blend_mask",
           "draw_legend", "draw_poses"]
