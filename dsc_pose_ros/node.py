"""The pose node ``dsc_pose`` (executables ``pose_node`` / ``dsc-pose-node``).

Subscribes to ``image`` (sensor_msgs/Image), ``camera_info`` and ``detections``
(vision_msgs/Detection2DArray), matches them by stamp (``frame_sync``), runs the core pipeline
(``dsc_pose_core.pipeline.PoseEstimator``) on a worker thread and publishes ``~/detections3d``,
``~/pose/<name>``, TF, ``~/debug_image`` and ``~/markers`` (only while subscribed) and
``/diagnostics``. Callbacks only buffer messages: inference never runs in a subscription callback,
and the worker always takes the newest complete frame (older ones are dropped and counted), so
latency stays bounded under load. Bad input (see ``conversions.InputError``) skips the frame or the
detection with one throttled warning per kind of problem; the node keeps running.

Start: ``dsc-pose-node --ros-args --params-file config/pose.yaml [-p name:=value] [-r image:=/cam/image]``
or ``ros2 launch dsc_pose_ros pose.launch.py`` in a ROS 2 workspace.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque

import numpy as np

from .conversions import (EstimateOut, InputError, attach_poses, best_per_object, camera_info_to_K,
                          detection3d_array, detection_problem_kind, detections_to_boxes, frame_mismatch,
                          image_to_rgb, large_image_note, limit_detections, pose_stamped, rgb_to_image_msg,
                          stamp_to_ns, transform_stamped)
from .frame_sync import FrameSynchronizer
from .params import NODE_NAME, PARAMETERS, ParameterError, parse_obj_ids, resolve_path, validate

WARN_PERIOD_S = 5.0
STAGES = ("transport", "handoff", "convert", "pipeline", "publish")
DYNAMIC_TYPED = ("obj_ids",)  # "-p obj_ids:=5" arrives as an integer, "1,5" as a string


class PoseNode:
    """Built around an rclpy Node (``self.node``); construction raises ParameterError or
    PipelineConfigError for unusable parameters, before anything is subscribed."""

    def __init__(self, args=None, node=None):
        import rclpy.node
        from rcl_interfaces.msg import ParameterDescriptor

        self.node = node or rclpy.node.Node(NODE_NAME, cli_args=args)
        self.log = self.node.get_logger()
        from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

        for p in PARAMETERS:
            try:
                self.node.declare_parameter(p.name, p.default, ParameterDescriptor(
                    description=p.description, dynamic_typing=p.name in DYNAMIC_TYPED))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                raise ParameterError(f"parameter {p.name}: expected {type(p.default).__name__} "
                                     f"(default {p.default!r}): {exc}") from None
        values = {p.name: self.node.get_parameter(p.name).value for p in PARAMETERS}
        if isinstance(values["obj_ids"], int) and not isinstance(values["obj_ids"], bool):
            values["obj_ids"] = str(values["obj_ids"])
        undeclared = [n for n in self._overridden_names() if n not in values and n != "use_sim_time"]
        if undeclared:
            raise ParameterError(f"unknown parameters: {undeclared}")
        self.params = validate(values)
        self._warned: dict[str, float] = {}
        self.skipped: dict[str, int] = {}
        self._setup_pipeline()
        self._setup_io()
        self.sync = FrameSynchronizer(self.params["sync"], int(self.params["sync_tolerance_s"] * 1e9),
                                      max_pending=max(2, self.params["qos_depth"] * 2),
                                      max_ahead_ns=int(self.params["max_stamp_ahead_s"] * 1e9))
        self._unmatched_seen = dict(self.sync.unmatched)
        self._info_size = None
        from .ros_env import shm_segment_bytes

        self._segment_bytes = shm_segment_bytes()
        self.latencies_ms: deque[float] = deque(maxlen=1000)
        self.pipeline_ms: deque[float] = deque(maxlen=1000)
        # where a frame's time goes (ms, last 1000 frames): stamp -> image callback (DDS and the
        # sender), callback -> worker takes it (hand-off and waiting), conversion, pipeline, publishing
        self.stage_ms: dict[str, deque] = {k: deque(maxlen=1000) for k in STAGES}
        self._arrival_ns: dict[int, int] = {}  # image stamp -> arrival (wall clock ns), callbacks -> worker
        self._arrival_lock = threading.Lock()
        self.processed = 0
        self._wake = threading.Event()
        self._running = True
        self._debug_renderer = None
        self.worker = threading.Thread(target=self._work, name="dsc_pose_worker", daemon=True)
        self.worker.start()
        self.node.create_timer(self.params["stats_period_s"], self._report)
        self.log.info(f"ready: objects {self.obj_ids} ({', '.join(self.names[o] for o in self.obj_ids)}), "
                      f"init {self.params['init']}, refine {self.params['refine_iterations']}, device {self.device}, "
                      f"registry {resolve_path(self.params['registry'])}")

    def _overridden_names(self) -> list[str]:
        try:
            return list(self.node._parameter_overrides.keys())  # rclpy keeps --ros-args -p / params files here
        except AttributeError:
            return []

    # ------------------------------------------------------------------ set-up
    def _setup_pipeline(self) -> None:
        from dsc_pose_core.align import AlignConfig
        from dsc_pose_core.templates import TemplateConfig
        from dsc_pose_core.pipeline import PipelineConfig, load_pose_estimator, refiner_order

        p = self.params
        self.device = p["device"]
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                self.log.warning(f"device {self.device!r} requested but CUDA is not available: using cpu")
                self.device = "cpu"
        if p["threads"] > 0:
            import torch

            torch.set_num_threads(p["threads"])
        ckpt_dir = resolve_path(p["checkpoints"])
        deepim = p["deepim_checkpoint"] or (str(ckpt_dir / "deepim.pt") if p["refine_iterations"] > 0 else None)
        segmentation = p["segmentation_checkpoint"] or (
            str(ckpt_dir / "segmentation" / "lmo_seg.pt") if p["align"] != "off" or p["init"] == "templates" else None)
        obj_ids = parse_obj_ids(p["obj_ids"]) or None
        config = PipelineConfig(init=p["init"], dsc_checkpoints=str(ckpt_dir) if p["init"] == "dsc" else None,
                                self6d_checkpoints=str(ckpt_dir) if p["init"] == "self6d" else None,
                                deepim_checkpoint=str(resolve_path(deepim)) if deepim else None,
                                refine_iterations=p["refine_iterations"], device=self.device, obj_ids=obj_ids,
                                box_templates=p["box_templates"],
                                refiners=refiner_order(p["align"], p["refine_iterations"]),
                                segmentation_checkpoint=str(resolve_path(segmentation)) if segmentation else None,
                                align=AlignConfig(hypotheses=p["align_hypotheses"], w_colour=p["align_colour"]),
                                templates=TemplateConfig(
                                    cache_dir=str(resolve_path(p["template_cache"])) if p["template_cache"] else None))
        self.estimator = load_pose_estimator(resolve_path(p["registry"]), config,
                                             str(resolve_path(p["models_dir"])) if p["models_dir"] else None)
        self.tracker = None
        if p["tracking"]:  # a confident pose of the previous frame starts the refiners (dsc_pose_core.tracking)
            from dsc_pose_core.tracking import Tracker, TrackingConfig

            self.tracker = Tracker(self.estimator, TrackingConfig(min_score=p["tracking_min_score"],
                                                                  smoothing=p["tracking_smoothing"]))
        registry = self.estimator.registry
        self.registry = registry
        self.obj_ids = list(self.estimator.obj_ids)
        self.names = {o: registry[o].name for o in self.obj_ids}
        self._ids_by_class = {str(o): o for o in self.obj_ids} | {registry[o].name: o for o in self.obj_ids}

    def _qos(self):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        reliability = (ReliabilityPolicy.BEST_EFFORT if self.params["qos_reliability"] == "best_effort"
                       else ReliabilityPolicy.RELIABLE)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.params["qos_depth"], reliability=reliability)

    def _setup_io(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2DArray, Detection3DArray
        from visualization_msgs.msg import MarkerArray

        n = self.node
        qos = self._qos()
        n.create_subscription(Image, "image", lambda m: self._on_input("image", m), qos)
        n.create_subscription(CameraInfo, "camera_info", lambda m: self._on_input("camera_info", m), qos)
        n.create_subscription(Detection2DArray, "detections", lambda m: self._on_input("detections", m), qos)
        self.pub_detections = n.create_publisher(Detection3DArray, "~/detections3d", 10)
        self.pub_poses = ({o: n.create_publisher(PoseStamped, f"~/pose/{self.names[o]}", 10) for o in self.obj_ids}
                          if self.params["publish_poses"] else {})
        self.pub_debug = n.create_publisher(Image, "~/debug_image", 2) if self.params["debug_image"] else None
        self.pub_markers = n.create_publisher(MarkerArray, "~/markers", 2) if self.params["markers"] else None
        self.pub_diagnostics = n.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf_broadcaster = None
        self.pub_tf = None
        if self.params["publish_tf"]:
            try:  # tf2_ros when installed (a real ROS install); else the same message on /tf ourselves
                from tf2_ros import TransformBroadcaster

                self.tf_broadcaster = TransformBroadcaster(n)
            except ImportError:
                from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
                from tf2_msgs.msg import TFMessage

                # tf2_ros's broadcaster QoS: reliable, volatile, keep last 100
                tf_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
                self.pub_tf = n.create_publisher(TFMessage, "/tf", tf_qos)

    # ------------------------------------------------------------------ callbacks and worker
    def _on_input(self, kind: str, msg) -> None:
        refused = self.sync.add(kind, stamp_to_ns(msg.header.stamp), msg,
                                self.node.get_clock().now().nanoseconds)
        if refused:
            self.warn("stamp_out_of_order" if "out of order" in refused else "stamp_future", refused)
            return
        if kind == "camera_info":
            size = (int(msg.width), int(msg.height))
            if size != self._info_size:
                self._info_size = size
                note = large_image_note(*size, self._segment_bytes, self.params["qos_reliability"])
                if note:
                    self.log.warning(note)
        elif kind == "image":
            with self._arrival_lock:
                self._arrival_ns[stamp_to_ns(msg.header.stamp)] = time.time_ns()
                if len(self._arrival_ns) > 64:  # images dropped before the worker took them
                    for old in sorted(self._arrival_ns)[:32]:
                        del self._arrival_ns[old]
            self._report_unmatched()
        if kind == "image" or self.sync.pending()["image"]:
            self._wake.set()

    def _report_unmatched(self) -> None:
        """Warn about images dropped without a camera_info or detections of their stamp (counted by the
        synchronizer when they are evicted or superseded: in a callback or in the worker)."""
        with self._arrival_lock:
            unmatched = dict(self.sync.unmatched)
            new = {k: n - self._unmatched_seen[k] for k, n in unmatched.items()}
            self._unmatched_seen = unmatched
        for partner, count in new.items():
            for _ in range(count):
                self.warn(f"no_{partner}", f"image dropped with no {partner} of its stamp (missing, or stamped "
                          f"differently: sync {self.params['sync']})")

    def warn(self, kind: str, message: str, what: str = "skipped") -> None:
        """One warning per kind of problem every WARN_PERIOD_S; every occurrence is counted."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) >= WARN_PERIOD_S:
            self._warned[kind] = now
            self.log.warning(f"{message} ({what}; {self.skipped[kind]} so far)")

    def _work(self) -> None:
        while self._running:
            self._wake.wait(0.1)
            self._wake.clear()
            while self._running:
                frame = self.sync.take()
                self._report_unmatched()
                if frame is None:
                    break
                try:
                    self._process(frame)
                except Exception as exc:  # never let one frame kill the worker
                    if not self.node.context.ok():
                        return  # shutting down
                    self.warn("internal", f"frame failed: {type(exc).__name__}: {exc}")

    def _process(self, frame) -> None:
        from dsc_pose_core.pipeline import Detection

        t_take = time.time_ns()
        with self._arrival_lock:
            arrival = self._arrival_ns.pop(frame.stamp_ns, None)
        image_msg = frame.image
        try:
            rgb = image_to_rgb(image_msg)
            K, info_w, info_h = camera_info_to_K(frame.camera_info)
            if (info_w, info_h) != (rgb.shape[1], rgb.shape[0]) and (info_w, info_h) != (0, 0):
                raise InputError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info says {info_w}x{info_h}")
        except InputError as exc:
            self.warn(str(exc).split(" ")[0] + "_input", str(exc))
            return
        height, width = rgb.shape[:2]
        mismatch = frame_mismatch(image_msg.header.frame_id, frame.detections.header.frame_id)
        if mismatch:
            self.warn("frame_id", mismatch)
            return
        parsed, problems = detections_to_boxes(frame.detections, self._ids_by_class.get, width, height)
        for problem in problems:
            self.warn(detection_problem_kind(problem), problem)
        parsed, limited = limit_detections(parsed, self.params["max_detections"])
        if limited:
            self.warn("max_detections", limited, "frames limited")
        header = image_msg.header
        if not frame.detections.detections:
            self.warn("empty_detections", "detection array is empty: nothing to estimate")
        t0 = time.perf_counter()
        convert_ms = (time.time_ns() - t_take) / 1e6
        results = ((self.tracker or self.estimator).estimate(rgb, K, [Detection(d.obj_id, d.box_xywh, d.score)
                                                                      for d in parsed]) if parsed else [])
        pipeline_s = time.perf_counter() - t0
        estimates = []
        for det, res in zip(parsed, results):
            if not res.ok:
                self.warn(detection_problem_kind(res.reason), f"detection of object {det.obj_id}: {res.reason}")
                continue
            if res.score < self.params["score_threshold"]:
                continue
            info = self.registry[res.obj_id].model_info
            estimates.append(EstimateOut(res.obj_id, self.names[res.obj_id], res.R, res.t, res.score,
                                         info.bbox_size, det.detection_id))
        t1 = time.perf_counter()
        self._publish(header, estimates, rgb, K)
        publish_ms = (time.perf_counter() - t1) * 1e3
        now_ns = self.node.get_clock().now().nanoseconds
        self.latencies_ms.append((now_ns - stamp_to_ns(header.stamp)) / 1e6)
        self.pipeline_ms.append(pipeline_s * 1e3)
        if arrival is not None:
            self.stage_ms["transport"].append((arrival - frame.stamp_ns) / 1e6)
            self.stage_ms["handoff"].append((t_take - arrival) / 1e6)
        self.stage_ms["convert"].append(convert_ms)
        self.stage_ms["pipeline"].append(pipeline_s * 1e3)
        self.stage_ms["publish"].append(publish_ms)
        self.processed += 1

    def _publish(self, header, estimates, rgb, K) -> None:
        attach_poses(estimates)
        self.pub_detections.publish(detection3d_array(header, estimates, self.params["class_id_names"]))
        pattern = self.params["object_frame_pattern"]
        transforms = []
        keyed, repeated = best_per_object(estimates)  # one TF frame and one pose topic per object
        if repeated:
            self.warn("repeated_object", repeated, "frames with repeats")
        for est in keyed:
            if est.obj_id in self.pub_poses:
                self.pub_poses[est.obj_id].publish(pose_stamped(header, est))
            transforms.append(transform_stamped(header, pattern.format(name=est.name, id=est.obj_id), est))
        if transforms and self.tf_broadcaster is not None:
            self.tf_broadcaster.sendTransform(transforms)
        elif transforms and self.pub_tf is not None:
            from tf2_msgs.msg import TFMessage

            self.pub_tf.publish(TFMessage(transforms=transforms))
        if self.pub_debug is not None and self.pub_debug.get_subscription_count() > 0:
            self.pub_debug.publish(rgb_to_image_msg(header, self._overlay(rgb, K, estimates)))
        if self.pub_markers is not None and self.pub_markers.get_subscription_count() > 0:
            self.pub_markers.publish(self._markers(header, estimates))

    # ------------------------------------------------------------------ debug outputs
    def _overlay(self, rgb: np.ndarray, K, estimates) -> np.ndarray:
        from dsc_pose_core.viz.overlay import EST_COLOR, draw_axes, draw_poses

        image = rgb.copy()
        if self._debug_renderer is None:
            try:
                from dsc_pose_core.render import FastRenderer

                renderer = FastRenderer(image.shape[1], image.shape[0])
                for o in self.obj_ids:
                    renderer.add_object(o, self.registry[o].mesh)
                self._debug_renderer = renderer
            except Exception as exc:  # no OpenGL: boxes and axes only
                self.warn("debug_renderer", f"debug image without contours (no renderer: {exc})")
                self._debug_renderer = False
        poses = [(e.obj_id, e.R, e.t) for e in estimates]
        corners = {o: self.registry[o].mesh.bbox_corners() for o in {e.obj_id for e in estimates}}
        draw_poses(image, K, poses, self._debug_renderer or None, corners, EST_COLOR)
        for e in estimates:
            draw_axes(image, K, e.R, e.t, 0.5 * self.registry[e.obj_id].model_info.diameter)
        return image

    def _markers(self, header, estimates):
        from visualization_msgs.msg import Marker, MarkerArray

        out = MarkerArray()
        clear = Marker()
        clear.header = header
        clear.action = Marker.DELETEALL
        out.markers.append(clear)
        for i, est in enumerate(estimates):
            entry = self.registry[est.obj_id]
            m = Marker()
            m.header = header
            m.ns = "dsc_pose"
            m.id = i
            m.type = Marker.MESH_RESOURCE
            m.action = Marker.ADD
            m.pose = est.pose
            m.scale.x = m.scale.y = m.scale.z = float(entry.unit_scale)
            m.mesh_resource = "file://" + os.path.abspath(entry.mesh_path)
            m.mesh_use_embedded_materials = True
            m.color.r, m.color.g, m.color.b, m.color.a = 1.0, 0.0, 1.0, 0.6
            out.markers.append(m)
        return out

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        pipe = np.asarray(self.pipeline_ms, dtype=np.float64)
        pct = (lambda a, q: float(np.percentile(a, q)) if a.size else float("nan"))  # noqa: E731
        return {"processed": self.processed, "dropped": self.sync.dropped, "skipped": dict(self.skipped),
                "latency_ms_p50": pct(lat, 50), "latency_ms_p90": pct(lat, 90), "latency_ms_p99": pct(lat, 99),
                "pipeline_ms_p50": pct(pipe, 50)} | {
                f"stage_{k}_ms_p50": pct(np.asarray(v, dtype=np.float64), 50) for k, v in self.stage_ms.items()} | (
                {} if self.tracker is None else {f"tracking_{k}": v for k, v in vars(self.tracker.stats).items()
                                                 if k != "reasons"})

    def _report(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        s = self.stats()
        summary = (s["processed"], s["dropped"], sum(s["skipped"].values()))
        if summary != getattr(self, "_last_summary", (0, 0, 0)):
            self._last_summary = summary
            self.log.info(f"frames {s['processed']} processed, {s['dropped']} dropped, skipped {s['skipped']}; "
                          f"latency p50 {s['latency_ms_p50']:.1f} ms p90 {s['latency_ms_p90']:.1f} ms; "
                          f"pipeline p50 {s['pipeline_ms_p50']:.1f} ms")
        status = DiagnosticStatus(name=f"{self.node.get_name()}: pose pipeline", hardware_id=self.device,
                                  level=DiagnosticStatus.OK, message="running")
        flat = {k: v for k, v in s.items() if k != "skipped"} | {f"skipped_{k}": v for k, v in s["skipped"].items()}
        status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in flat.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_diagnostics.publish(msg)

    def close(self) -> None:
        self._running = False
        self._wake.set()
        self.worker.join(timeout=5.0)
        if self._debug_renderer:
            self._debug_renderer.close()
        self.estimator.close()
        self.node.destroy_node()


def main(argv=None) -> int:
    """Console script ``dsc-pose-node`` / ROS executable ``pose_node``."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from dsc_pose_core.pipeline import PipelineConfigError

    if os.environ.get("DSC_POSE_KEEP_ROS_ENV") != "1":
        # local-only discovery and the loopback Fast DDS profile unless the caller opts out
        from .ros_env import apply_ros_env

        had_domain = bool(os.environ.get("ROS_DOMAIN_ID", "").strip())
        apply_ros_env()
        if not had_domain:  # ROS's default domain, where the camera driver and detector run
            os.environ.pop("ROS_DOMAIN_ID", None)
    argv = list(sys.argv if argv is None else argv)
    try:
        rclpy.init(args=argv)
    except Exception as exc:  # rcl's RCLError: a params file that is not valid YAML, a bad --ros-args
        message = str(exc).split(", at /")[0]  # without rcl's C source locations
        print(f"dsc-pose-node: error: cannot start ROS with these arguments: {message}", file=sys.stderr)
        return 2
    pose_node = None
    try:
        pose_node = PoseNode()
        rclpy.spin(pose_node.node)
    except (ParameterError, PipelineConfigError) as exc:
        print(f"dsc-pose-node: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if pose_node is not None:
            pose_node.close()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
