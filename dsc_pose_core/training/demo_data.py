"""A small fitting dataset of the embedded demo object, for the tiny stage chain and its test.

``python -m dsc_pose_core.training.demo_data out/demo_fit [--train 4] [--val 2]`` writes
``out/demo_fit/objects.yaml`` (registry), ``models/`` (the mesh) and ``dataset/`` (a BOP dataset:
``test/000000`` rendered with ``dsc-pose-synth`` with ground truth, and ``splits.json`` with the
``train_real`` and ``val`` image ids). Training reads only the RGB images and 2D boxes of
``train_real``; ``val`` has ground truth for the evaluation stage. Re-running is cheap: the renderer
skips finished images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..objects.demo_object import DEMO_OBJ_ID, write_demo_models, write_demo_registry

SCENE_ID = 0


def write_demo_fit_data(root: str | Path, n_train: int = 4, n_val: int = 2, seed: int = 0) -> dict[str, Path]:
    from ..data.synth_cli import main as synth

    if n_train < 1 or n_val < 1:
        raise ValueError("need at least one training and one validation image")
    root = Path(root)
    models = root / "models"
    if not (models / "models_info.json").is_file():
        write_demo_models(models)
    registry = write_demo_registry(root / "objects.yaml", models)
    dataset = root / "dataset"
    code = synth(["--models", str(models), "--obj-ids", str(DEMO_OBJ_ID), "--n-images", str(n_train + n_val),
                  "--out", str(dataset), "--seed", str(seed), "--split", "test", "--scene-id", str(SCENE_ID),
                  "--objects-per-image", "1", "--distractors", "2", "--distance", "0.45,0.8",
                  "--elevation", "10,70", "--min-visib", "0.6", "--no-progress"])
    if code:
        raise RuntimeError(f"dsc-pose-synth failed with exit code {code}")
    ids = list(range(n_train + n_val))
    (dataset / "splits.json").write_text(json.dumps({"train_real": ids[:n_train], "val": ids[n_train:]}) + "\n")
    return {"registry": registry, "models": models, "dataset": dataset}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dsc_pose_core.training.demo_data", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (e.g. out/demo_fit)")
    p.add_argument("--train", type=int, default=4, help="train_real images (default 4)")
    p.add_argument("--val", type=int, default=2, help="val images (default 2)")
    args = p.parse_args(argv)
    try:
        paths = write_demo_fit_data(args.out, args.train, args.val)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"demo_data: error: {exc}", file=sys.stderr)
        return 2
    print(f"registry {paths['registry']}, dataset {paths['dataset']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
