"""DeepIM's zoom-in (deepim sec. 3.1 and appendix A, eq. 6).

The window is centred on (x_c, y_c), the projection of the object origin under the current pose
estimate, has the aspect ratio r = W / H of the input image and half-extents

    x_dist = max over {l_obs, r_obs, l_rend, r_rend} of |. - x_c|,  y_dist likewise with u, d,
    width  = max(x_dist, y_dist r) 2 lambda,  height = max(x_dist / r, y_dist) 2 lambda   (eq. 6)

with lambda = 1.4. The maximum over the four boundaries of two boxes equals the maximum over the
boundaries of their union, so the window is ``geometry.camera.zoom_in_box`` applied to the union
box (that function implements eq. 6 for one box). Mask boundaries are taken at the pixel *edges*
(a mask covering columns l..r spans [l - 0.5, r + 0.5] in the continuous convention of
``geometry.camera``). The window is then resampled to a fixed ``width x height`` (480 x 640 in the
paper; smaller on a CPU) with the same affine map for the observed image (``cv2.warpAffine``,
bilinear) and the renderer (cropped intrinsics K' = A K: renders are made at the crop resolution,
never resampled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.camera import crop_affine, warp_affine, zoom_in_box


@dataclass
class ZoomConfig:
    width: int = 128  # crop size fed to the network (paper: 640 x 480)
    height: int = 96
    expand: float = 1.4  # lambda of eq. (6)
    # > 0: the zoom-in renders (inputs and flow targets; the observed scene keeps the full meshes) use the
    # meshes quadric-decimated to this many faces, recorded in checkpoints so that the refiner renders alike (a crop of ~100 px
    # does not resolve 45k faces, and llvmpipe's cost grows with them: BENCHMARKS, DeepIM CPU speed)
    render_faces: int = 0

    def validate(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError("zoom: crop size must be positive")
        if not self.expand > 0:
            raise ValueError("zoom: expand ratio must be positive")
        if self.render_faces < 0:
            raise ValueError("zoom: render_faces must be >= 0 (0 = the full meshes)")


def union_box(*boxes) -> np.ndarray:
    boxes = [np.asarray(b, dtype=np.float64) for b in boxes if b is not None]
    if not boxes:
        raise ValueError("no box to take the union of")
    stacked = np.stack(boxes)
    return np.concatenate([stacked[:, :2].min(0), stacked[:, 2:].max(0)])


def zoom_window(center_xy, boxes, image_width: int, image_height: int, expand: float = 1.4) -> np.ndarray:
    """eq. (6): the zoom-in window (x1, y1, x2, y2) centred on ``center_xy`` enclosing every box in
    ``boxes`` (observed and rendered mask boxes; None entries are skipped), with the image's aspect ratio."""
    union = union_box(*boxes)
    center = torch.as_tensor(np.asarray(center_xy, dtype=np.float64))
    window = zoom_in_box(center, torch.as_tensor(union), aspect=image_width / image_height, padding=expand)
    window = window.numpy()
    # a degenerate box (a one-point silhouette exactly at the centre) still gets a window of >= 2 px
    if window[2] - window[0] < 2.0:
        half_w = 1.0
        half_h = half_w * image_height / image_width
        window = np.array([center_xy[0] - half_w, center_xy[1] - half_h, center_xy[0] + half_w,
                           center_xy[1] + half_h])
    return window


def window_affine(window, out_width: int, out_height: int) -> np.ndarray:
    """The 3x3 pixel map of the window into an out_height x out_width crop (``geometry.crop_affine``)."""
    return crop_affine(torch.as_tensor(np.asarray(window, dtype=np.float64)), out_width, out_height).numpy()


def crop_image(image: np.ndarray, window, out_width: int, out_height: int, nearest: bool = False,
               border_value=0) -> np.ndarray:
    """Resample ``image`` inside ``window`` to out_height x out_width with the same map as the crop K."""
    return warp_affine(image, window_affine(window, out_width, out_height), out_width, out_height, nearest,
                       border_value)


def box_in_crop(box, window, out_width: int, out_height: int) -> np.ndarray:
    """A full-image box (pixel edges) mapped into the crop's pixel-edge coordinates."""
    affine = window_affine(window, out_width, out_height)
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    return np.array([affine[0, 0] * x1 + affine[0, 2], affine[1, 1] * y1 + affine[1, 2],
                     affine[0, 0] * x2 + affine[0, 2], affine[1, 1] * y2 + affine[1, 2]])


def project_origin(t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(x_c, y_c): the projection of the object origin (eq. 6)."""
    uvw = K @ np.asarray(t, dtype=np.float64)
    return uvw[:2] / uvw[2]
