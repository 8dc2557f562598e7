"""Bad inputs of issue 31 checked without a running node: each gives one sentence (docs/FAULTS.md)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from dsc_pose_ros.conversions import (EstimateOut, best_per_object, detections_to_boxes, frame_mismatch,
                                      large_image_note, limit_detections)
from dsc_pose_ros.frame_sync import RESET_NS, FrameSynchronizer
from dsc_pose_ros.params import ParameterError, validate
from dsc_pose_ros.ros_env import FASTDDS_DEFAULT_SHM_SEGMENT, shm_segment_bytes
from ros_helpers import require_ros


def _det(cls, cx, cy, w, h, scores=(0.5,), det_id="d"):
    results = [NS(hypothesis=NS(class_id=cls, score=s)) for s in scores]
    return NS(results=results, bbox=NS(center=NS(position=NS(x=cx, y=cy)), size_x=w, size_y=h), id=det_id)


def test_non_finite_hypothesis_scores_are_rejected_not_read_as_zero():
    resolve = {"5": 5}.get
    msg = NS(detections=[_det("5", 100, 100, 40, 20, scores=(np.nan,)), _det("5", 100, 100, 40, 20, (0.2, np.inf)),
                         _det("5", 100, 100, 40, 20, (0.3, 0.7))])
    usable, warnings = detections_to_boxes(msg, resolve, 640, 480)
    assert len(usable) == 1 and usable[0].score == pytest.approx(0.7)
    assert len(warnings) == 2 and all("score is not finite" in w for w in warnings)


def test_negative_and_inverted_boxes_are_empty_boxes():
    usable, warnings = detections_to_boxes(NS(detections=[_det("5", 100, 100, -40, 20), _det("5", 100, 100, 40, -1)]),
                                           {"5": 5}.get, 640, 480)
    assert usable == [] and len(warnings) == 2 and all("empty or non-finite box" in w for w in warnings)


def test_max_detections_keeps_the_highest_scores_in_the_detectors_order():
    msg = NS(detections=[_det("5", 100 + i, 100, 40, 20, scores=(s,), det_id=f"d{i}")
                         for i, s in enumerate([0.1, 0.9, 0.5, 0.9, 0.3])])
    parsed, _ = detections_to_boxes(msg, {"5": 5}.get, 640, 480)
    kept, note = limit_detections(parsed, 3)
    assert [d.detection_id for d in kept] == ["d1", "d2", "d3"]
    assert "5 detections" in note and "3 with the highest scores" in note and "2 left out" in note
    assert limit_detections(parsed, 0) == (parsed, None) and limit_detections(parsed, 5) == (parsed, None)
    assert validate({"max_detections": 0})["max_detections"] == 0
    with pytest.raises(ParameterError, match="max_detections"):
        validate({"max_detections": -1})


def test_repeated_objects_keep_every_detection_and_one_tf_frame_each():
    def est(obj, name, score, det_id):
        return EstimateOut(obj, name, np.eye(3), np.zeros(3), score, (0.1, 0.1, 0.1), det_id)

    estimates = [est(5, "can", 0.4, "a"), est(9, "duck", 0.8, "b"), est(5, "can", 0.6, "c")]
    keyed, note = best_per_object(estimates)
    assert [e.detection_id for e in keyed] == ["b", "c"]
    assert "{'can': 2}" in note
    assert best_per_object(estimates[:2]) == (estimates[:2], None)


def test_detections_for_another_camera_frame():
    assert "'left_camera'" in frame_mismatch("right_camera", "left_camera")
    assert frame_mismatch("cam", "cam") is None and frame_mismatch("cam", "") is None


def test_large_images_are_announced_once_against_the_shared_memory_segment(repo_root):
    segment = shm_segment_bytes({"FASTDDS_DEFAULT_PROFILES_FILE": str(repo_root / "config" / "fastdds.xml")})
    assert segment == 64 * 2**20
    assert large_image_note(4000, 3000, segment, "best_effort") is None  # fits since issue 31
    note = large_image_note(8000, 6000, segment, "best_effort")
    assert "8000x6000" in note and "64 MiB" in note and "qos_reliability:=reliable" in note
    assert "reliable QoS" in large_image_note(8000, 6000, segment, "reliable")
    assert large_image_note(640, 480, FASTDDS_DEFAULT_SHM_SEGMENT, "best_effort") is not None
    assert shm_segment_bytes({}) == FASTDDS_DEFAULT_SHM_SEGMENT
    assert shm_segment_bytes({"FASTDDS_DEFAULT_PROFILES_FILE": "/no/such/profile.xml"}) is None


def test_frame_sync_refuses_future_stamps_and_out_of_order_images():
    sec = 1_000_000_000
    sync = FrameSynchronizer("exact", max_pending=4, max_ahead_ns=10 * sec)
    now = 1000 * sec
    note = sync.add("image", now + 3600 * sec, "far", now_ns=now)
    assert "3.6e+03 s ahead" in note and sync.pending()["image"] == 0 and sync.refused["future"] == 1
    assert sync.add("image", now + 5 * sec, "near future", now_ns=now) is None  # within the limit
    for kind in ("image", "camera_info", "detections"):
        sync.add(kind, now, kind, now_ns=now)
    sync.add("camera_info", now + 5 * sec, "i")
    sync.add("detections", now + 5 * sec, "d")
    assert sync.take().stamp_ns == now + 5 * sec and sync.dropped == 1
    late = sync.add("image", now + 4 * sec, "late", now_ns=now)
    assert "out of order" in late and sync.refused["out_of_order"] == 1 and sync.pending()["image"] == 0
    # the clock jumped back by more than RESET_NS (a bag replayed again): accepted, and answered again
    back = now + 5 * sec - RESET_NS - sec
    for kind in ("image", "camera_info", "detections"):
        assert sync.add(kind, back, kind) is None
    assert sync.take().stamp_ns == back


def test_frame_sync_counts_images_dropped_without_camera_info_or_detections():
    sync = FrameSynchronizer("exact", max_pending=2)
    for stamp in (1, 2, 3, 4):  # no camera_info at all; detections only for 1 and 2
        sync.add("image", stamp, stamp)
        if stamp <= 2:
            sync.add("detections", stamp, stamp)
    assert sync.dropped == 2 and sync.unmatched == {"camera_info": 2, "detections": 0}
    sync.add("camera_info", 4, "i")  # a detection array stamped for another frame than image 4
    sync.add("detections", 7, "d")
    sync.add("image", 5, 5)
    assert sync.unmatched == {"camera_info": 3, "detections": 1}


def test_batched_poses_equal_the_one_by_one_conversion():
    require_ros("geometry_msgs.msg")
    from scipy.spatial.transform import Rotation

    from dsc_pose_ros.conversions import attach_poses, pose_msg

    rots = Rotation.random(6, random_state=0).as_matrix() + 1e-6  # a little off SO(3), as estimates are
    estimates = [EstimateOut(i, "o", R, np.array([0.1, -0.2, 1.0 + i]), 0.5, (0.1, 0.1, 0.1)) for i, R in enumerate(rots)]
    attach_poses(estimates)
    for est in estimates:
        one = pose_msg(est.R, est.t)
        q, q1 = est.pose.orientation, one.orientation
        assert np.allclose([q.x, q.y, q.z, q.w], [q1.x, q1.y, q1.z, q1.w], atol=1e-12)
        assert (est.pose.position.x, est.pose.position.z) == (one.position.x, one.position.z)
