"""Colour-model refinement of a network's mask inside its 2D box (OpenCV's GrabCut).

Most wrong pixels of the weakly-supervised network lie within a few pixels of the object outline
(docs/BENCHMARKS.md, "what limits val IoU"): the network's decision there is blurred, while the
image itself still has the edge. GrabCut (Rother et al., SIGGRAPH 2004) fits a colour model to the
object and to its surroundings and cuts along image edges; seeded with the network's confident
pixels it only has to decide the uncertain band. This is the box-supervised refinement of "Simple
Does It" (Khoreva et al., CVPR 2017) seeded by the network instead of the bare box; it is not part
of dsc-posenet sec. 3.1, where the uncertain band is simply ignored (eq. 1-2).
"""

from __future__ import annotations

import cv2
import numpy as np

# pixels of context around the box given to the colour models (the surroundings are background)
DEFAULT_MARGIN = 12


def grabcut_refine(image_rgb: np.ndarray, probability: np.ndarray, box_xywh, background_below: float,
                   foreground_above: float, iterations: int = 3, margin: int = DEFAULT_MARGIN) -> np.ndarray:
    """Boolean HxW mask of the object in ``box_xywh`` (everything outside the box is background).

    ``probability`` [H,W] is the network's foreground probability. Seeds: P < ``background_below`` and
    everything outside the box are certain background, P >= ``foreground_above`` certain foreground;
    GrabCut labels the rest, starting from P >= 0.5. Without any pixel at P >= 0.5 the mask is empty
    (nothing to build a foreground colour model from)."""
    if not 0.0 <= background_below <= 0.5 <= foreground_above <= 1.0:
        raise ValueError("need 0 <= background_below <= 0.5 <= foreground_above <= 1")
    height, width = probability.shape
    if image_rgb.shape[:2] != (height, width):
        raise ValueError(f"image {image_rgb.shape[:2]} and probability {probability.shape} differ in size")
    x, y, w, h = (int(v) for v in box_xywh)
    bx0, by0, bx1, by1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    result = np.zeros((height, width), dtype=bool)
    if bx1 <= bx0 or by1 <= by0:
        return result
    x0, y0 = max(0, bx0 - margin), max(0, by0 - margin)
    x1, y1 = min(width, bx1 + margin), min(height, by1 + margin)
    prob = probability[y0:y1, x0:x1]
    seeds = np.full(prob.shape, cv2.GC_PR_BGD, dtype=np.uint8)
    seeds[prob >= 0.5] = cv2.GC_PR_FGD
    seeds[prob >= foreground_above] = cv2.GC_FGD
    seeds[prob < background_below] = cv2.GC_BGD
    inside = np.zeros(prob.shape, dtype=bool)
    inside[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] = True
    seeds[~inside] = cv2.GC_BGD
    foreground_seeds = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if not foreground_seeds.any():
        return result
    if (seeds == cv2.GC_BGD).any() or (seeds == cv2.GC_PR_BGD).any():
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        bgr = np.ascontiguousarray(image_rgb[y0:y1, x0:x1, ::-1])
        try:
            cv2.grabCut(bgr, seeds, None, background_model, foreground_model, int(iterations), cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            # a colour model without enough distinct pixels (tiny or flat crops): keep the network's mask
            pass
    result[y0:y1, x0:x1] = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)) & inside
    return result
