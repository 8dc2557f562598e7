"""Implausible detections (issue 31): a box no object of the registry could make, or a NaN score, is
a PoseResult with a reason, never a pose 79 km away; plausible boxes are untouched."""

from __future__ import annotations

import numpy as np

from dsc_pose_core.box_checks import BoxLimits, implausible_detection
from dsc_pose_core.pipeline import Detection, PipelineConfig, PoseEstimator

from test_pipeline import frame

K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])


def test_implausible_detection_rules():
    d = 0.1  # m
    ok = implausible_detection((100, 100, 60, 60), (100, 100, 60, 60), K, d, 0.9)
    assert ok is None  # about 1 m away
    assert "smaller than 2 px" in implausible_detection((1, 1, 0.001, 0.001), (1, 1, 0.001, 0.001), K, d, 0.9)
    # 3 px for a 10 cm object: at least 13 m away; beyond a 10 m limit
    assert "too small" in implausible_detection((1, 1, 3, 3), (1, 1, 3, 3), K, d, 0.9, BoxLimits(max_distance_m=10))
    assert implausible_detection((1, 1, 3, 3), (1, 1, 3, 3), K, d, 0.9) is None  # 20 m is the default limit
    # a box 1e6 px wide: the object would be closer than a millimetre; judged on the box as given
    huge = implausible_detection((-5e5, -5e5, 1e6, 1e6), (0, 0, 640, 480), K, d, 0.9)
    assert "too large" in huge and "limit 0.05 m" in huge
    # the full image for a 10 cm object: about 10 cm away, plausible
    assert implausible_detection((0, 0, 640, 480), (0, 0, 640, 480), K, d, 0.9) is None
    assert "not finite" in implausible_detection((100, 100, 60, 60), (100, 100, 60, 60), K, d, float("nan"))


def test_pipeline_skips_implausible_detections_with_a_reason(tiny_bop, registry):
    image, K_tiny, dets, _ = frame(tiny_bop)
    good = dets[0]
    bad = [Detection(good.obj_id, [20, 20, 0.001, 0.001]), Detection(good.obj_id, [-1e6, -1e6, 2e6, 2e6]),
           Detection(good.obj_id, good.box_xywh, float("nan"))]
    with PoseEstimator(registry, PipelineConfig(init="box", refine_iterations=0)) as est:
        results = est.estimate(image, K_tiny, [good, *bad])
    assert [r.ok for r in results] == [True, False, False, False]
    assert "too small to give a pose" in results[1].reason and results[1].t is None
    assert "too large" in results[2].reason
    assert "score is not finite" in results[3].reason
