"""Reference visible masks for measuring segmentation IoU on real frames.

LM-O ships no masks, so the reference visible mask of each annotated object is rendered from the
ground-truth poses of *all* objects of the frame with mutual occlusion (``render.gl.FastRenderer``).
Only the annotated objects are modelled: the bench vise in LM-O scene 2 (and the table) are not, so
where the vise hides an object the rendered mask is too large. Such targets are detected by comparing
the rendered visible pixel count with ``px_count_visib`` of ``scene_gt_info.json`` (computed by the
BOP toolkit from the real depth, where the vise is present): a target is *flagged* when

    |rendered_px_visib - px_count_visib| > tolerance * px_count_visib

and flagged targets are left out of the IoU means (their number is reported). When a dataset has
``mask_visib/`` PNGs (synthetic data, BOP datasets with masks) those are used instead and nothing is
flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data import bop_io


@dataclass
class ReferenceMask:
    mask: np.ndarray  # bool [H,W]
    flagged: bool  # the rendered mask disagrees with scene_gt_info (unmodelled occluder)
    rendered_px: int
    bop_px: int | None


def load_mask_png(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    if image.ndim == 3:
        image = image[..., 0]
    return image > 127


class ReferenceMasks:
    """Per (im_id, inst) reference masks of one BOP scene, computed on demand and kept in memory."""

    def __init__(self, scene_path: str | Path, width: int, height: int, registry=None,
                 tolerance: float = 0.15):
        self.scene_path = Path(scene_path)
        self.width, self.height = int(width), int(height)
        self.tolerance = float(tolerance)
        self.registry = registry
        self.use_files = (self.scene_path / "mask_visib").is_dir()
        self.scene_gt = bop_io.load_scene_gt(self.scene_path / "scene_gt.json")
        info_path = self.scene_path / "scene_gt_info.json"
        self.scene_gt_info = bop_io.load_scene_gt_info(info_path) if info_path.exists() else {}
        self.cameras = None if self.use_files else bop_io.load_scene_camera(self.scene_path / "scene_camera.json")
        self._renderer = None
        self._cache: dict[int, list[ReferenceMask]] = {}

    def _render(self, im_id: int) -> list[ReferenceMask]:
        if self._renderer is None:
            if self.registry is None:
                raise ValueError(f"{self.scene_path} has no mask_visib/: an object registry is needed to render "
                                 "reference masks from the ground-truth poses")
            from ..render.gl import FastRenderer

            self._renderer = FastRenderer(self.width, self.height)
        gts = self.scene_gt[im_id]
        for gt in gts:
            if gt.obj_id not in self._renderer.object_ids:
                self._renderer.add_object(gt.obj_id, self.registry[gt.obj_id].mesh)
        out = self._renderer.render(self.cameras[im_id].K, [(g.obj_id, g.R, g.t) for g in gts], rgb=False)
        infos = self.scene_gt_info.get(im_id, [])
        refs = []
        for inst in range(len(gts)):
            mask = out.visible_mask(inst)
            rendered = int(mask.sum())
            bop_px = infos[inst].px_count_visib if inst < len(infos) else None
            flagged = bop_px is not None and abs(rendered - bop_px) > self.tolerance * max(bop_px, 1)
            refs.append(ReferenceMask(mask, bool(flagged), rendered, bop_px))
        return refs

    def _from_files(self, im_id: int) -> list[ReferenceMask]:
        refs = []
        for inst in range(len(self.scene_gt[im_id])):
            mask = load_mask_png(self.scene_path / "mask_visib" / f"{im_id:06d}_{inst:06d}.png")
            refs.append(ReferenceMask(mask, False, int(mask.sum()), int(mask.sum())))
        return refs

    def get(self, im_id: int, inst: int) -> ReferenceMask:
        if im_id not in self._cache:
            self._cache[im_id] = self._from_files(im_id) if self.use_files else self._render(im_id)
        return self._cache[im_id][inst]

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
