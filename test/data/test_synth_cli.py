"""``dsc-pose-synth`` as a user runs it: a subprocess on a few tiny images."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import cv2
import numpy as np

from dsc_pose_core.data import bop_io


def test_console_scripts_are_registered():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("dsc-pose-synth") == "dsc_pose_core.data.synth_cli:main"
    assert scripts.get("dsc-pose-viz") == "dsc_pose_core.viz.cli:main"


def test_cli_writes_a_bop_dataset_and_resumes(tiny_models, tmp_path):
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps({"cx": 159.5, "cy": 119.5, "fx": 300.0, "fy": 300.0, "width": 320, "height": 240,
                                  "depth_scale": 0.1}))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "dsc_pose_core.data.synth_cli", "--models", str(tiny_models), "--obj-ids", "1,2",
           "--n-images", "3", "--out", str(out), "--seed", "3", "--camera", str(camera), "--width", "160",
           "--height", "120", "--objects-per-image", "2", "--depth-noise", "--distractors", "1",
           "--distance", "0.2,0.4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rendered 3 images" in proc.stdout
    scene = out / "train_synt" / "000000"
    gt = bop_io.load_scene_gt(scene / "scene_gt.json")
    cams = bop_io.load_scene_camera(scene / "scene_camera.json")
    assert sorted(gt) == [0, 1, 2] and all(len(v) == 2 for v in gt.values())
    # K was rescaled from 320x240 to 160x120 (pixel centres at integers)
    np.testing.assert_allclose(cams[0].K, [[150, 0, 79.5], [0, 150, 59.5], [0, 0, 1]])
    assert cams[0].depth_scale == 0.1
    assert cv2.imread(str(scene / "rgb" / "000002.png")).shape == (120, 160, 3)
    assert cv2.imread(str(scene / "depth" / "000002.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "rendered 0 images, skipped 3" in again.stdout


def test_cli_reports_bad_input(tiny_models, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dsc_pose_core.data.synth_cli", "--models", str(tiny_models),
                           "--obj-ids", "1,77", "--n-images", "1", "--out", str(tmp_path / "x"), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "obj_000077.ply" in proc.stderr and "Traceback" not in proc.stderr
