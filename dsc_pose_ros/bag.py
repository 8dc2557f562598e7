"""``dsc-pose-bag``: make a rosbag2 from a BOP scene, replay it through the pose node, score it.

Examples::

    dsc-pose-bag make --dataset ../shared/data/lmo --scene 2 --split val --out out/lmo_val_bag
    dsc-pose-bag eval --bag out/lmo_val_bag --out out/lmo_val_eval [--rate-scale 0.5] \\
        [--node-arg "-p device:=cuda"]

``make`` writes one frame per image of the split, ``1/rate`` seconds apart, with the same header
stamp on its three messages: ``/camera/image`` (sensor_msgs/Image, rgb8), ``/camera/camera_info``
(K of scene_camera.json, plumb_bob with zero distortion, P = [K | 0]) and ``/detections``
(vision_msgs/Detection2DArray): the ground-truth visible boxes loosened by U(0, max_loosening) per
side, drawn exactly as ``dsc-pose-predict`` draws them (``predict_cli.gt_instances``: one generator
per image seeded with (box_seed, scene, image), instances under 10 % visible not detected), so both
tools see the same boxes. Box centre = (x + w/2, y + h/2) pixels, size = (w, h); class id = the BOP
object id; detection id = ``"<im_id>:<instance index in scene_gt.json>"``. The ground truth is kept
beside the bag in ``dsc_pose_gt.json`` (dataset, scene, split; per frame im_id, stamp, GT poses in
BOP units (R row-major, t mm) and the detections).

``eval`` starts the node (``python -m dsc_pose_ros.node --ros-args --params-file config/pose.yaml
[--params-file config/lmo.yaml | -p registry:=REGISTRY] <--node-arg ...> -r image:=... ...``: the
node's defaults, then the bag's objects: ``--registry`` when given (the registry that maps the bag's
class ids), else LM-O's registry and checkpoints), in the local-only ROS
environment of ``dsc_pose_ros.ros_env``), waits until it subscribes to the bag's topics and
publishes ``/dsc_pose/detections3d``, replays the bag at its recorded rate x ``--rate-scale`` with
every header stamp rewritten to the ROS time of replay (best-effort QoS, depth 5, as the node
subscribes by default), records the node's answers (latency = arrival - stamp), stops the node
(SIGINT, then kill), and writes ``results.csv`` (BOP19), ``report.json`` and ``report.md`` (accuracy
from ``dsc_pose_core.eval`` on the bag's images, latency percentiles, frames sent / answered /
dropped, throughput, the node command, the machine) plus ``node.log`` (the node's output).

Exit codes: 0 done; 1 the node died during the replay (the report is still written); 2 bad input
or the node did not start (one ``error:`` line, with the tail of the node's output).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .params import resolve_path

PROG = "dsc-pose-bag"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_FILE = "config/pose.yaml"  # the node's defaults
LMO_PARAMS_FILE = "config/lmo.yaml"  # LM-O's registry and checkpoints (bags of the LM-O dataset)
GT_FILE = "dsc_pose_gt.json"
GT_FORMAT = "dsc_pose_bag_gt/1"
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
DEFAULT_TOPICS = {"image": "/camera/image", "camera_info": "/camera/camera_info", "detections": "/detections"}
OUTPUT_TOPIC = "/dsc_pose/detections3d"
DEFAULT_FRAME_ID = "camera_color_optical_frame"
DEFAULT_START_STAMP = 1_700_000_000.0  # s; recorded stamps are fixed so that a bag is reproducible
ACCURACY_KEYS = ("ADD-S_0.1d", "5cm5deg", "proj2d_5px", "AR_MSSD", "AR_MSPD")
NS = 1_000_000_000


class BagError(Exception):
    """Bad input (missing bag, dataset, node that does not start): one message, exit code 2."""


# ------------------------------------------------------------------------------------ types


def vision_msgs_dir() -> Path:
    """Folder with the vision_msgs ``.msg`` files: the installed package's share (PyPI wheels or a
    ROS install on AMENT_PREFIX_PATH), else the repository's ``interfaces/vision_msgs/msg``."""
    from .ros_env import venv_prefix

    candidates = [venv_prefix() / "share" / "vision_msgs" / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "vision_msgs" / "msg")
    candidates.append(REPO_ROOT / "interfaces" / "vision_msgs" / "msg")
    for path in candidates:
        if (path / "Detection2DArray.msg").is_file():
            return path
    raise BagError(f"vision_msgs .msg files not found (looked in {', '.join(map(str, candidates))})")


