"""Message conversions, stamp matching and parameter checks of the ROS layer (no running node)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from dsc_pose_ros.conversions import (EstimateOut, InputError, camera_info_to_K, detection3d_array,
                                      detections_to_boxes, image_to_rgb, transform_stamped)
from dsc_pose_ros.frame_sync import FrameSynchronizer
from dsc_pose_ros.params import PARAMETERS, ParameterError, validate
from ros_helpers import require_ros


def _image(rgb: np.ndarray, encoding: str, pad: int = 0):
    if encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif encoding == "mono8":
        pixels = rgb[..., :1]
    elif encoding == "rgba8":
        pixels = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == "bgra8":
        pixels = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    else:
        pixels = rgb
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = pixels.reshape(h, w * c)
    return NS(encoding=encoding, height=h, width=w, step=w * c + pad, data=rows.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_image_encodings_and_row_padding(encoding, pad):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    out = image_to_rgb(_image(rgb, encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3) and np.array_equal(out, rgb)


@pytest.mark.parametrize("change, words", [
    (dict(encoding="32FC1"), "encoding"),
    (dict(step=5), "step"),
    (dict(data=b"\x00" * 10), "bytes"),
    (dict(width=0), "no pixels"),
])
def test_bad_images_raise_one_clear_error(change, words):
    msg = _image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(InputError, match=words):
        image_to_rgb(msg)


def _info(k=(500.0, 0, 320, 0, 500.0, 240, 0, 0, 1), d=(0.0,) * 5):
    return NS(k=list(k), d=list(d), width=640, height=480, distortion_model="plumb_bob")


def test_camera_info_K_and_rejections():
    K, w, h = camera_info_to_K(_info())
    assert np.allclose(K, [[500, 0, 320], [0, 500, 240], [0, 0, 1]]) and (w, h) == (640, 480)
    assert camera_info_to_K(_info(d=()))[1] == 640  # no distortion given = pinhole
    for bad, words in [((np.nan, 0, 320, 0, 500, 240, 0, 0, 1), "not finite"), ((0,) * 9, "focal"),
                       ((500, 0, 320, 0, 500, 240, 0, 1, 1), "last row"), ((1, 2, 3), "expected 9")]:
        with pytest.raises(InputError, match=words):
            camera_info_to_K(_info(k=bad))
    with pytest.raises(InputError, match="distortion"):
        camera_info_to_K(_info(d=(0.1, 0, 0, 0, 0)))


def _det(cls, cx, cy, w, h, score=0.5, det_id="d"):
    hyp = NS(hypothesis=NS(class_id=cls, score=score))
    return NS(results=[hyp], bbox=NS(center=NS(position=NS(x=cx, y=cy)), size_x=w, size_y=h), id=det_id)


def test_detections_are_parsed_and_bad_ones_reported_one_by_one():
    resolve = {"5": 5, "can": 5, "9": 9}.get
    msg = NS(detections=[_det("5", 100, 100, 40, 20), _det("can", 630, 470, 40, 40), _det("cat", 10, 10, 5, 5),
                         _det("9", 700, 100, 20, 20), _det("9", 50, 50, 0, 10), _det("9", np.nan, 5, 5, 5),
                         NS(results=[], bbox=None, id="x")])
    usable, warnings = detections_to_boxes(msg, resolve, 640, 480)
    assert [(d.obj_id, d.box_xywh) for d in usable] == [(5, (80.0, 90.0, 40.0, 20.0)), (5, (610.0, 450.0, 40.0, 40.0))]
    assert len(warnings) == 5
    assert any("unknown class id 'cat'" in w for w in warnings) and any("outside" in w for w in warnings)
    assert any("no class hypothesis" in w for w in warnings)
    assert detections_to_boxes(NS(detections=[]), resolve, 640, 480) == ([], [])


def test_frame_sync_exact_takes_the_newest_complete_frame_and_counts_drops():
    sync = FrameSynchronizer("exact", max_pending=4)
    for stamp in (1, 2, 3):
        sync.add("image", stamp, f"img{stamp}")
        sync.add("camera_info", stamp, f"info{stamp}")
    sync.add("detections", 2, "det2")
    frame = sync.take()
    assert (frame.stamp_ns, frame.image, frame.camera_info, frame.detections) == (2, "img2", "info2", "det2")
    assert sync.dropped == 1 and sync.take() is None  # image 1 superseded; image 3 waits for detections
    sync.add("detections", 3, "det3")
    assert sync.take().image == "img3" and sync.pending()["image"] == 0
    for stamp in range(10, 16):  # more images than max_pending: the oldest are evicted and counted
        sync.add("image", stamp, stamp)
    assert sync.dropped == 1 + 2 and sync.pending()["image"] == 4


def test_frame_sync_approximate_matches_within_tolerance():
    sync = FrameSynchronizer("approximate", tolerance_ns=10)
    sync.add("image", 100, "img")
    sync.add("camera_info", 95, "info")
    sync.add("detections", 120, "det_far")
    assert sync.take() is None
    sync.add("detections", 108, "det")
    frame = sync.take()
    assert (frame.camera_info, frame.detections) == ("info", "det")
    exact = FrameSynchronizer("exact")
    exact.add("image", 100, "img")
    exact.add("camera_info", 101, "info")
    exact.add("detections", 100, "det")
    assert exact.take() is None
    with pytest.raises(ValueError):
        FrameSynchronizer("sometimes")


def test_parameter_table_matches_config_pose_yaml_and_rejects_bad_values(repo_root):
    import yaml

    shipped = yaml.safe_load((repo_root / "config" / "pose.yaml").read_text())["dsc_pose"]["ros__parameters"]
    assert shipped == {p.name: p.default for p in PARAMETERS}
    assert validate(dict(shipped))["init"] == "dsc"
    assert validate({"sync_tolerance_s": 1})["sync_tolerance_s"] == 1.0  # ints accepted for floats
    for bad in ({"init": "magic"}, {"device": "tpu"}, {"device": "cuda:x"}, {"refine_iterations": -1},
                {"qos_depth": 0}, {"obj_ids": "1,x"}, {"object_frame_pattern": "fixed"}, {"publish_tf": "yes"},
                {"nonsense": 1}):
        with pytest.raises(ParameterError):
            validate(dict(bad))
    assert validate({"device": "cuda:1"})["device"] == "cuda:1"


def test_output_messages_carry_the_pose():
    require_ros("vision_msgs.msg", "geometry_msgs.msg")
    from scipy.spatial.transform import Rotation
    from std_msgs.msg import Header

    R = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    est = EstimateOut(5, "can", R, np.array([0.1, -0.2, 0.9]), 0.75, (0.1, 0.2, 0.3), "d1")
    header = Header(frame_id="cam")
    msg = detection3d_array(header, [est])
    det = msg.detections[0]
    q = det.results[0].pose.pose.orientation
    assert det.results[0].hypothesis.class_id == "5" and det.results[0].hypothesis.score == 0.75
    assert np.allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), R, atol=1e-9)
    assert det.bbox.size.z == pytest.approx(0.3) and det.id == "d1"
    assert detection3d_array(header, [est], class_id_names=True).detections[0].results[0].hypothesis.class_id == "can"
    tf = transform_stamped(header, "dsc_pose/can", est)
    assert tf.child_frame_id == "dsc_pose/can" and tf.transform.translation.z == pytest.approx(0.9)


def test_tracking_parameters_are_checked():
    assert validate({"tracking": True, "tracking_min_score": 0.3})["tracking_min_score"] == 0.3
    for bad in ({"tracking": "yes"}, {"tracking_min_score": 1.5}, {"tracking_smoothing": 1.0}):
        with pytest.raises(ParameterError):
            validate(dict(bad))
