"""Crash safety of the training CLI: a DeepIM run killed with SIGKILL resumes from its last good
checkpoint with `--resume` and finishes; a half-written temporary file left by the kill is ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml

from dsc_pose_core.objects.demo_object import write_demo_models, write_demo_registry
from dsc_pose_core.checkpoint import read_checkpoint

STEPS = 16


def _config(tmp_path):
    registry = write_demo_registry(tmp_path / "objects.yaml", write_demo_models(tmp_path / "models"))
    config = {"stage": "deepim", "out": str(tmp_path / "run"), "seed": 0, "device": "cpu", "threads": 1,
              "deepim": {"objects_file": str(registry),
                         "data": {"width": 160, "height": 120, "objects_per_image": 1, "distractors": 0,
                                  "K": [143.1, 0.0, 81.3, 0.0, 143.4, 60.5, 0.0, 0.0, 1.0], "distance": [0.4, 0.6]},
                         "model": {"width": 0.125}, "zoom": {"width": 64, "height": 48},
                         "loss": {"n_points": 200},
                         "optim": {"steps": STEPS, "batch_size": 2, "lr": 1e-3, "train_iter": 1},
                         "checkpoint_every": 2, "log_every": 1}}
    path = tmp_path / "tiny_deepim.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, tmp_path / "run" / "checkpoints" / "deepim_last.pt"


def test_sigkill_then_resume_finishes_from_the_last_good_checkpoint(tmp_path, repo_root):
    config, last = _config(tmp_path)
    cmd = [sys.executable, str(repo_root / "training" / "train.py"), "--config", str(config)]
    proc = subprocess.Popen(cmd, cwd=str(repo_root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                step = int(read_checkpoint(last).resume["step"])
            except Exception:  # being replaced right now: atomic, so retry
                step = 0
            if step >= 4:
                break
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-2000:]}"
    assert 4 <= step < STEPS, step
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(read_checkpoint(last).resume["step"])  # the last good checkpoint is intact
    assert 4 <= killed_at < STEPS
    (last.parent / ".deepim_last.pt.crash.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    resumed = subprocess.run(cmd + ["--resume", str(last)], cwd=str(repo_root), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {last} (step {killed_at})" in resumed.stdout + resumed.stderr
    assert int(read_checkpoint(last).resume["step"]) == STEPS
    for checkpoint in last.parent.glob("*.pt"):  # no stray file became a checkpoint; every one loads
        assert int(read_checkpoint(checkpoint).resume["step"]) <= STEPS
