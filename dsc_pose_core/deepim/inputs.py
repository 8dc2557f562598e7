"""The 8-channel DeepIM input of one object at one pose estimate (deepim sec. 3.1-3.2).

1. The rendered mask's tight box comes from the mesh vertices projected with the current pose (a
   triangle mesh's silhouette is bounded by its extreme vertices, so this is the box of the rendered
   mask without a full-image render; unlike a render it is not clipped at the image border).
2. The observed box: in training the tight box of the ground-truth visible mask, randomly dilated
   by up to 10 px (sec. 4.1); at test time the rendered mask's box itself (sec. 4.1, Testing: "we
   use the tightest bounding box of the rendered mask m_rend instead"). Networks trained with
   ``deepim.data.observed_box: detection`` get the detector's box instead, in training (the GT
   visible box loosened like the detections) and at test time (``deepim.refiner``).
3. The zoom-in window of eq. (6) over both boxes, centred on the projected object origin.
4. The rendered RGB, mask and depth are rendered at the crop resolution with the cropped K; the
   observed RGB is resampled with the same affine map; the observed-mask channel is the observed
   box drawn filled in the crop ("the observed mask m_obs which shows the tightest bounding box of
   the ground truth segmentation", sec. 4.1).

Images enter the network as RGB / 255 - 0.5, masks as 0 / 1.

``ZoomedInput.focal`` is the zoomed-in camera's focal length in crop widths (K_crop f / crop width):
eq. (3) with these focal lengths expresses the image-plane translation in fractions of the crop the
network sees, which it can read off its input; with f = 1 (the paper's choice for one fixed camera)
the same shift in the crop means a different v for every window size, i.e. for every object
distance and size, which the crop does not show (docs/BENCHMARKS.md, "DeepIM: does the CPU refiner
learn?"). ``translation_units`` names the choice: "zoom" or "normalized" (f = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.camera import crop_intrinsics
from ..data.boxes import projected_box
from ..data.boxes import box_mask
from .zoom import ZoomConfig, box_in_crop, crop_image, project_origin, zoom_window


TRANSLATION_UNITS = ("zoom", "normalized")


@dataclass
class ZoomedInput:
    tensor: np.ndarray  # float32 [8,h,w]
    window: np.ndarray  # (x1, y1, x2, y2) in the full image
    K_crop: np.ndarray  # [3,3]
    depth_rend: np.ndarray  # float32 [h,w] metres
    mask_rend: np.ndarray  # bool [h,w]
    focal: np.ndarray  # (f_x, f_y) of the zoomed-in camera in crop widths, eq. (3)'s focal lengths

    def eq3_focal(self, translation_units: str) -> np.ndarray:
        """eq. (3)'s (f_x, f_y) for a network trained with ``translation_units``."""
        return self.focal if translation_units == "zoom" else np.ones(2)


def build_input(renderer, obj_id: int, vertices: np.ndarray, image: np.ndarray, K: np.ndarray, R: np.ndarray,
                t: np.ndarray, zoom: ZoomConfig, obs_box=None, light=None) -> ZoomedInput:
    """The zoomed-in input for ``obj_id`` at pose (R, t) in ``image`` (uint8 [H,W,3]).

    ``obs_box`` (pixel-edge x1, y1, x2, y2) is the observed mask's box; None at test time (the
    rendered mask's box is used, sec. 4.1)."""
    H, W = image.shape[:2]
    K = np.asarray(K, dtype=np.float64)
    rend_box = projected_box(vertices, R, t, K)
    center = project_origin(t, K)
    if rend_box is None:  # part of the model behind the camera: a window around the observed box
        rend_box = obs_box if obs_box is not None else np.array([center[0] - 1, center[1] - 1,
                                                                 center[0] + 1, center[1] + 1])
    obs_box = rend_box if obs_box is None else np.asarray(obs_box, dtype=np.float64)
    window = zoom_window(center, [obs_box, rend_box], W, H, zoom.expand)
    w, h = zoom.width, zoom.height
    K_crop = crop_intrinsics(torch.as_tensor(K), torch.as_tensor(window), w, h).numpy()
    render = renderer.render(K_crop, [(int(obj_id), R, t)], width=w, height=h, light=light)
    obs = crop_image(image, window, w, h)
    obs_mask = box_mask(box_in_crop(obs_box, window, w, h), w, h).astype(np.float32)
    mask_rend = render.instance > 0
    tensor = np.concatenate([
        obs.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5,
        render.rgb.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5,
        obs_mask[None],
        mask_rend.astype(np.float32)[None],
    ], axis=0)
    focal = np.array([K_crop[0, 0], K_crop[1, 1]]) / float(w)
    return ZoomedInput(np.ascontiguousarray(tensor), window, K_crop, render.depth.astype(np.float32), mask_rend, focal)
