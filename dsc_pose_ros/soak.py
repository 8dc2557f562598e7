"""The pose node under a long run: a client that starts the node, publishes frames at a fixed rate
and records, every ``window`` frames, the node's memory, what it answered and dropped, latency and
its /diagnostics (issue 31). Used by ``bench/bench_soak.py`` (10,000 frames) and by
``test/ros/test_soak.py`` (a few hundred).

Frames: LM-O ``val`` images of scene 2 with their loosened ground-truth boxes (as ``dsc-pose-bag
make``), several objects each, published in turn with new stamps (ROS time at publish): image,
camera_info and detections of one stamp. Latency = answer arrival here - stamp. A frame is answered
when a Detection3DArray with its stamp arrives; the node drops older frames when it is busy, and the
difference sent - answered is what it dropped (or what DDS lost). Memory: the node process's
``VmRSS`` (and its anonymous / shared parts) from ``/proc/<pid>/status``, sampled every
``rss_every`` frames.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .params import REPO_ROOT

SCENE = 2


def rss_kib(pid: int) -> dict:
    """VmRSS, RssAnon, RssShmem (KiB) of a live process; {} once it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def lmo_frames(lmo: Path, n_images: int, split: str = "val") -> list[dict]:
    """``n_images`` frames of the split: rgb, K, detections [(obj_id, (x, y, w, h))] (box seed 0)."""
    from dsc_pose_core.data import bop_io
    from dsc_pose_core.predict_cli import gt_detections

    scene = bop_io.scene_dir(lmo, SCENE)
    cams = bop_io.load_scene_camera(scene / "scene_camera.json")
    gts = bop_io.load_scene_gt(scene / "scene_gt.json")
    infos = bop_io.load_scene_gt_info(scene / "scene_gt_info.json")
    frames = []
    for im_id in list(bop_io.load_splits(lmo / "splits.json")[split])[:n_images]:
        rgb = bop_io.read_rgb(bop_io.find_rgb(scene, im_id))
        h, w = rgb.shape[:2]
        dets = gt_detections(gts, infos, SCENE, im_id, w, h, 0, None, 0.15)
        frames.append({"im_id": im_id, "rgb": rgb, "K": np.asarray(cams[im_id].K, dtype=np.float64),
                       "dets": [(int(d.obj_id), tuple(float(v) for v in d.box_xywh)) for d in dets]})
    return frames


@dataclass
class SoakResult:
    frames: int = 0
    answered: int = 0
    crashes: int = 0  # the node process died
    node_internal_errors: int = 0  # frames whose processing raised inside the node (its 'internal' count)
    windows: list = field(default_factory=list)
    rss_samples: list = field(default_factory=list)  # (frame index, VmRSS KiB, RssAnon, RssShmem)
    node_log_tail: str = ""
    wall_s: float = 0.0

    def rss_drift(self, first=(1000, 3000), last_n=2000) -> float | None:
        """mean VmRSS over the last ``last_n`` frames / mean over frames ``first`` - 1 (None when too short)."""
        a = [r for i, r, *_ in self.rss_samples if first[0] <= i < first[1]]
        b = [r for i, r, *_ in self.rss_samples if i >= self.frames - last_n]
        if not a or not b:
            return None
        return float(np.mean(b) / np.mean(a) - 1.0)


