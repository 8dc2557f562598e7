"""`make demo`'s command on a tiny scene: demo object, synthetic scene, bag, live node, report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from ros_helpers import require_ros
from dsc_pose_ros.ros_env import subprocess_env


def test_demo_object_is_a_valid_bop_model(tmp_path):
    from dsc_pose_core.objects.demo_object import DEMO_NAME, write_demo_models, write_demo_registry
    from dsc_pose_core.objects.registry import ObjectRegistry

    models = write_demo_models(tmp_path / "models")
    registry = ObjectRegistry.from_yaml(write_demo_registry(tmp_path / "objects.yaml", models))
    entry = registry.by_name(DEMO_NAME)
    mesh = entry.mesh
    assert entry.obj_id == 1 and len(mesh.vertices) > 1000
    extent = np.ptp(np.asarray(mesh.vertices), axis=0)
    assert np.allclose(extent, [0.12, 0.05, 0.09], atol=1e-3)  # metres
    assert 0.12 < entry.model_info.diameter < 0.17 and not entry.model_info.is_symmetric
    info = json.loads((models / "models_info.json").read_text())["1"]
    assert abs(info["size_x"] - 120.0) < 1e-6  # millimetres, like BOP


def test_demo_runs_end_to_end(tmp_path, ros_session_env):
    require_ros("rclpy", "vision_msgs.msg")
    out = tmp_path / "demo"
    # leftovers of an earlier run (an older generator, another bag) must not be replayed
    (out / "bag").mkdir(parents=True)
    (out / "bag" / "dsc_pose_gt.json").write_text("{}")
    (out / "scene" / "test" / "000001" / "rgb").mkdir(parents=True)
    (out / "scene" / "test" / "000001" / "rgb" / "000000.png").write_bytes(b"stale")
    (out / "models").mkdir()
    (out / "models" / "models_info.json").write_text("{}")
    cmd = [sys.executable, "-m", "dsc_pose_ros.demo", "--out", str(out), "--images", "4", "--overlays", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["frames"]["sent"] == 4 and report["frames"]["answered"] == 4
    assert (out / "bag" / "dsc_pose_gt.json").read_text() != "{}"
    assert (out / "scene" / "test" / "000001" / "rgb" / "000000.png").read_bytes() != b"stale"
    assert (out / "models" / "models_info.json").read_text() != "{}"
    assert report["accuracy"] is not None and "ADD-S_0.1d" in report["accuracy"]
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert "== dsc_pose demo" in proc.stdout and "latency (ms)" in proc.stdout
    # the node ran the shipped DSC-PoseNet checkpoint, not the box initialiser
    assert "demo checkpoint: " in proc.stdout and "-p init:=dsc" in proc.stdout


def test_shipped_demo_checkpoint_is_compact_and_serves_the_demo_object(tmp_path):
    from dsc_pose_core.objects.demo_object import DEMO_OBJ_ID, write_demo_models, write_demo_registry
    from dsc_pose_core.objects.registry import ObjectRegistry
    from dsc_pose_core.pipeline import PipelineConfig, PoseEstimator, find_dsc_checkpoint
    from dsc_pose_ros.demo import DEMO_CHECKPOINTS
    import torch

    path = find_dsc_checkpoint(DEMO_CHECKPOINTS, DEMO_OBJ_ID)
    assert path is not None and path.stat().st_size < 10e6
    payload = torch.load(path, weights_only=True)
    assert payload["compact"] and payload["obj_ids"] == [DEMO_OBJ_ID] and not payload["resume"]
    shipped = sum(f.stat().st_size for f in DEMO_CHECKPOINTS.parent.rglob("*.pt"))
    assert shipped < 100e6  # the repository's checkpoints stay small
    registry = ObjectRegistry.from_yaml(write_demo_registry(tmp_path / "objects.yaml",
                                                            write_demo_models(tmp_path / "models")))
    with PoseEstimator(registry, PipelineConfig(init="dsc", dsc_checkpoints=str(DEMO_CHECKPOINTS),
                                                refine_iterations=0)) as estimator:
        assert DEMO_OBJ_ID in estimator.dsc
