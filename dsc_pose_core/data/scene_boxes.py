"""2D boxes of the real training images: the only label the weakly-supervised stages read.

Two layouts of one scene folder ``DATASET/test/SCENE/`` (``SCENE`` = six digits, e.g. ``000000``):

* **Boxes only** (fitting a new object): ``scene_camera.json`` (BOP: per image ``cam_K``),
  ``rgb/{im_id:06d}.png|jpg`` and ``scene_boxes.json``::

      {"0": [{"obj_id": 1, "bbox_visib": [x, y, w, h]}, ...], "1": [...], ...}

  image id -> the boxes of the objects visible in it (pixels, x right, y down; the visible part, as
  a 2D detector would give it). Nothing else is needed: no poses, masks or depth.
* **BOP with ground truth** (LM-O): ``scene_gt.json`` gives the object ids and ``scene_gt_info.json``
  the ``bbox_visib`` of every instance, in the same order; the poses are not read here.

``scene_boxes.json`` wins when both exist. Instance ``inst`` = the index in the image's list; the
segmentation stage names its pseudo masks ``{im_id:06d}_{inst:06d}.png`` by it.

Splits: with a ``splits.json`` (``{split name: [im_id, ...]}``) in the dataset root, splits are read
from it; without one (``splits_file: ""`` in the configs) every image with boxes is a training image
and there is no validation split.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import bop_io

BOXES_FILE = "scene_boxes.json"


@dataclass(frozen=True)
class SceneBox:
    obj_id: int
    bbox_visib: tuple[int, int, int, int]  # x, y, w, h (px)


def _parse_boxes(path: Path) -> dict[int, list[SceneBox]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise bop_io.BopFormatError(f"{path}: cannot read boxes: {exc}") from None
    if not isinstance(raw, dict):
        raise bop_io.BopFormatError(f"{path}: expected {{image id: [{{obj_id, bbox_visib}}, ...]}}, "
                                    f"got {type(raw).__name__}")
    boxes: dict[int, list[SceneBox]] = {}
    for key, entries in raw.items():
        where = f"{path}: image {key!r}"
        try:
            im_id = int(key)
        except ValueError:
            raise bop_io.BopFormatError(f"{where}: image ids must be integers") from None
        if not isinstance(entries, list):
            raise bop_io.BopFormatError(f"{where}: expected a list of boxes")
        parsed = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "obj_id" not in entry or "bbox_visib" not in entry:
                raise bop_io.BopFormatError(f"{where}, box {i}: needs obj_id and bbox_visib [x, y, w, h]")
            box = entry["bbox_visib"]
            if (not isinstance(box, list) or len(box) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
                raise bop_io.BopFormatError(f"{where}, box {i}: bbox_visib must be 4 numbers [x, y, w, h], got {box!r}")
            if box[2] <= 0 or box[3] <= 0:
                raise bop_io.BopFormatError(f"{where}, box {i}: width and height must be > 0, got {box!r}")
            parsed.append(SceneBox(int(entry["obj_id"]), tuple(int(round(v)) for v in box)))
        boxes[im_id] = parsed
    return boxes


def load_scene_boxes(scene_path: str | os.PathLike) -> dict[int, list[SceneBox]]:
    """image id -> boxes, from ``scene_boxes.json`` or else BOP's scene_gt + scene_gt_info."""
    scene_path = Path(scene_path)
    if (scene_path / BOXES_FILE).is_file():
        return _parse_boxes(scene_path / BOXES_FILE)
    gt_path, info_path = scene_path / "scene_gt.json", scene_path / "scene_gt_info.json"
    if not (gt_path.is_file() and info_path.is_file()):
        raise bop_io.BopFormatError(f"{scene_path}: no 2D boxes: write {BOXES_FILE} "
                                    "({\"<im_id>\": [{\"obj_id\": 1, \"bbox_visib\": [x, y, w, h]}]}) "
                                    "or BOP's scene_gt.json + scene_gt_info.json")
    gt, info = bop_io.load_scene_gt(gt_path), bop_io.load_scene_gt_info(info_path)
    return {im_id: [SceneBox(pose.obj_id, tuple(gi.bbox_visib)) for pose, gi in zip(poses, info.get(im_id, []))]
            for im_id, poses in gt.items()}


def boxes_source(scene_path: str | os.PathLike) -> str:
    return BOXES_FILE if (Path(scene_path) / BOXES_FILE).is_file() else "scene_gt_info.json"


def measurable_ground_truth(scene_path: str | os.PathLike) -> str | None:
    """None when the scene's boxes are BOP instances with poses (reference masks can be made for
    them); otherwise the reason why masks cannot be scored."""
    scene_path = Path(scene_path)
    if (scene_path / BOXES_FILE).is_file():
        return f"the boxes come from {BOXES_FILE} (no poses to render reference masks from)"
    if not (scene_path / "scene_gt.json").is_file():
        return f"{scene_path / 'scene_gt.json'} does not exist"
    return None


def split_image_ids(dataset: str | os.PathLike, splits_file: str, split: str, scene_path: str | os.PathLike,
                    required: bool = True) -> list[int] | None:
    """The image ids of ``split``. ``splits_file`` "" = no splits file: every image with boxes is
    a training image (any split asked for gets them all) when ``required``, else there is no such split
    (None). A named split that is missing is an error when ``required``, else None."""
    if not split:
        if required:
            raise ValueError("no split name given")
        return None
    if not splits_file:
        return sorted(load_scene_boxes(scene_path)) if required else None
    path = Path(dataset) / splits_file
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path}: no splits file (set splits_file: \"\" to train on every image "
                                    f"with boxes in {scene_path})")
        return None
    splits = bop_io.load_splits(path)
    if split not in splits:
        if required:
            raise ValueError(f"split {split!r} not in {path}: {sorted(splits)}")
        return None
    return list(splits[split])
