"""Is a detection plausible for its object? One sentence when not (the pipeline's ``PoseResult.reason``).

A detector can send boxes no object could make: a box of 0.001 px (the box initialiser then puts the
object 79 km away), or one so large that the object would sit closer to the camera than the lens, or
a NaN score. A box is compared with the object's diameter ``d`` and the focal length ``f`` (mean of
fx, fy): an object at distance ``z`` projects to about ``f d / z`` pixels across, and its box's
diagonal lies between that (a thin object seen end-on, or an occluded one: smaller) and
``sqrt(2) f d / z`` (a sphere's square box). So the box says

* the object is no nearer than ``z_near = f d / diag`` when the detector saw all of it (occlusion and
  truncation only shrink the box, so this is a lower bound on how far the box puts it): a
  ``z_near`` beyond ``max_distance_m`` means the box is too small for the object at any plausible
  distance (checked on the box clipped to the image, the part that is seen);
* the object is no farther than ``z_far = sqrt(2) f d / diag``: a ``z_far`` below ``min_distance_m``
  means the box is too large for the object at any plausible distance (checked on the box as given:
  a detector may report the full extent of a truncated object).

No ROS or torch imports. The limits are :class:`BoxLimits` (the pipeline's
``PipelineConfig.box_limits``; ``DEFAULT_BOX_LIMITS`` otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BoxLimits:
    min_box_px: float = 2.0  # a seen box narrower or lower than this carries no pose
    min_distance_m: float = 0.05  # nearest plausible object centre (camera near limit)
    max_distance_m: float = 20.0  # farthest plausible object centre


DEFAULT_BOX_LIMITS = BoxLimits()


def implausible_detection(given_xywh, clipped_xywh, K, diameter: float, score: float,
                          limits: BoxLimits = DEFAULT_BOX_LIMITS) -> str | None:
    """The reason a detection cannot be an observation of an object of ``diameter`` metres under the
    camera ``K``, or None. ``given_xywh``: the box as the detector sent it (finite, positive size);
    ``clipped_xywh``: the same box clipped to the image; ``score``: the detection's score."""
    if not math.isfinite(score):
        return f"detection score is not finite ({score})"
    _, _, w, h = (float(v) for v in clipped_xywh)
    if min(w, h) < limits.min_box_px:
        return (f"box of {w:.3g} x {h:.3g} px (in the image) is smaller than {limits.min_box_px:g} px: "
                "too small to give a pose")
    K = np.asarray(K, dtype=np.float64)
    f = 0.5 * (K[0, 0] + K[1, 1])
    d = float(diameter)
    if not (math.isfinite(d) and d > 0):
        return None  # no size to compare with (the registry checks diameters)
    z_near = f * d / math.hypot(w, h)
    if z_near > limits.max_distance_m:
        return (f"box of {w:.3g} x {h:.3g} px is too small for an object of diameter {d:.3g} m: it would be "
                f"at least {z_near:.3g} m away (limit {limits.max_distance_m:g} m)")
    gw, gh = float(given_xywh[2]), float(given_xywh[3])
    z_far = math.sqrt(2.0) * f * d / math.hypot(gw, gh)
    if z_far < limits.min_distance_m:
        return (f"box of {gw:.3g} x {gh:.3g} px is too large for an object of diameter {d:.3g} m: it would be "
                f"at most {z_far:.3g} m from the camera (limit {limits.min_distance_m:g} m)")
    return None
