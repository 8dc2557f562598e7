"""ROS messages <-> numpy (docs/ARCHITECTURE.md, "One frame through the node"): the only place that knows both.

Inputs are read duck-typed (any object with the message's fields), so the checks run without a ROS
runtime; outputs are built with the installed message classes. Every input problem raises
:class:`InputError` with one sentence saying what was wrong, which the node logs (throttled) before
skipping the frame or the detection. Pose math lives in ``dsc_pose_core``; this module only copies
numbers between layouts (cv_bridge is not available from the package registries, so images are
converted here with numpy, encodings per REP 118 / sensor_msgs/image_encodings).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import numpy as np

from dsc_pose_core.geometry.se3 import matrix_to_quaternion_xyzw

# encoding -> channels per pixel
IMAGE_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


class InputError(ValueError):
    """A message the pipeline cannot use (the frame or detection is skipped, the node goes on)."""


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> uint8 RGB [H,W,3] (a copy). rgb8, bgr8, mono8, rgba8, bgra8; rows may be
    padded (``step`` > width x channels)."""
    encoding = str(msg.encoding).lower()
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f"image encoding {msg.encoding!r} is not supported (use one of {sorted(IMAGE_ENCODINGS)})")
    channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InputError(f"image has no pixels ({width}x{height})")
    if step < width * channels:
        raise InputError(f"image step {step} is smaller than width x channels = {width * channels}")
    try:  # rclpy's array.array('B') or bytes: read in place, one copy below (not two)
        data = np.frombuffer(msg.data, dtype=np.uint8)
    except TypeError:  # a list of ints
        data = np.asarray(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise InputError(f"image data has {data.size} bytes, expected step x height = {step * height}")
    pixels = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding == "rgb8":
        return pixels.copy()
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.repeat(pixels, 3, axis=2)  # mono8


def camera_info_to_K(msg) -> tuple[np.ndarray, int, int]:
    """sensor_msgs/CameraInfo -> (K [3,3], width, height). Non-zero distortion is rejected: the
    pipeline assumes a pinhole image, so feed it the rectified image (image_proc) and its info."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise InputError(f"camera_info K has {K.size} values, expected 9")
    K = K.reshape(3, 3)
    if not np.isfinite(K).all():
        raise InputError("camera_info K is not finite (NaN or inf)")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"camera_info K has non-positive focal lengths (fx={K[0, 0]}, fy={K[1, 1]})")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise InputError(f"camera_info K's last row is {K[2].tolist()}, expected [0, 0, 1]")
    distortion = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if distortion.size and (not np.isfinite(distortion).all() or np.abs(distortion).max() > 0):
        raise InputError(f"camera_info has non-zero distortion ({str(msg.distortion_model)!r} "
                         f"{distortion.tolist()}): publish the rectified image and its camera_info instead")
    return K, int(msg.width), int(msg.height)


@dataclass
class ParsedDetection:
    obj_id: int
    box_xywh: tuple[float, float, float, float]
    score: float
    detection_id: str


def detections_to_boxes(msg, resolve_class: Callable[[str], int | None], width: int, height: int
                        ) -> tuple[list[ParsedDetection], list[str]]:
    """vision_msgs/Detection2DArray -> (usable detections, one warning per skipped detection).

    A detection is skipped (with a reason) when it has no hypothesis, its class id is unknown
    (``resolve_class`` returns None), its box is empty or not finite, or the box lies entirely
    outside the ``width`` x ``height`` image. The best-scoring hypothesis names the class."""
    usable, warnings = [], []
    for index, det in enumerate(msg.detections):
        label = f"detection {index}" + (f" ({det.id})" if getattr(det, "id", "") else "")
        if not det.results:
            warnings.append(f"{label}: no class hypothesis")
            continue
        scores = [float(r.hypothesis.score) for r in det.results]
        if not np.isfinite(scores).all():
            warnings.append(f"{label}: hypothesis score is not finite ({scores})")
            continue
        best = det.results[int(np.argmax(scores))]
        class_id = str(best.hypothesis.class_id)
        obj_id = resolve_class(class_id)
        if obj_id is None:
            warnings.append(f"{label}: unknown class id {class_id!r}")
            continue
        cx, cy = float(det.bbox.center.position.x), float(det.bbox.center.position.y)
        w, h = float(det.bbox.size_x), float(det.bbox.size_y)
        if not np.isfinite([cx, cy, w, h]).all() or w <= 0 or h <= 0:
            warnings.append(f"{label}: empty or non-finite box (centre {cx}, {cy}, size {w} x {h})")
            continue
        x0, y0 = cx - w / 2.0, cy - h / 2.0
        if x0 >= width or y0 >= height or x0 + w <= 0 or y0 + h <= 0:
            warnings.append(f"{label}: box ({x0:.0f}, {y0:.0f}, {w:.0f}, {h:.0f}) is outside the "
                            f"{width}x{height} image")
            continue
        usable.append(ParsedDetection(obj_id, (x0, y0, w, h), float(max(scores)), str(getattr(det, "id", ""))))
    return usable, warnings


# what a skipped detection's sentence says -> the kind of problem its warning is throttled under
DETECTION_PROBLEMS = ("no class hypothesis", "score is not finite", "unknown class id", "empty", "non-finite",
                      "outside", "too small", "too large", "malformed", "initial pose")


def detection_problem_kind(sentence: str) -> str:
    """``detection_<problem>``: each kind of bad detection gets its own throttled warning and count."""
    found = next((p for p in DETECTION_PROBLEMS if p in sentence), "other")
    return "detection_" + found.replace(" ", "_").replace("-", "_")


def limit_detections(parsed: list[ParsedDetection], max_detections: int) -> tuple[list[ParsedDetection], str | None]:
    """At most ``max_detections`` detections (0 = no limit), the highest scores first (ties: the
    detector's order), and one sentence when some were left out. The kept ones stay in the
    detector's order."""
    if max_detections <= 0 or len(parsed) <= max_detections:
        return parsed, None
    order = sorted(range(len(parsed)), key=lambda i: -parsed[i].score)[:max_detections]
    kept = [parsed[i] for i in sorted(order)]
    return kept, (f"{len(parsed)} detections in one frame: estimating the {max_detections} with the highest "
                  f"scores (max_detections), {len(parsed) - max_detections} left out")


def best_per_object(estimates: Sequence["EstimateOut"]) -> tuple[list["EstimateOut"], str | None]:
    """One estimate per object (the highest score) for the outputs keyed by object, TF frame and
    ``~/pose/<name>``, and one sentence naming the objects detected more than once."""
    best: dict[int, EstimateOut] = {}
    counts: dict[int, int] = {}
    for est in estimates:
        counts[est.obj_id] = counts.get(est.obj_id, 0) + 1
        if est.obj_id not in best or est.score > best[est.obj_id].score:
            best[est.obj_id] = est
    repeated = {best[o].name: n for o, n in counts.items() if n > 1}
    if not repeated:
        return list(estimates), None
    return ([e for e in estimates if best[e.obj_id] is e],
            f"objects detected more than once in one frame {repeated}: every one is in detections3d, TF and "
            "~/pose/<name> carry the highest-scoring one")


def frame_mismatch(image_frame: str, detections_frame: str) -> str | None:
    """Detections stamped like the image but for another camera frame (both frame ids set)."""
    if image_frame and detections_frame and image_frame != detections_frame:
        return (f"detections are for frame {detections_frame!r} but the image is {image_frame!r}: "
                "frame skipped")
    return None


def large_image_note(width: int, height: int, segment_bytes: int | None, reliability: str) -> str | None:
    """One sentence when camera_info announces images larger than the Fast DDS shared-memory segment
    (``config/fastdds.xml``): such images travel as UDP fragments, which best-effort QoS drops without
    a word when one fragment is lost."""
    if not segment_bytes or width <= 0 or height <= 0:
        return None
    size = width * height * 3  # rgb8 / bgr8; rgba8 and bgra8 are larger still
    if size <= segment_bytes:
        return None
    advice = ("the node subscribes best effort, so an image that loses one fragment is dropped without "
              "a word: publish it reliable and set qos_reliability:=reliable, or raise segment_size"
              if reliability == "best_effort" else "they arrive by reliable QoS (slower)")
    return (f"camera_info announces {width}x{height} images ({size / 2**20:.0f} MiB as rgb8), larger than the "
            f"{segment_bytes / 2**20:.0f} MiB shared-memory segment of the Fast DDS profile: they travel as UDP "
            f"fragments; {advice}")


# ------------------------------------------------------------------------------------ outputs


def pose_msg(R, t, q=None):
    """(R [3,3], t [3] metres) -> geometry_msgs/Pose (``q``: R's quaternion x, y, z, w when known)."""
    from geometry_msgs.msg import Pose

    pose = Pose()
    t = np.asarray(t, dtype=np.float64).reshape(3)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    q = matrix_to_quaternion_xyzw(R) if q is None else q
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def attach_poses(estimates: Sequence["EstimateOut"]) -> None:
    """Build every estimate's Pose at once: one batched orthonormalisation and quaternion conversion for
    the frame instead of one per estimate (0.1 ms each on a 2-core CPU)."""
    todo = [e for e in estimates if "pose" not in e.__dict__]
    if not todo:
        return
    from scipy.spatial.transform import Rotation

    R = np.stack([np.asarray(e.R, dtype=np.float64).reshape(3, 3) for e in todo])
    u, _, vt = np.linalg.svd(R)
    vt[:, 2] *= np.linalg.det(u @ vt)[:, None]  # nearest rotation (det +1), as matrix_to_quaternion_xyzw
    quats = Rotation.from_matrix(u @ vt).as_quat()
    for est, q in zip(todo, quats):
        est.__dict__["pose"] = pose_msg(est.R, est.t, q)  # the cached_property's slot


@dataclass
class EstimateOut:
    """What the node publishes per estimated object (from a pipeline PoseResult + registry)."""
    obj_id: int
    name: str
    R: np.ndarray
    t: np.ndarray
    score: float
    size_xyz: Sequence[float]  # model extents (metres), the Detection3D box size
    detection_id: str = ""

    @cached_property
    def pose(self):
        """geometry_msgs/Pose, built once and shared by every message of this estimate."""
        return pose_msg(self.R, self.t)


def detection3d_array(header, estimates: Sequence[EstimateOut], class_id_names: bool = False):
    """vision_msgs/Detection3DArray: one Detection3D per estimate, one hypothesis with the pose."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    out = Detection3DArray()
    out.header = header
    for est in estimates:
        det = Detection3D()
        det.header = header
        det.id = est.detection_id or est.name
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = est.name if class_id_names else str(est.obj_id)
        hyp.hypothesis.score = float(est.score)
        hyp.pose.pose = est.pose
        det.results.append(hyp)
        det.bbox.center = est.pose
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in est.size_xyz)
        out.detections.append(det)
    return out


def pose_stamped(header, est: EstimateOut):
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header = header
    msg.pose = est.pose
    return msg


def transform_stamped(header, child_frame: str, est: EstimateOut):
    """camera frame (``header.frame_id``) -> object frame, as tf2 expects it."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header = header
    msg.child_frame_id = child_frame
    pose = est.pose
    msg.transform.translation.x = pose.position.x
    msg.transform.translation.y = pose.position.y
    msg.transform.translation.z = pose.position.z
    msg.transform.rotation = pose.orientation
    return msg


def rgb_to_image_msg(header, rgb: np.ndarray):
    """uint8 RGB [H,W,3] -> sensor_msgs/Image rgb8."""
    from sensor_msgs.msg import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    return msg