class NodeInputs:
    """What a program that feeds the pose node needs: ``self.rclpy``, ``self.node`` and the publishers
    ``pub_image``, ``pub_info``, ``pub_dets`` (set by the subclass); whether the node is connected to them
    and answering, and spinning until a condition holds."""

    def connected(self) -> bool:
        return (self.pub_image.get_subscription_count() > 0 and self.pub_info.get_subscription_count() > 0
                and self.pub_dets.get_subscription_count() > 0
                and self.node.count_publishers("/dsc_pose/detections3d") > 0)

    def spin_until(self, condition, timeout: float) -> bool:
        """Spin until ``condition()`` is true (True) or ``timeout`` seconds pass (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
            if condition():
                return True
        return False


class SoakClient(NodeInputs):
    """Publishes prepared frames and collects the node's answers and diagnostics (one rclpy node)."""

    def __init__(self, rclpy, frames: list[dict], reliable: bool = False):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray, ObjectHypothesisWithPose

        self.rclpy = rclpy
        self.node = rclpy.create_node("dsc_pose_soak_client")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=(
            ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT))
        self.pub_image = self.node.create_publisher(Image, "/image", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "/camera_info", qos)
        self.pub_dets = self.node.create_publisher(Detection2DArray, "/detections", qos)
        self.answers: dict[int, float] = {}  # stamp ns -> latency ms
        self.n_detections: dict[int, int] = {}
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(Detection3DArray, "/dsc_pose/detections3d", self._on_answer, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.messages = []
        frame_id = "camera_color_optical_frame"
        for f in frames:
            image = Image()
            image.header.frame_id = frame_id
            image.height, image.width = f["rgb"].shape[:2]
            image.encoding, image.step = "rgb8", f["rgb"].shape[1] * 3
            image.data = np.ascontiguousarray(f["rgb"]).tobytes()
            info = CameraInfo()
            info.header.frame_id = frame_id
            info.height, info.width = f["rgb"].shape[:2]
            info.k = [float(v) for v in f["K"].reshape(9)]
            info.distortion_model, info.d = "plumb_bob", [0.0] * 5
            dets = Detection2DArray()
            dets.header.frame_id = frame_id
            for i, (obj_id, (x, y, w, h)) in enumerate(f["dets"]):
                det = Detection2D()
                hyp = ObjectHypothesisWithPose()
                hyp.hypothesis.class_id, hyp.hypothesis.score = str(obj_id), 0.9
                det.results.append(hyp)
                det.bbox.center.position.x, det.bbox.center.position.y = x + w / 2.0, y + h / 2.0
                det.bbox.size_x, det.bbox.size_y = w, h
                det.id = f"{f['im_id']}_{i}"
                dets.detections.append(det)
            self.messages.append((image, info, dets))

    def _on_answer(self, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.answers[stamp] = (self.node.get_clock().now().nanoseconds - stamp) / 1e6
        self.n_detections[stamp] = len(msg.detections)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if "pose pipeline" in status.name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.rclpy.spin_once(self.node, timeout_sec=min(left, 0.05))  # returns early on a message

    def publish(self, index: int) -> int:
        """Publish frame ``index`` (cyclic) stamped now; returns the stamp (ns)."""
        image, info, dets = self.messages[index % len(self.messages)]
        now = self.node.get_clock().now()
        stamp = now.to_msg()
        image.header.stamp = info.header.stamp = dets.header.stamp = stamp
        for det in dets.detections:
            det.header = dets.header
        self.pub_info.publish(info)
        self.pub_dets.publish(dets)
        self.pub_image.publish(image)
        return now.nanoseconds

    def close(self) -> None:
        self.node.destroy_node()


def start_node(node_args: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dsc_pose_ros.node", "--ros-args", "--params-file",
           str(REPO_ROOT / "config" / "pose.yaml"), "--params-file", str(REPO_ROOT / "config" / "lmo.yaml"), *node_args]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
    proc.log_file = log
    proc.log_path = log_path
    proc.command = cmd
    return proc


def stop_node(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log_file.close()
    return proc.returncode


def soak(client: SoakClient, proc: subprocess.Popen, n_frames: int, rate_hz: float = 30.0, window: int = 500,
         rss_every: int = 100, progress=None) -> SoakResult:
    """Publish ``n_frames`` at ``rate_hz`` (absolute schedule) to a running node and measure."""
    res = SoakResult()
    period = 1.0 / rate_hz
    stamps: list[int] = []
    started = time.monotonic()
    next_t = started
    win_start = 0
    for i in range(n_frames):
        delay = next_t - time.monotonic()
        if delay > 0:
            client.spin_for(delay)
        next_t += period
        if proc.poll() is not None:
            res.crashes += 1
            break
        stamps.append(client.publish(i))
        res.frames = i + 1
        if i % rss_every == 0:
            mem = rss_kib(proc.pid)
            if mem:
                res.rss_samples.append((i, mem.get("VmRSS", 0), mem.get("RssAnon", 0), mem.get("RssShmem", 0)))
        if (i + 1) % window == 0 or i + 1 == n_frames:
            client.spin_for(0.0)
            res.windows.append(_window(client, stamps, win_start, i + 1, res, proc))
            win_start = i + 1
            if progress:
                progress(res.windows[-1])
    client.spin_for(2.0)  # the last answers
    if res.windows:  # answers that arrived after their window was written
        for w in res.windows:
            got = [client.answers[s] for s in stamps[w["from"]:w["to"]] if s in client.answers]
            w["answered_final"] = len(got)
    res.answered = sum(1 for s in stamps if s in client.answers)
    res.node_internal_errors = int(client.diagnostics.get("skipped_internal", "0"))
    res.wall_s = time.monotonic() - started
    if proc.poll() is not None and not res.crashes:
        res.crashes += 1
    return res


def _window(client: SoakClient, stamps: list[int], start: int, end: int, res: SoakResult, proc) -> dict:
    lat = [client.answers[s] for s in stamps[start:end] if s in client.answers]
    mem = rss_kib(proc.pid)
    pct = (lambda q: float(np.percentile(lat, q)) if lat else None)  # noqa: E731
    diag = dict(client.diagnostics)
    return {"from": start, "to": end, "sent": end - start, "answered": len(lat),
            "dropped": end - start - len(lat), "latency_ms_p50": pct(50), "latency_ms_p99": pct(99),
            "rss_mib": mem.get("VmRSS", 0) / 1024, "rss_anon_mib": mem.get("RssAnon", 0) / 1024,
            "rss_shmem_mib": mem.get("RssShmem", 0) / 1024, "t_s": time.monotonic(),
            "node_diagnostics": {k: diag.get(k) for k in ("processed", "dropped", "latency_ms_p50", "latency_ms_p99",
                                                          "pipeline_ms_p50") if k in diag}
            | {k: v for k, v in diag.items() if k.startswith("skipped_")}}
