"""The dsc-pose-eval command line, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_cli(repo_root, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo_root) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "dsc_pose_core.eval.cli", *map(str, args)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_json_report(lmo_root, repo_root, tmp_path):
    out = tmp_path / "report.json"
    proc = run_cli(
        repo_root,
        "--dataset", lmo_root,
        "--results", lmo_root / "reference" / "gt_lmo-test.csv",
        "--split", "val",
        "--json", out,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    for key in ("AR_MSSD", "AR_MSPD", "AR_VSD", "ADD-S_0.1d", "5cm5deg", "proj2d_5px", "per_object"):
        assert key in report, key
    assert report["AR_VSD"] is None
    assert report["AR_MSSD"] == 1.0 and report["AR_MSPD"] == 1.0
    assert report["counts"]["images"] == 50  # the val split only
    assert "AR_MSSD" in proc.stdout and "obj" in proc.stdout


def test_cli_missing_file_is_one_clear_line(lmo_root, repo_root, tmp_path):
    proc = run_cli(repo_root, "--dataset", lmo_root, "--results", tmp_path / "nope.csv")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0] and "nope.csv" in lines[0]
    proc = run_cli(repo_root, "--dataset", tmp_path / "no_dataset", "--results", tmp_path / "x.csv")
    assert proc.returncode == 2 and "dataset directory not found" in proc.stderr


def test_cli_malformed_csv_exits_2(lmo_root, repo_root, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("scene_id,im_id,obj_id,score,R,t,time\n2,3,1,0.5,1 0 0,0 0 1000,1\n")
    proc = run_cli(repo_root, "--dataset", lmo_root, "--results", bad)
    assert proc.returncode == 2
    assert f"{bad}:2" in proc.stderr and "R has 3 numbers" in proc.stderr
