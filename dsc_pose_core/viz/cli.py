"""``dsc-pose-viz``: draw ground-truth and estimated poses over the images of a BOP dataset.

For each selected image it draws, per pose, the projected 3D bounding box (from the mesh extents) and
the model contour (outline of the silhouette rendered by the fast renderer): ground truth in green,
estimates from a BOP results CSV in magenta; ``--masks`` also tints the silhouettes. Examples::

    dsc-pose-viz --dataset ../shared/data/lmo --scene 2 --split-name val --max-images 5 --out viz/
    dsc-pose-viz --dataset ../shared/data/lmo --results res.csv --im-ids 615,625 --out viz/
    dsc-pose-viz --scene-dir synth/train_synt/000000 --models synth/models --im-ids 0,1 --out viz/

Writes ``OUT/<scene_id>_<im_id>.png`` (6 digits each) and prints how many it wrote.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from ..data import bop_io
from .overlay import EST_COLOR, GT_COLOR, draw_legend, draw_poses


@dataclass
class OverlayJob:
    """What one ``dsc-pose-viz`` run draws (the flags of the same names); the stage chain builds one
    directly. Images: ``scene_dir``, or ``dataset`` / ``split`` / ``scene``; ``im_ids`` and / or
    ``split_name`` choose them (neither: every image, or those of ``results``)."""

    out: str  # folder for the PNGs
    dataset: str | None = None
    split: str = "test"  # split folder inside the dataset
    scene: int | None = None
    scene_dir: str | None = None
    im_ids: list[int] | None = None
    split_name: str | None = None  # image ids from the dataset's splits.json
    max_images: int | None = None
    models: str | None = None  # default DATASET/models_eval, else DATASET/models
    results: str | None = None  # BOP results CSV: its estimates are drawn (magenta)
    score_min: float = -np.inf
    no_gt: bool = False
    masks: bool = False
    no_box: bool = False
    no_labels: bool = False
    thickness: int = 2


def job_from_args(args: argparse.Namespace) -> OverlayJob:
    return OverlayJob(**{f.name: getattr(args, f.name) for f in fields(OverlayJob)})


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsc-pose-viz", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("images")
    src.add_argument("--dataset", help="BOP dataset folder (with models/ or models_eval/, splits.json)")
    src.add_argument("--split", default="test", help="split folder inside the dataset (default: test)")
    src.add_argument("--scene", type=int, help="scene id (default: the only scene of the split)")
    src.add_argument("--scene-dir", help="a BOP scene folder directly (instead of --dataset/--split/--scene)")
    src.add_argument("--im-ids", type=_int_list, help="image ids, e.g. 615,625")
    src.add_argument("--split-name", help="take the image ids from the dataset's splits.json (e.g. val)")
    src.add_argument("--max-images", type=int, help="draw at most this many images (in id order)")
    p.add_argument("--models", help="models folder (default: DATASET/models_eval, else DATASET/models)")
    p.add_argument("--results", help="BOP results CSV: draw its estimates (magenta)")
    p.add_argument("--score-min", type=float, default=-np.inf, help="skip estimates scored below this")
    p.add_argument("--no-gt", action="store_true", help="do not draw the ground truth")
    p.add_argument("--masks", action="store_true", help="tint the rendered silhouettes")
    p.add_argument("--no-box", action="store_true", help="do not draw 3D boxes")
    p.add_argument("--no-labels", action="store_true", help="do not write object ids and the legend")
    p.add_argument("--thickness", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for the PNGs")
    return p


def _find_scene(args) -> tuple[Path, int, Path | None]:
    """(scene dir, scene id, dataset dir or None)."""
    if args.scene_dir:
        scene = Path(args.scene_dir)
        dataset = Path(args.dataset) if args.dataset else scene.parent.parent
        try:
            scene_id = int(scene.name)
        except ValueError:
            scene_id = args.scene or 0
        return scene, scene_id, dataset
    if not args.dataset:
        raise ValueError("give --dataset (or --scene-dir)")
    dataset = Path(args.dataset)
    if args.scene is not None:
        return bop_io.scene_dir(dataset, args.scene, args.split), args.scene, dataset
    split_dir = dataset / args.split
    scenes = sorted(d for d in split_dir.iterdir() if d.is_dir() and d.name.isdigit()) if split_dir.is_dir() else []
    if len(scenes) != 1:
        raise ValueError(f"{split_dir} holds {len(scenes)} scenes; choose one with --scene")
    return scenes[0], int(scenes[0].name), dataset


def _rgb_path(scene: Path, im_id: int) -> Path | None:
    for sub, ext in (("rgb", "png"), ("rgb", "jpg"), ("gray", "png"), ("gray", "tif")):
        p = scene / sub / f"{im_id:06d}.{ext}"
        if p.is_file():
            return p
    return None


class _Models:
    """Meshes (loaded on first use), box corners and a renderer holding them."""

    def __init__(self, models_dir: Path):
        self.dir = models_dir
        self.corners: dict[int, np.ndarray] = {}
        self._renderer = None

    def renderer(self, width: int, height: int):
        if self._renderer is None:
            from ..render import FastRenderer

            self._renderer = FastRenderer(width, height)
        return self._renderer

    def need(self, obj_ids, width: int, height: int) -> None:
        from ..objects import load_mesh

        for obj_id in obj_ids:
            if obj_id in self.corners:
                continue
            mesh = load_mesh(self.dir / f"obj_{int(obj_id):06d}.ply")
            self.renderer(width, height).add_object(int(obj_id), mesh)
            self.corners[obj_id] = mesh.bbox_corners()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()


def run(args: OverlayJob) -> list[Path]:
    scene, scene_id, dataset = _find_scene(args)
    cams = bop_io.load_scene_camera(scene / "scene_camera.json")
    gt_path = scene / "scene_gt.json"
    scene_gt = bop_io.load_scene_gt(gt_path) if gt_path.is_file() and not args.no_gt else {}
    estimates: dict[int, list] = defaultdict(list)
    if args.results:
        for e in bop_io.read_bop_results(args.results):
            if e.scene_id == scene_id and e.score >= args.score_min:
                estimates[e.im_id].append(e)

    if args.split_name:
        if dataset is None or not (dataset / "splits.json").is_file():
            raise ValueError("--split-name needs a dataset with splits.json")
        splits = bop_io.load_splits(dataset / "splits.json")
        if args.split_name not in splits:
            raise ValueError(f"no split {args.split_name!r} in {dataset / 'splits.json'}; have {sorted(splits)}")
        im_ids = sorted(splits[args.split_name])
        if args.im_ids:  # both: the listed images that are in the split
            im_ids = [i for i in args.im_ids if i in set(im_ids)]
    elif args.im_ids:
        im_ids = list(args.im_ids)
    elif args.results:
        im_ids = sorted(estimates)
    else:
        im_ids = sorted(cams)
    im_ids = [i for i in im_ids if _rgb_path(scene, i) is not None and i in cams]
    if args.max_images is not None:
        im_ids = im_ids[: args.max_images]
    if not im_ids:
        raise ValueError(f"no images to draw in {scene} (check --im-ids / --split-name; rgb/ must hold them)")

    if args.models:
        models_dir = Path(args.models)
    elif dataset is not None and (dataset / "models_eval" / "models_info.json").is_file():
        models_dir = dataset / "models_eval"
    elif dataset is not None:
        models_dir = dataset / "models"
    else:
        raise ValueError("give --models")
    models = _Models(models_dir)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for im_id in im_ids:
            bgr = cv2.imread(str(_rgb_path(scene, im_id)), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"cannot read image {_rgb_path(scene, im_id)}")
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            H, W = image.shape[:2]
            K = cams[im_id].K
            gts = [(g.obj_id, g.R, g.t) for g in scene_gt.get(im_id, [])]
            ests = [(e.obj_id, e.R, e.t) for e in estimates.get(im_id, [])]
            models.need({o for o, _, _ in gts + ests}, W, H)
            renderer = models.renderer(W, H)
            common = dict(box=not args.no_box, mask=args.masks, label=not args.no_labels, thickness=args.thickness)
            if gts:
                draw_poses(image, K, gts, renderer, models.corners, color=GT_COLOR, **common)
            if ests:
                draw_poses(image, K, ests, renderer, models.corners, color=EST_COLOR, **common)
            legend = [(f"scene {scene_id} im {im_id}", (255, 255, 255))]
            if gts:
                legend.append((f"GT ({len(gts)})", GT_COLOR))
            if ests:
                legend.append((f"estimates ({len(ests)})", EST_COLOR))
            if not args.no_labels:
                draw_legend(image, legend)
            path = out_dir / f"{scene_id:06d}_{im_id:06d}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {path}")
            written.append(path)
    finally:
        models.close()
    return written


def main(argv=None) -> int:
    args = job_from_args(build_parser().parse_args(argv))
    from ..objects.mesh import MeshLoadError
    from ..render import RendererUnavailableError

    try:
        written = run(args)
    except (FileNotFoundError, ValueError, MeshLoadError, RendererUnavailableError, OSError) as exc:
        print(f"dsc-pose-viz: error: {exc}", file=sys.stderr)
        return 2
    print(f"dsc-pose-viz: wrote {len(written)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
