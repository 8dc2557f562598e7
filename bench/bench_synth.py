"""Benchmark: synthetic BOP data throughput on LM-O objects, recorded in docs/BENCHMARKS.md.

Renders a 200-image dataset of the eight LM-O objects (1, 5, 6, 8, 9, 10, 11, 12; full-resolution
``models/`` meshes; 640x480, LM-O intrinsics; 3 objects per image; up to 2 distractors; depth with
the sensor noise model; photometric augmentation) with ``generate_dataset`` = ``dsc-pose-synth``, and
writes the ``bench_synth`` section of ``docs/BENCHMARKS.md``: total time (including loading the meshes
and creating the OpenGL context), images per second, machine, command, commit.

Usage: ``python bench/bench_synth.py [--out DIR] [--n-images 200] [--models DIR] [--no-write]``
(a temporary folder is used and removed unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import cpu_model, git_commit, write_section  # noqa: E402
from dsc_pose_core.data.bop_io import default_lmo_dir, load_scene_gt_info  # noqa: E402
from dsc_pose_core.data.synthetic import (  # noqa: E402
    DistractorConfig,
    GenerationReport,
    SynthConfig,
    SyntheticSceneGenerator,
    generate_dataset,
)

START = "<!-- bench_synth:start -->"
END = "<!-- bench_synth:end -->"
OBJECTS = (1, 5, 6, 8, 9, 10, 11, 12)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=str(default_lmo_dir() / "models"))
    p.add_argument("--out", help="dataset folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--objects-per-image", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only, do not touch docs/")
    args = p.parse_args(argv)
    tmp = None
    out = Path(args.out) if args.out else Path(tmp := tempfile.mkdtemp(prefix="bench_synth_")) / "lmo_synt"
    if out.exists() and any(out.iterdir()):
        print(f"bench_synth: error: {out} is not empty (the benchmark must render every image)", file=sys.stderr)
        return 2
    config = SynthConfig(models_dir=args.models, obj_ids=OBJECTS, out_dir=str(out), n_images=args.n_images,
                         seed=args.seed, objects_per_image=args.objects_per_image, depth=True, depth_noise=True,
                         distractors=DistractorConfig(0, 2), progress=True)
    try:
        t0 = time.perf_counter()
        generator = SyntheticSceneGenerator(config)
        t_setup = time.perf_counter() - t0
        renderer_name = generator.renderer.gl_renderer
        report = GenerationReport(out)
        generate_dataset(config, generator=generator, report=report)
        generator.close()
        total = time.perf_counter() - t0
        infos = load_scene_gt_info(out / config.split / "000000" / "scene_gt_info.json")
        n_inst = sum(len(v) for v in infos.values())
        mean_visib = sum(i.visib_fract for v in infos.values() for i in v) / max(1, n_inst)
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    n = len(report.rendered)
    cmd = (f"python bench/bench_synth.py (= dsc-pose-synth --models {os.path.relpath(args.models, REPO)} "
           f"--obj-ids {','.join(map(str, OBJECTS))} --n-images {args.n_images} --objects-per-image "
           f"{args.objects_per_image} --distractors 2 --depth-noise --seed {args.seed} --out DIR)")
    section = "\n".join([
        START,
        "## Synthetic data (`bench/bench_synth.py`)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores (CPU only; OpenGL: {renderer_name}), "
        f"Python {platform.python_version()}",
        f"- Command: `{cmd}`",
        "- Data: LM-O objects 1, 5, 6, 8, 9, 10, 11, 12 (full-resolution `models/` meshes), 640x480, LM-O "
        f"intrinsics, {args.objects_per_image} objects per image (min visib_fract 0.1), 0-2 distractors, "
        "depth with sensor noise, photometric augmentation; written as BOP `train_synt/000000` (png)",
        f"- Commit: {git_commit()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| images | {n} ({n_inst} annotated instances, mean visib_fract {mean_visib:.3f}) |",
        f"| total wall time | {total:.1f} s (set-up: meshes + OpenGL context {t_setup:.1f} s) |",
        f"| throughput | {n / total:.2f} images/s overall, {n / max(report.seconds, 1e-9):.2f} images/s "
        f"after set-up |",
        f"| dataset size | {size_mb:.1f} MB |",
        END,
    ])
    print(section)
    if not args.no_write:
        write_section(section, START, END)
    return 0



if __name__ == "__main__":
    sys.exit(main())
