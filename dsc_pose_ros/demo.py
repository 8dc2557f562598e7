"""``dsc-pose-demo`` (``make demo``): the product on its embedded default, no dataset needed.

1. writes the demo object (``dsc_pose_core.objects.demo_object``: mesh, models_info, registry);
2. renders a small synthetic test scene of it with ground truth (``dsc-pose-synth``);
3. records it as a rosbag2 with loosened 2D boxes as detections (``dsc-pose-bag make``);
4. starts the pose node on the demo registry with the shipped DSC-PoseNet checkpoint of the demo object
   (``checkpoints/demo/dsc_posenet/obj_000001.pt``, trained by ``config/train/demo_chain_cpu.yaml``),
   replays the bag into it and scores what it publishes (``dsc-pose-bag eval``: accuracy, latency, drops);
5. draws the estimates over the first frames (``dsc-pose-viz``).
Every step prints the command it runs; outputs go to ``--out`` (default ``out/demo``); steps whose
outputs exist are reused, so a second run only replays and scores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .params import REPO_ROOT, resolve_path

SCENE_ID = 1
# the checkpoint folder shipped for the demo object (pipeline layout: dsc_posenet/obj_000001.pt)
DEMO_CHECKPOINTS = resolve_path("checkpoints/demo")


def _run(cmd: list[str], env=None) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=str(REPO_ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsc-pose-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--images", type=int, default=20, help="frames in the demo scene (default 20)")
    p.add_argument("--rate", type=float, default=10.0, help="replay rate in Hz (default 10)")
    p.add_argument("--node-arg", action="append", default=[],
                   help="extra ROS args for the node after the demo's own (init dsc with the shipped checkpoint), "
                        "e.g. '-p init:=box'")
    p.add_argument("--overlays", type=int, default=4, help="overlay pictures to write (default 4)")
    return p


def main(argv=None) -> int:
    from dsc_pose_core.objects.demo_object import DEMO_OBJ_ID, write_demo_models, write_demo_registry

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out = out if out.is_absolute() else REPO_ROOT / out
    t0 = time.time()
    py = sys.executable
    # the demo object, its scene and bag are made afresh every run (seconds): copies left by an older
    # version of the generators would be replayed instead and change the numbers
    models = out / "models"
    shutil.rmtree(models, ignore_errors=True)
    write_demo_models(models)
    registry = write_demo_registry(out / "objects.yaml", models)
    print(f"demo object: {models} (registry {registry})", flush=True)
    scene = out / "scene"
    shutil.rmtree(scene, ignore_errors=True)
    _run([py, "-m", "dsc_pose_core.data.synth_cli", "--models", str(models), "--obj-ids", str(DEMO_OBJ_ID),
          "--n-images", str(args.images), "--out", str(scene), "--seed", "0", "--split", "test",
          "--scene-id", str(SCENE_ID), "--objects-per-image", "1", "--distractors", "3", "--distance", "0.45,0.9",
          "--elevation", "10,70", "--min-visib", "0.6", "--no-progress"])
    bag = out / "bag"
    shutil.rmtree(bag, ignore_errors=True)
    _run([py, "-m", "dsc_pose_ros.bag", "make", "--dataset", str(scene), "--scene", str(SCENE_ID),
          "--out", str(bag), "--rate", str(args.rate)])
    report = out / "report"
    shutil.rmtree(report, ignore_errors=True)
    from dsc_pose_core.pipeline import find_dsc_checkpoint

    checkpoint = find_dsc_checkpoint(DEMO_CHECKPOINTS, DEMO_OBJ_ID)
    if checkpoint is None:
        print(f"dsc-pose-demo: error: the shipped demo checkpoint is missing from {DEMO_CHECKPOINTS} "
              "(docs/TRAINING.md: 'The demo checkpoint' retrains it)", file=sys.stderr)
        return 2
    print(f"demo checkpoint: {checkpoint}", flush=True)
    node_args = ["-p registry:=" + str(registry), "-p init:=dsc", "-p checkpoints:=" + str(DEMO_CHECKPOINTS),
                 "-p refine_iterations:=0"] + list(args.node_arg)
    cmd = [py, "-m", "dsc_pose_ros.bag", "eval", "--bag", str(bag), "--out", str(report), "--registry", str(registry)]
    for a in node_args:
        cmd += ["--node-arg", a]
    try:
        _run(cmd)
    except subprocess.CalledProcessError as exc:
        print(f"dsc-pose-demo: error: the replay failed (exit {exc.returncode}); see {report / 'node.log'}",
              file=sys.stderr)
        return 2
    overlays = out / "overlays"
    shutil.rmtree(overlays, ignore_errors=True)
    _run([py, "-m", "dsc_pose_core.viz.cli", "--dataset", str(scene), "--scene", str(SCENE_ID),
          "--results", str(report / "results.csv"), "--max-images", str(args.overlays), "--out", str(overlays)])
    summary = json.loads((report / "report.json").read_text())
    overall = summary.get("accuracy") or {}
    lat = summary.get("latency_ms", {})
    frames = summary.get("frames", {})
    print("\n== dsc_pose demo", flush=True)
    print(f"frames: sent {frames.get('sent')}, answered {frames.get('answered')}, dropped {frames.get('dropped')}")
    print("latency (ms): " + ", ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p99") if k in lat))
    print("accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in overall.items() if isinstance(v, (int, float))))
    print(f"report: {report / 'report.md'}; overlays: {overlays}; {time.time() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
