"""``dsc-pose-synth``: render a synthetic BOP dataset of some objects (see ``data/synthetic.py``).

Example::

    dsc-pose-synth --models ../shared/data/lmo/models --obj-ids 1,5 --n-images 1000 \\
        --out data/synth_lmo --seed 0 --objects-per-image 3 --depth --depth-noise

Writes ``OUT/train_synt/000000/{rgb,depth,mask,mask_visib}`` and ``scene_{gt,gt_info,camera}.json``
(BOP format), ``OUT/camera.json``, ``OUT/models/`` and ``OUT/synth_config.json``. Re-running the
same command resumes: finished images are skipped and the rest come out byte-identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _int_list(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("no object ids given")
    return out


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"empty range {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    from .synthetic import DEFAULT_SPLIT

    p = argparse.ArgumentParser(prog="dsc-pose-synth", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", required=True, help="BOP models folder (obj_XXXXXX.ply in mm + models_info.json)")
    p.add_argument("--obj-ids", required=True, type=_int_list, help="object ids, e.g. 1,5,6")
    p.add_argument("--n-images", required=True, type=int)
    p.add_argument("--out", required=True, help="dataset folder to write (or resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--camera", help="BOP camera.json {cx, cy, fx, fy, width, height, depth_scale} "
                   "(default: LM-O intrinsics, 640x480, depth_scale 0.1)")
    p.add_argument("--width", type=int, help="image width (K is rescaled from the camera's size)")
    p.add_argument("--height", type=int, help="image height (K is rescaled from the camera's size)")
    p.add_argument("--objects-per-image", type=int, default=1)
    p.add_argument("--min-visib", type=float, default=0.1, help="minimum visible fraction of each object")
    p.add_argument("--depth", action="store_true", help="write depth/ images (uint16, BOP depth_scale)")
    p.add_argument("--depth-noise", action="store_true", help="apply the depth sensor noise model (implies --depth)")
    p.add_argument("--distractors", type=int, default=0, help="up to this many random distractor shapes per image")
    p.add_argument("--distance", type=_range, default=(0.35, 1.5), help="object depth range MIN,MAX (m)")
    p.add_argument("--elevation", type=_range, default=(-15.0, 90.0), help="elevation range MIN,MAX (deg)")
    p.add_argument("--cluster-radius", type=float, default=0.0,
                   help="place the objects of an image within this distance (m) of a common centre, "
                   "touching and occluding like real clutter (0 = scattered)")
    p.add_argument("--no-augment", action="store_true", help="no colour jitter, blur or pixel noise")
    p.add_argument("--backgrounds", default="photo,noise,gradient,stripes,checker",
                   help="background kinds to draw from (add 'folder' to use --background-dir)")
    p.add_argument("--background-dir", default="", help="folder of png/jpg photographs for background kind 'folder'")
    p.add_argument("--object-jitter", type=float, default=0.0,
                   help="per-object colour randomisation strength (0 = off; e.g. 0.3)")
    p.add_argument("--rgb-ext", choices=("png", "jpg"), default="png")
    p.add_argument("--split", default=DEFAULT_SPLIT, help="split folder name")
    p.add_argument("--scene-id", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def synth_config(models, obj_ids, out, n_images: int, *, seed: int = 0, camera: str | None = None,
                 width: int | None = None, height: int | None = None, objects_per_image: int = 1,
                 min_visib: float = 0.1, depth: bool = False, depth_noise: bool = False, distractors: int = 0,
                 distance: tuple[float, float] = (0.35, 1.5), elevation: tuple[float, float] = (-15.0, 90.0),
                 cluster_radius: float = 0.0, augment: bool = True,
                 backgrounds: str = "photo,noise,gradient,stripes,checker", background_dir: str = "",
                 object_jitter: float = 0.0, rgb_ext: str = "png", split: str | None = None, scene_id: int = 0,
                 progress: bool = True) -> "SynthConfig":
    """The generator's typed config from the command's settings (same names and defaults as its flags);
    ``dsc-pose-synth`` and the trainers (``training.common.ensure_synthetic``) both build it here."""
    from ..data import bop_io
    from .augment import AugmentConfig
    from .synthetic import DEFAULT_SPLIT, LMO_K, DistractorConfig, PoseSamplingConfig, SynthConfig, scale_intrinsics

    if camera:
        cam = bop_io.load_camera_json(camera)
        K, size, depth_scale = cam.K, (cam.width, cam.height), cam.depth_scale
    else:
        K, size, depth_scale = np.asarray(LMO_K).reshape(3, 3), (640, 480), 0.1
    width = width or size[0]
    height = height or size[1]
    if (width, height) != size:
        K = scale_intrinsics(K, size, (width, height))
    return SynthConfig(
        models_dir=str(models), obj_ids=tuple(int(o) for o in obj_ids), out_dir=str(out), n_images=int(n_images),
        seed=int(seed), width=width, height=height, K=tuple(float(v) for v in np.asarray(K).reshape(9)),
        depth_scale=float(depth_scale), objects_per_image=int(objects_per_image), min_visib_fract=float(min_visib),
        depth=bool(depth or depth_noise), depth_noise=bool(depth_noise),
        pose=PoseSamplingConfig(distance=tuple(float(v) for v in distance),
                                elevation_deg=tuple(float(v) for v in elevation), cluster_radius=float(cluster_radius)),
        distractors=DistractorConfig(min_count=0, max_count=max(0, int(distractors))),
        augment=AugmentConfig() if augment else AugmentConfig.off(),
        background_kinds=tuple(k for k in backgrounds.split(",") if k), background_dir=str(background_dir),
        object_jitter=float(object_jitter), rgb_ext=rgb_ext, split=split or DEFAULT_SPLIT, scene_id=int(scene_id),
        progress=bool(progress))


def config_from_args(args) -> "SynthConfig":
    return synth_config(
        args.models, args.obj_ids, args.out, args.n_images, seed=args.seed, camera=args.camera, width=args.width,
        height=args.height, objects_per_image=args.objects_per_image, min_visib=args.min_visib, depth=args.depth,
        depth_noise=args.depth_noise, distractors=args.distractors, distance=args.distance, elevation=args.elevation,
        cluster_radius=args.cluster_radius, augment=not args.no_augment, backgrounds=args.backgrounds,
        background_dir=args.background_dir, object_jitter=args.object_jitter, rgb_ext=args.rgb_ext, split=args.split,
        scene_id=args.scene_id, progress=not args.no_progress)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..objects.mesh import MeshLoadError
    from ..render import RendererUnavailableError
    from .bop_io import BopFormatError
    from .synthetic import GenerationReport, generate_dataset

    try:
        config = config_from_args(args)
        report = GenerationReport(Path(config.out_dir))
        out = generate_dataset(config, report=report)
    except (FileNotFoundError, MeshLoadError, BopFormatError, ValueError, RendererUnavailableError) as exc:
        print(f"dsc-pose-synth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dsc-pose-synth: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    n = len(report.rendered)
    rate = n / report.seconds if report.seconds > 0 and n else 0.0
    print(f"dsc-pose-synth: {out}: rendered {n} images, skipped {len(report.skipped)} finished ones "
          f"in {report.seconds:.1f} s ({rate:.2f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
