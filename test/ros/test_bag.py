"""``dsc-pose-bag``: bags made from LM-O, and replaying them through the real pose node.

The LM-O data is required (fixture ``lmo_root`` fails, never skips, when it is missing); the
replay test needs the ROS 2 runtime and fails when it is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsc_pose_core.data import bop_io
from dsc_pose_core.predict_cli import gt_detections
from dsc_pose_ros import bag as bagmod
from dsc_pose_ros.ros_env import subprocess_env
from ros_helpers import require_ros

SCENE = 2
REPO = Path(__file__).resolve().parents[2]


def _make(lmo_root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dsc_pose_ros.bag", "make", "--dataset", str(lmo_root), "--scene", str(SCENE),
           "--split", "val", "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _scene(lmo_root: Path):
    path = bop_io.scene_dir(lmo_root, SCENE)
    return (path, bop_io.load_scene_camera(path / "scene_camera.json"), bop_io.load_scene_gt(path / "scene_gt.json"),
            bop_io.load_scene_gt_info(path / "scene_gt_info.json"))


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
def test_make_writes_a_readable_bag(lmo_root, tmp_path, fmt):
    from rosbags.rosbag2 import Reader

    out = tmp_path / f"bag_{fmt}"
    _make(lmo_root, out, "--format", fmt, "--max-images", "3", "--box-seed", "3", "--rate", "4")
    scene_path, cams, scene_gt, scene_info = _scene(lmo_root)
    im_ids = bop_io.load_splits(lmo_root / "splits.json")["val"][:3]
    store = bagmod.make_typestore()

    import yaml

    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == fmt
    assert [p.suffix for p in out.iterdir() if p.suffix in (".mcap", ".db3")] == [{"mcap": ".mcap"}.get(fmt, ".db3")]
    with Reader(out) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/camera/image": "sensor_msgs/msg/Image",
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
            "/detections": "vision_msgs/msg/Detection2DArray",
        }
        assert {c.topic: c.msgcount for c in reader.connections} == dict.fromkeys(
            ("/camera/image", "/camera/camera_info", "/detections"), 3)
        by_topic: dict[str, list] = {}
        for conn, t_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert stamp == t_ns  # recorded at its stamp
            assert msg.header.frame_id == "camera_color_optical_frame"
            by_topic.setdefault(conn.topic, []).append((stamp, msg))

    stamps = [s for s, _ in by_topic["/camera/image"]]
    assert stamps == [s for s, _ in by_topic["/camera/camera_info"]] == [s for s, _ in by_topic["/detections"]]
    assert np.diff(stamps).tolist() == [250_000_000] * 2  # --rate 4
    gt = json.loads((out / bagmod.GT_FILE).read_text())
    assert gt["scene_id"] == SCENE and gt["split"] == "val" and Path(gt["dataset"]) == lmo_root.resolve()
    assert [f["im_id"] for f in gt["frames"]] == im_ids
    assert [f["stamp"]["sec"] * 10**9 + f["stamp"]["nanosec"] for f in gt["frames"]] == stamps

    for k, im_id in enumerate(im_ids):
        rgb = bop_io.read_rgb(bop_io.find_rgb(scene_path, im_id))
        height, width = rgb.shape[:2]
        image = by_topic["/camera/image"][k][1]
        assert (image.encoding, image.height, image.width, image.step, image.is_bigendian) == (
            "rgb8", height, width, width * 3, 0)
        assert np.array_equal(np.asarray(image.data).reshape(height, width, 3), rgb)

        info = by_topic["/camera/camera_info"][k][1]
        K = cams[im_id].K
        assert (info.width, info.height, info.distortion_model) == (width, height, "plumb_bob")
        assert np.array_equal(info.k.reshape(3, 3), K) and not np.any(info.d)
        assert np.array_equal(info.p.reshape(3, 4)[:, :3], K) and not np.any(info.p.reshape(3, 4)[:, 3])

        # the boxes of dsc-pose-predict (its own function), same seed, same order
        expected = gt_detections(scene_gt, scene_info, SCENE, im_id, width, height, 3)
        dets = by_topic["/detections"][k][1].detections
        assert len(dets) == len(expected) > 0
        for det, exp in zip(dets, expected):
            x, y, w, h = (float(v) for v in exp.box_xywh)
            assert det.results[0].hypothesis.class_id == str(exp.obj_id)
            assert det.results[0].hypothesis.score == 1.0
            assert (det.bbox.size_x, det.bbox.size_y) == (w, h)
            assert (det.bbox.center.position.x, det.bbox.center.position.y) == (x + w / 2, y + h / 2)
            im, inst = det.id.split(":")
            assert int(im) == im_id and scene_gt[im_id][int(inst)].obj_id == exp.obj_id
        assert [d["box_xywh"] for d in gt["frames"][k]["detections"]] == [
            [int(v) for v in e.box_xywh] for e in expected]

        # ground truth in BOP units beside the bag
        assert len(gt["frames"][k]["gt"]) == len(scene_gt[im_id])
        for g, pose in zip(gt["frames"][k]["gt"], scene_gt[im_id]):
            assert g["obj_id"] == pose.obj_id
            assert np.allclose(g["R"], pose.R.reshape(9)) and np.allclose(g["t"], pose.t * 1000.0)


def test_class_ids_and_names_map_to_object_ids():
    resolve = bagmod._class_resolver(str(REPO / "config" / "objects.yaml"))
    assert resolve("5") == 5 and resolve("can") == 5 and resolve("holepuncher") == 12
    assert resolve("no_such_object") is None


def test_eval_bad_input_exits_2(lmo_root, tmp_path):
    require_ros("rclpy", "vision_msgs.msg")
    cmd = [sys.executable, "-m", "dsc_pose_ros.bag", "eval", "--out", str(tmp_path / "r")]
    proc = subprocess.run([*cmd, "--bag", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "error: not a rosbag2 folder" in proc.stderr, proc.stderr

    # a node that refuses its parameters: exit 2 with the node's own error in the message
    bag = tmp_path / "bag"
    _make(lmo_root, bag, "--max-images", "1")
    proc = subprocess.run([*cmd, "--bag", str(bag), "--node-arg", "-p init:=bogus", "--startup-timeout", "60"],
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode == 2, proc.stderr
    assert "the node exited with code 2" in proc.stderr and "init" in proc.stderr.split("node output")[-1], proc.stderr


def test_replay_through_the_node_matches_the_pipeline(lmo_root, tmp_path):
    """All 50 LM-O val frames replayed through the real node (init box, no refinement) give the
    poses of calling the pipeline directly on the same images and boxes; every frame is answered and
    the node stops cleanly on SIGINT.

    The replay runs at 5 Hz (rate 10 x 0.5; the pipeline needs ~50 ms per frame here) with the
    node's default best-effort sensor QoS (config/fastdds.xml lets user data use shared memory)."""
    require_ros("rclpy", "sensor_msgs.msg", "vision_msgs.msg")
    bag, report_dir = tmp_path / "lmo_val", tmp_path / "report"
    _make(lmo_root, bag)
    cmd = [sys.executable, "-m", "dsc_pose_ros.bag", "eval", "--bag", str(bag), "--out", str(report_dir),
           "--rate-scale", "0.5", "--startup-timeout", "90", "--node-arg", "-p init:=box"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=subprocess_env())
    log = (report_dir / "node.log").read_text() if (report_dir / "node.log").is_file() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\nnode log:\n{log[-3000:]}"

    report = json.loads((report_dir / "report.json").read_text())
    assert report["frames"] == {"sent": 50, "answered": 50, "dropped": 0, "unexpected_answers": 0,
                                "duplicate_answers": 0}, report["frames"]
    assert report["node"]["alive_at_end"] and report["node"]["stopped_by"] == "SIGINT"
    assert report["node"]["returncode"] == 0 and not report["node"]["died_during_replay"]
    assert "init:=box" in report["node"]["command"] and "image:=/camera/image" in report["node"]["command"]
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] < 5000
    assert report["throughput_fps"] > 0
    acc = report["accuracy"]
    for key in bagmod.ACCURACY_KEYS:
        assert 0.0 <= acc[key] <= 1.0
    assert set(acc["per_object"]) == {"1", "5", "6", "8", "9", "10", "11", "12"}
    assert (report_dir / "report.md").read_text().startswith("# dsc-pose-bag eval")

    got = {(e.im_id, e.obj_id): e for e in bop_io.read_bop_results(report_dir / "results.csv")}

    # the same frames through the pipeline in this process
    import torch

    from dsc_pose_core.pipeline import PipelineConfig, load_pose_estimator

    torch.set_num_threads(1)
    scene_path, cams, scene_gt, scene_info = _scene(lmo_root)
    im_ids = bop_io.load_splits(lmo_root / "splits.json")["val"]
    expected = {}
    with load_pose_estimator(REPO / "config" / "objects.yaml", PipelineConfig(init="box", refine_iterations=0)) as est:
        for im_id in im_ids:
            rgb = bop_io.read_rgb(bop_io.find_rgb(scene_path, im_id))
            dets = gt_detections(scene_gt, scene_info, SCENE, im_id, rgb.shape[1], rgb.shape[0], 0)
            for r in est.estimate(rgb, cams[im_id].K, dets):
                if r.ok:
                    assert (im_id, r.obj_id) not in expected  # LM-O: one instance per object and image
                    expected[(im_id, r.obj_id)] = r
    assert len(expected) > 300
    assert sorted(got) == sorted(expected)
    for key, r in expected.items():
        e = got[key]
        assert np.abs(e.t - r.t).max() < 1e-4, (key, e.t, r.t)
        assert np.abs(e.R - r.R).max() < 1e-4, (key, e.R, r.R)
        assert abs(e.score - r.score) < 1e-6, key
        assert e.scene_id == SCENE and e.time > 0