def make_typestore():
    """rosbags typestore of ROS 2 Kilted plus vision_msgs (registered from its .msg files)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
    types = {}
    for path in sorted(vision_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


# ------------------------------------------------------------------------------------ make


@dataclass
class FrameDetection:
    inst: int  # index of the instance in scene_gt.json
    obj_id: int
    box_xywh: tuple[int, int, int, int]  # loosened box (integer pixels)


def frame_detections(scene_gt, scene_gt_info, scene_id: int, im_id: int, width: int, height: int,
                     box_seed: int, max_loosening: float) -> list[FrameDetection]:
    """The detections of one image with their instance index: ``predict_cli.gt_instances``, the boxes
    ``dsc-pose-predict`` uses."""
    from dsc_pose_core.predict_cli import gt_instances

    return [FrameDetection(inst, obj_id, tuple(int(v) for v in box)) for inst, obj_id, box in
            gt_instances(scene_gt, scene_gt_info, scene_id, im_id, width, height, box_seed, None, max_loosening)]


def _header(store, stamp_ns: int, frame_id: str):
    T = store.types
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // NS, nanosec=stamp_ns % NS),
                                    frame_id=frame_id)


def image_message(store, header, rgb: np.ndarray):
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return store.types[IMAGE_TYPE](header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                                   step=width * 3, data=rgb.reshape(-1))


def camera_info_message(store, header, K: np.ndarray, width: int, height: int):
    T = store.types
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T[CAMERA_INFO_TYPE](header=header, height=height, width=width, distortion_model="plumb_bob",
                               d=np.zeros(5), k=K.reshape(9).copy(), r=np.eye(3).reshape(9), p=P.reshape(12),
                               binning_x=0, binning_y=0, roi=roi)


def detections_message(store, header, im_id: int, dets: list[FrameDetection]):
    T = store.types
    out = []
    for d in dets:
        x, y, w, h = (float(v) for v in d.box_xywh)
        pose = T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                             orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36))
        hyp = T["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id=str(d.obj_id), score=1.0), pose=pose)
        bbox = T["vision_msgs/msg/BoundingBox2D"](
            center=T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=x + w / 2.0, y=y + h / 2.0),
                                               theta=0.0),
            size_x=w, size_y=h)
        out.append(T["vision_msgs/msg/Detection2D"](header=header, results=[hyp], bbox=bbox, id=f"{im_id}:{d.inst}"))
    return T[DETECTIONS_TYPE](header=header, detections=out)


def make_bag(args) -> dict:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dsc_pose_core.data import bop_io

    if args.rate <= 0:
        raise BagError(f"--rate must be > 0, got {args.rate}")
    dataset = Path(args.dataset)
    out = Path(args.out)
    if out.exists():
        raise BagError(f"output already exists: {out} (rosbag2 writes a new folder)")
    try:
        scene = bop_io.select_scene_images(dataset, args.scene, args.split_dir, args.split,
                                           max_images=args.max_images)
    except (FileNotFoundError, ValueError) as exc:
        raise BagError(str(exc)) from None
    scene_path, cams, scene_gt, scene_info, im_ids = (scene.scene_path, scene.cameras, scene.gt, scene.gt_info,
                                                      scene.im_ids)
    if not im_ids:
        raise BagError("no images to write")

    store = make_typestore()
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[args.format]
    start_ns = int(round(args.start_stamp * NS))
    period_ns = int(round(NS / args.rate))
    frames, n_dets = [], 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        conns = {kind: writer.add_connection(topic, msgtype, typestore=store)
                 for kind, topic, msgtype in (("camera_info", args.camera_info_topic, CAMERA_INFO_TYPE),
                                              ("detections", args.detections_topic, DETECTIONS_TYPE),
                                              ("image", args.image_topic, IMAGE_TYPE))}
        for k, im_id in enumerate(im_ids):
            rgb = bop_io.read_rgb(bop_io.find_rgb(scene_path, im_id))
            height, width = rgb.shape[:2]
            dets = frame_detections(scene_gt, scene_info, args.scene, im_id, width, height, args.box_seed,
                                    args.max_loosening)
            n_dets += len(dets)
            stamp = start_ns + k * period_ns
            header = _header(store, stamp, args.frame_id)
            messages = {"camera_info": (camera_info_message(store, header, cams[im_id].K, width, height),
                                        CAMERA_INFO_TYPE),
                        "detections": (detections_message(store, header, im_id, dets), DETECTIONS_TYPE),
                        "image": (image_message(store, header, rgb), IMAGE_TYPE)}
            for kind, (msg, msgtype) in messages.items():
                writer.write(conns[kind], stamp, store.serialize_cdr(msg, msgtype))
            frames.append({
                "im_id": int(im_id),
                "stamp": {"sec": stamp // NS, "nanosec": stamp % NS},
                "width": int(width), "height": int(height),
                "gt": [{"inst": i, "obj_id": int(p.obj_id), "R": [float(v) for v in np.asarray(p.R).reshape(9)],
                        "t": [float(v) * bop_io.M_TO_MM for v in np.asarray(p.t).reshape(3)]}
                       for i, p in enumerate(scene_gt.get(im_id, []))],
                "detections": [{"id": f"{im_id}:{d.inst}", "inst": d.inst, "obj_id": d.obj_id,
                                "box_xywh": list(d.box_xywh)} for d in dets],
            })
    gt = {
        "format": GT_FORMAT,
        "dataset": str(dataset.resolve()),
        "split_dir": args.split_dir,
        "scene_id": int(args.scene),
        "split": args.split,
        "rate_hz": float(args.rate),
        "box_seed": int(args.box_seed),
        "max_loosening": float(args.max_loosening),
        "frame_id": args.frame_id,
        "topics": {"image": args.image_topic, "camera_info": args.camera_info_topic,
                   "detections": args.detections_topic},
        "units": "R row-major object->camera, t millimetres (BOP); boxes x, y, w, h pixels",
        "frames": frames,
    }
    bop_io.atomic_write_text(out / GT_FILE, json.dumps(gt, indent=1) + "\n")
    return {"frames": len(frames), "detections": n_dets, "out": str(out), "format": args.format}


# ------------------------------------------------------------------------------------ bag reading


def load_gt(bag: Path) -> dict | None:
    path = bag / GT_FILE
    if not path.is_file():
        return None
    try:
        gt = json.loads(path.read_text())
        _ = [(f["im_id"], f["stamp"]["sec"], f["stamp"]["nanosec"]) for f in gt["frames"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BagError(f"{path} is not a {PROG} ground-truth file ({exc})") from None
    return gt


def bag_topics(reader) -> dict[str, object]:
    """{"image"|"camera_info"|"detections": connection}: exactly one topic of each input type."""
    wanted = {IMAGE_TYPE: "image", CAMERA_INFO_TYPE: "camera_info", DETECTIONS_TYPE: "detections"}
    found: dict[str, list] = {kind: [] for kind in wanted.values()}
    for conn in reader.connections:
        if conn.msgtype in wanted:
            found[wanted[conn.msgtype]].append(conn)
    out = {}
    for kind, conns in found.items():
        topics = sorted({c.topic for c in conns})
        if len(topics) != 1:
            raise BagError(f"the bag needs exactly one {kind} topic, found {topics or 'none'}")
        out[kind] = [c for c in conns if c.topic == topics[0]]
    return out


# ------------------------------------------------------------------------------------ eval


def percentiles_ms(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(latencies_s) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "max": float(a.max())}


def machine_info() -> dict:
    from dsc_pose_core.provenance import cpu_model, git_commit

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(), "git_commit": git_commit()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return info


def node_command(args, topics: dict[str, str]) -> list[str]:
    base = shlex.split(args.node_command) if args.node_command else [sys.executable, "-m", "dsc_pose_ros.node"]
    cmd = [*base, "--ros-args"]
    if args.params_file:
        cmd += ["--params-file", str(args.params_file)]
    # the objects of the bag: the registry that maps its class ids. Without --registry and with the default
    # params file, LM-O's (config/lmo.yaml: its registry and the checkpoints trained for it); a params file of
    # the user's keeps its own.
    if args.registry:
        cmd += ["-p", f"registry:={Path(args.registry).resolve()}"]
    elif args.params_file == str(resolve_path(DEFAULT_PARAMS_FILE)):
        cmd += ["--params-file", str(resolve_path(LMO_PARAMS_FILE))]
    if getattr(args, "tracking", False):
        cmd += ["-p", "tracking:=true"]
    for extra in args.node_arg or []:
        cmd += shlex.split(extra)
    for name in ("image", "camera_info", "detections"):
        cmd += ["-r", f"{name}:={topics[name]}"]
    return cmd


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


def _stop_process(proc: subprocess.Popen, grace_s: float) -> dict:
    """SIGINT, wait ``grace_s``, then kill. Returns how it ended."""
    if proc.poll() is not None:
        return {"alive_at_end": False, "returncode": proc.returncode, "stopped_by": None}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
        return {"alive_at_end": True, "returncode": proc.returncode, "stopped_by": "SIGINT"}
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"alive_at_end": True, "returncode": proc.returncode, "stopped_by": "kill"}


@dataclass
class SentFrame:
    index: int
    im_id: int
    orig_ns: int
    new_ns: int
    sent_mono: float


@dataclass
class Answer:
    arrival_ns: int
    detections: list  # (class_id, score, [x, y, z], [qx, qy, qz, qw])
    duplicates: int = 0


@dataclass
class ReplayResult:
    sent: list[SentFrame] = field(default_factory=list)
    answers: dict[int, Answer] = field(default_factory=dict)
    unexpected: int = 0  # answers with a stamp that was never sent
    messages_published: int = 0
    replay_s: float = 0.0
    first_send_ns: int | None = None
    last_answer_ns: int | None = None
    node_died: bool = False
    node_diagnostics: dict | None = None  # the node's last /diagnostics values (processed, dropped, ...)


def _class_resolver(registry_path: str | None):
    cache: dict[str, int | None] = {}
    registry = []

    def resolve(class_id: str) -> int | None:
        if class_id in cache:
            return cache[class_id]
        value: int | None
        try:
            value = int(class_id)
        except ValueError:
            value = None
            try:
                if not registry:
                    from dsc_pose_core.objects.registry import ObjectRegistry

                    registry.append(ObjectRegistry.from_yaml(registry_path or resolve_path("config/objects.yaml")))
                value = registry[0].by_name(class_id).obj_id
            except Exception:
                value = None
        cache[class_id] = value
        return value

    return resolve


def replay(args, reader, conns: dict, stamp_to_im: dict[int, int], proc: subprocess.Popen, log_path: Path,
           node_cmd: list[str]) -> ReplayResult:
    """Wait for the node, replay the bag with fresh stamps, collect the answers."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    classes = {"image": Image, "camera_info": CameraInfo, "detections": Detection2DArray}
    reliability = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
    qos_in = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.qos_depth,
                        reliability=reliability[args.qos_reliability], durability=DurabilityPolicy.VOLATILE)
    qos_out = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_AVAILABLE,
                         durability=DurabilityPolicy.VOLATILE)
    result = ReplayResult()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node("dsc_pose_bag_player", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        clock = node.get_clock()
        pubs = {kind: node.create_publisher(classes[kind], c[0].topic, qos_in) for kind, c in conns.items()}

        def on_answer(msg):
            now = clock.now().nanoseconds
            key = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
            if key in result.answers:
                result.answers[key].duplicates += 1
                return
            dets = []
            for det in msg.detections:
                if not det.results:
                    continue
                hyp = det.results[0]
                p, q = hyp.pose.pose.position, hyp.pose.pose.orientation
                dets.append((str(hyp.hypothesis.class_id), float(hyp.hypothesis.score), [p.x, p.y, p.z],
                             [q.x, q.y, q.z, q.w]))
            result.answers[key] = Answer(now, dets)
            result.last_answer_ns = now

        node.create_subscription(Detection3DArray, args.output_topic, on_answer, qos_out)

        def on_diagnostics(msg):
            for status in msg.status:
                if status.name.startswith(args.diagnostics_prefix):
                    result.node_diagnostics = {kv.key: kv.value for kv in status.values}

        try:
            from diagnostic_msgs.msg import DiagnosticArray

            node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        except ImportError:
            pass

        def check_alive(when: str):
            if proc.poll() is not None:
                raise BagError(f"the node exited with code {proc.returncode} {when}; command: "
                               f"{shlex.join(node_cmd)}\n--- node output (tail) ---\n{_tail(log_path)}")

        # 1. wait for the node: it publishes the output topic and subscribes to the three inputs
        deadline = time.monotonic() + args.startup_timeout
        while True:
            check_alive("before it was ready")
            ready = node.count_publishers(args.output_topic) > 0 and all(
                p.get_subscription_count() > 0 for p in pubs.values())
            if ready:
                break
            if time.monotonic() > deadline:
                state = {kind: p.get_subscription_count() for kind, p in pubs.items()}
                state["output publishers"] = node.count_publishers(args.output_topic)
                raise BagError(f"the node was not ready after {args.startup_timeout:g} s (matched: {state}); "
                               f"command: {shlex.join(node_cmd)}\n--- node output (tail) ---\n{_tail(log_path)}")
            executor.spin_once(timeout_sec=0.1)
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end:  # discovery is not symmetric: let the node match us too
            executor.spin_once(timeout_sec=0.05)

        # 2. replay, each message at its recorded time / rate_scale, stamps rewritten to now
        kind_of = {c.id: kind for kind, cs in conns.items() for c in cs}
        new_stamps: dict[int, int] = {}
        t0_mono, t0_bag = time.monotonic(), None
        for conn, bag_ns, raw in reader.messages(connections=[c for cs in conns.values() for c in cs]):
            t0_bag = bag_ns if t0_bag is None else t0_bag
            due = t0_mono + (bag_ns - t0_bag) / NS / args.rate_scale
            # read the message before its time: the player's own work is not the node's latency
            kind = kind_of[conn.id]
            msg = deserialize_message(bytes(raw), classes[kind])
            while True:  # answers are taken while waiting; a frame's messages go out back to back
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                executor.spin_once(timeout_sec=min(remaining, 0.05))
            if proc.poll() is not None:
                result.node_died = True
                break
            orig = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
            if orig not in new_stamps:
                new_stamps[orig] = clock.now().nanoseconds
            new = new_stamps[orig]
            stamp = type(msg.header.stamp)(sec=new // NS, nanosec=new % NS)
            msg.header.stamp = stamp
            if kind == "detections":
                for det in msg.detections:
                    if int(det.header.stamp.sec) * NS + int(det.header.stamp.nanosec) == orig:
                        det.header.stamp = stamp
            pubs[kind].publish(msg)
            result.messages_published += 1
            if kind == "image":
                result.sent.append(SentFrame(len(result.sent), stamp_to_im.get(orig, len(result.sent)), orig, new,
                                             time.monotonic()))
                if result.first_send_ns is None:
                    result.first_send_ns = new
        result.replay_s = time.monotonic() - t0_mono

        # 3. wait for the last answers: until every frame is answered or nothing came for answer_timeout
        sent_keys = {f.new_ns for f in result.sent}
        last_event = time.monotonic()
        n_answered = 0
        while not result.node_died:
            answered = len(sent_keys & result.answers.keys())
            if answered == len(sent_keys):
                break
            if answered != n_answered:
                n_answered, last_event = answered, time.monotonic()
            if time.monotonic() - last_event > args.answer_timeout:
                break
            if proc.poll() is not None:
                result.node_died = True
                break
            executor.spin_once(timeout_sec=0.05)
        result.unexpected = len(result.answers.keys() - sent_keys)
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
    finally:
        rclpy.try_shutdown(context=context)
    return result


def _accuracy(dataset: Path, gt: dict, results_csv: Path, out_dir: Path) -> dict:
    """BOP19 scores of the results over the bag's images (targets restricted to them)."""
    from dsc_pose_core.data import bop_io
    from dsc_pose_core.eval.bop import evaluate_files, targets_from_gt

    scene_id = int(gt["scene_id"])
    im_ids = {int(f["im_id"]) for f in gt["frames"]}
    split_dir = gt.get("split_dir", "test")
    targets_file = dataset / "test_targets_bop19.json"
    if targets_file.is_file():
        targets = [t for t in bop_io.load_targets(targets_file) if t.scene_id == scene_id and t.im_id in im_ids]
        source = str(targets_file)
    else:
        scene_path = bop_io.scene_dir(dataset, scene_id, split_dir)
        targets = targets_from_gt(bop_io.load_scene_gt_info(scene_path / "scene_gt_info.json"),
                                  bop_io.load_scene_gt(scene_path / "scene_gt.json"), scene_id)
        targets = [t for t in targets if t.im_id in im_ids]
        source = "GT instances >= 10 % visible"
    if not targets:
        raise BagError(f"no evaluation targets for scene {scene_id}, images {sorted(im_ids)[:10]} in {dataset}")
    targets_path = out_dir / "targets.json"
    bop_io.atomic_write_text(targets_path, json.dumps(
        [{"scene_id": t.scene_id, "im_id": t.im_id, "obj_id": t.obj_id, "inst_count": t.inst_count}
         for t in targets]))
    report = evaluate_files(dataset, results_csv, targets_path=targets_path)
    acc = {k: report.get(k) for k in ACCURACY_KEYS}
    acc["AR_VSD"] = report.get("AR_VSD")
    acc["per_object"] = report.get("per_object")
    acc["counts"] = report.get("counts")
    acc["targets"] = f"{len(targets)} targets from {source}, restricted to the bag's images"
    return acc


def _format_md(report: dict) -> str:
    lines = [f"# {PROG} eval: {report['bag']}", "", f"- node: `{report['node']['command']}`",
             f"- replay: rate scale {report['replay']['rate_scale']:g}, {report['replay']['duration_s']:.1f} s, "
             f"QoS {report['replay']['qos']}",
             f"- machine: {report['machine'].get('cpu_model')} ({report['machine'].get('cpu_count')} CPUs), "
             f"commit {report['machine'].get('git_commit')}", f"- date: {report['date']}", "",
             "## Frames and latency", "", "| sent | answered | dropped | throughput (frames/s) | "
             "latency p50 (ms) | p90 | p99 |", "|---|---|---|---|---|---|---|"]
    fr, lat = report["frames"], report["latency_ms"]

    def num(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    lines.append(f"| {fr['sent']} | {fr['answered']} | {fr['dropped']} | {num(report['throughput_fps'], '.2f')} | "
                 f"{num(lat['p50'])} | {num(lat['p90'])} | {num(lat['p99'])} |")
    node = report["node"]
    lines += ["", f"Node exit: alive at end {node['alive_at_end']}, stopped by {node['stopped_by']}, "
              f"return code {node['returncode']}."]
    lines += [f"\nNote: {n}" for n in report.get("notes", [])]
    acc = report.get("accuracy")
    lines += ["", "## Accuracy", ""]
    if not acc:
        lines.append(report.get("accuracy_note") or "not scored")
    else:
        cols = ACCURACY_KEYS
        lines += ["| obj | n_gt | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for obj_id, row in sorted((acc.get("per_object") or {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {obj_id} | {row.get('n_gt', '')} | " + " | ".join(num(row.get(c), ".4f") for c in cols)
                         + " |")
        lines.append("| all | | " + " | ".join(num(acc.get(c), ".4f") for c in cols) + " |")
        lines += ["", acc.get("targets", "")]
    return "\n".join(lines) + "\n"


def run_eval(args) -> int:
    from dsc_pose_core.data import bop_io

    bag = Path(args.bag)
    if not (bag / "metadata.yaml").is_file():
        raise BagError(f"not a rosbag2 folder (no metadata.yaml): {bag}")
    if args.rate_scale <= 0:
        raise BagError(f"--rate-scale must be > 0, got {args.rate_scale}")
    gt = load_gt(bag)
    dataset = None
    if gt is not None:
        dataset = Path(args.dataset or gt.get("dataset") or "")
        if not dataset.is_dir():
            raise BagError(f"dataset of the bag not found: {dataset} (pass --dataset DIR)")
    params_file = args.params_file
    if params_file is None:
        default = resolve_path(DEFAULT_PARAMS_FILE)
        params_file = str(default) if default.is_file() else ""
    elif params_file and not Path(params_file).is_file():
        raise BagError(f"params file not found: {params_file}")
    args.params_file = params_file

    try:
        import rclpy  # noqa: F401
        import sensor_msgs.msg  # noqa: F401
        import vision_msgs.msg  # noqa: F401
    except Exception as exc:
        raise BagError(f"ROS 2 runtime not available ({exc}); run scripts/setup_ros.sh") from None
    from rosbags.rosbag2 import Reader

    from .ros_env import apply_ros_env, subprocess_env

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp_to_im = {}
    if gt is not None:
        stamp_to_im = {int(f["stamp"]["sec"]) * NS + int(f["stamp"]["nanosec"]): int(f["im_id"]) for f in gt["frames"]}

    apply_ros_env()  # before rclpy.init; the child gets the same domain id through subprocess_env
    log_path = out / "node.log"
    started = time.time()
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:
        raise BagError(f"cannot read the bag {bag}: {exc}") from None
    try:
        conns = bag_topics(reader)
        topics = {kind: cs[0].topic for kind, cs in conns.items()}
        cmd = node_command(args, topics)
        n_images = sum(c.msgcount for c in conns["image"])
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT))
            except OSError as exc:
                raise BagError(f"cannot start the node ({shlex.join(cmd)}): {exc}") from None
            try:
                result = replay(args, reader, conns, stamp_to_im, proc, log_path, cmd)
            finally:
                stop = _stop_process(proc, args.stop_timeout)
    finally:
        reader.close()
    node_died = result.node_died or not stop["alive_at_end"]

    # results: one BOP row per answered detection
    from dsc_pose_core.geometry.se3 import quaternion_xyzw_to_matrix

    resolve = _class_resolver(args.registry)
    scene_id = int(gt["scene_id"]) if gt else 0
    estimates, latencies, unknown = [], [], {}
    for frame in result.sent:
        answer = result.answers.get(frame.new_ns)
        if answer is None:
            continue
        latency = (answer.arrival_ns - frame.new_ns) / NS
        latencies.append(latency)
        for class_id, score, position, quat in answer.detections:
            obj_id = resolve(class_id)
            if obj_id is None:
                unknown[class_id] = unknown.get(class_id, 0) + 1
                continue
            R = quaternion_xyzw_to_matrix(quat)
            estimates.append(bop_io.PoseEstimate(scene_id, frame.im_id, obj_id, score, R,
                                                 np.asarray(position, dtype=np.float64), latency))
    results_csv = out / "results.csv"
    bop_io.write_bop_results(results_csv, estimates)

    answered = sum(1 for f in result.sent if f.new_ns in result.answers)
    span_s = None
    if result.first_send_ns is not None and result.last_answer_ns is not None:
        span_s = (result.last_answer_ns - result.first_send_ns) / NS
    report = {
        "bag": str(bag.resolve()),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "node": {"command": shlex.join(cmd), **stop, "died_during_replay": result.node_died, "log": str(log_path)},
        "replay": {"rate_scale": args.rate_scale, "duration_s": result.replay_s,
                   "qos": f"{args.qos_reliability}, depth {args.qos_depth}", "topics": topics,
                   "output_topic": args.output_topic, "messages_published": result.messages_published,
                   "images_in_bag": n_images},
        "frames": {"sent": len(result.sent), "answered": answered, "dropped": len(result.sent) - answered,
                   "unexpected_answers": result.unexpected,
                   "duplicate_answers": sum(a.duplicates for a in result.answers.values())},
        "latency_ms": percentiles_ms(latencies),
        "throughput_fps": (answered / span_s) if span_s and span_s > 0 else None,
        "node_diagnostics": result.node_diagnostics,
        "estimates": len(estimates),
        "unknown_class_ids": unknown,
        "results": str(results_csv),
        "machine": machine_info(),
        "wall_s": None,
    }
    notes = []
    if report["frames"]["dropped"]:
        diag = result.node_diagnostics or {}
        notes.append(f"{report['frames']['dropped']} frames unanswered; the node's last diagnostics: processed "
                     f"{diag.get('processed', '?')}, dropped {diag.get('dropped', '?')} (frames the node never "
                     f"received completely were lost on the way)")
        if args.qos_reliability == "best_effort":
            notes.append("best-effort QoS may lose large images in transport: compare with --qos-reliability "
                         "reliable --node-arg '-p qos_reliability:=reliable', or replay slower (--rate-scale)")
    report["notes"] = notes
    if gt is None:
        report["accuracy"] = None
        report["accuracy_note"] = f"no {GT_FILE} beside the bag: latency only"
    else:
        report["dataset"] = str(dataset)
        report["scene_id"], report["split"] = scene_id, gt.get("split")
        report["accuracy"] = _accuracy(dataset, gt, results_csv, out)
    report["wall_s"] = time.time() - started
    bop_io.atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    bop_io.atomic_write_text(out / "report.md", _format_md(report))

    fr, lat = report["frames"], report["latency_ms"]
    acc = report["accuracy"] or {}
    p50 = "-" if lat["p50"] is None else f"{lat['p50']:.1f}"
    p99 = "-" if lat["p99"] is None else f"{lat['p99']:.1f}"
    print(f"{PROG}: frames sent {fr['sent']}, answered {fr['answered']}, dropped {fr['dropped']}; latency p50 "
          f"{p50} ms, p99 {p99} ms"
          + (f"; AR_MSSD {acc['AR_MSSD']:.4f}, ADD-S_0.1d {acc['ADD-S_0.1d']:.4f}" if acc else "")
          + f" -> {out / 'report.json'}")
    if node_died:
        print(f"{PROG}: error: the node died during the replay (return code {stop['returncode']}); "
              f"see {log_path}\n{_tail(log_path, 2000)}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make", help="write a rosbag2 from a BOP scene (images, camera_info, loosened GT boxes)")
    m.add_argument("--dataset", required=True, help="BOP dataset folder")
    m.add_argument("--scene", type=int, required=True, help="scene id")
    m.add_argument("--split", help="image ids from DATASET/splits.json under this name (default: every image)")
    m.add_argument("--split-dir", default="test", help="split folder inside the dataset (default: test)")
    m.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    m.add_argument("--format", default="mcap", choices=("mcap", "sqlite3"), help="storage (default: mcap)")
    m.add_argument("--rate", type=float, default=10.0, help="frames per second of the recorded stamps (default 10)")
    m.add_argument("--box-seed", type=int, default=0, help="seed of the box loosening (as dsc-pose-predict)")
    m.add_argument("--max-loosening", type=float, default=0.15, help="per-side loosening bound (default 0.15)")
    m.add_argument("--max-images", type=int, default=0, help="at most this many images (0: all)")
    m.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help=f"header frame id (default {DEFAULT_FRAME_ID})")
    m.add_argument("--start-stamp", type=float, default=DEFAULT_START_STAMP,
                   help=f"stamp of the first frame, seconds (default {DEFAULT_START_STAMP:.0f})")
    m.add_argument("--image-topic", default=DEFAULT_TOPICS["image"])
    m.add_argument("--camera-info-topic", default=DEFAULT_TOPICS["camera_info"])
    m.add_argument("--detections-topic", default=DEFAULT_TOPICS["detections"])

    e = sub.add_parser("eval", help="replay a bag through the pose node; accuracy, latency, drops")
    e.add_argument("--bag", required=True, help="rosbag2 folder (from `make`, or any bag with one Image, "
                   "CameraInfo and Detection2DArray topic; without dsc_pose_gt.json only latency is measured)")
    e.add_argument("--out", required=True, help="report folder")
    e.add_argument("--rate-scale", type=float, default=1.0, help="replay speed x the recorded rate (default 1)")
    e.add_argument("--node-arg", action="append", default=[],
                   help="extra ROS arguments for the node, split like a shell line, appended after the defaults "
                   "(the node's own defaults, config/pose.yaml), e.g. --node-arg '-p init:=box'; repeatable")
    e.add_argument("--tracking", action="store_true",
                   help="the node tracks objects across frames (-p tracking:=true; give it a refiner with "
                   "--node-arg, e.g. '-p align:=after')")
    e.add_argument("--params-file", default=None,
                   help="node parameters YAML (default: config/pose.yaml when it exists; '' for none)")
    e.add_argument("--node-command", default=None,
                   help="the node's command line before --ros-args (default: python -m dsc_pose_ros.node)")
    e.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for the node (default 60)")
    e.add_argument("--answer-timeout", type=float, default=10.0,
                   help="after the replay, stop waiting when no answer came for this many seconds (default 10)")
    e.add_argument("--settle", type=float, default=1.0, help="seconds between discovery and replay (default 1)")
    e.add_argument("--stop-timeout", type=float, default=15.0, help="seconds from SIGINT to kill (default 15)")
    e.add_argument("--output-topic", default=OUTPUT_TOPIC, help=f"the node's output (default {OUTPUT_TOPIC})")
    e.add_argument("--qos-reliability", default="best_effort", choices=("best_effort", "reliable"),
                   help="QoS of the replayed topics (default best_effort, as the node subscribes)")
    e.add_argument("--qos-depth", type=int, default=5, help="QoS history depth of the replayed topics (default 5)")
    e.add_argument("--diagnostics-prefix", default="dsc_pose",
                   help="record the node's last /diagnostics status whose name starts with this (default dsc_pose)")
    e.add_argument("--dataset", help="BOP dataset folder (default: the one recorded in dsc_pose_gt.json)")
    e.add_argument("--registry", help="the bag's object registry: the node serves it and class names map through it "
                   "(default config/objects.yaml)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from dsc_pose_core.data.bop_io import BopFormatError

    try:
        if args.command == "make":
            summary = make_bag(args)
            print(f"{PROG}: {summary['frames']} frames, {summary['detections']} detections -> {summary['out']} "
                  f"({summary['format']})")
            return 0
        return run_eval(args)
    except (BagError, BopFormatError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # rclpy's ExternalShutdownException (SIGINT/SIGTERM during the replay)
        if type(exc).__name__ != "ExternalShutdownException":
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