def test_eval_tracking_flag_starts_the_node_with_tracking():
    from dsc_pose_ros.bag import build_parser, node_command

    topics = {"image": "/i", "camera_info": "/c", "detections": "/d"}
    args = build_parser().parse_args(["eval", "--bag", "b", "--out", "o", "--tracking", "--node-arg", "-p align:=after"])
    cmd = node_command(args, topics)
    assert cmd[cmd.index("tracking:=true") - 1] == "-p" and cmd.index("tracking:=true") < cmd.index("align:=after")
    plain = node_command(build_parser().parse_args(["eval", "--bag", "b", "--out", "o"]), topics)
    assert "tracking:=true" not in plain


def test_eval_gives_the_node_the_bags_objects_and_keeps_a_users_params_file():
    from dsc_pose_ros.bag import build_parser, node_command
    from dsc_pose_ros.params import resolve_path

    topics = {"image": "/i", "camera_info": "/c", "detections": "/d"}
    pose, lmo = str(resolve_path("config/pose.yaml")), str(resolve_path("config/lmo.yaml"))
    args = build_parser().parse_args(["eval", "--bag", "b", "--out", "o"])
    args.params_file = pose  # as eval resolves the default
    cmd = node_command(args, topics)
    assert cmd[cmd.index(pose) + 1:cmd.index(pose) + 3] == ["--params-file", lmo]  # LM-O after the defaults
    args = build_parser().parse_args(["eval", "--bag", "b", "--out", "o", "--registry", "config/demo/objects.yaml"])
    args.params_file = pose
    cmd = node_command(args, topics)
    assert lmo not in cmd and any(a.startswith("registry:=") and a.endswith("config/demo/objects.yaml") for a in cmd)
    args = build_parser().parse_args(["eval", "--bag", "b", "--out", "o", "--params-file", "mine.yaml"])
    cmd = node_command(args, topics)
    assert lmo not in cmd and not any(a.startswith("registry:=") for a in cmd)
