"""Training data of DSC-PoseNet (dsc-posenet sec. 3.2, 4.3): BOP images turned into the network's
two views (un-normalised window and normalised crop N, see :mod:`dsc_pose_core.models.dsc_posenet`).

Augmentation A (eq. 7; "random cropping, resizing, rotation and colour jittering", sec. 4.3) is an
affine map of the image (rotation about the object's box centre, scaling, shift) composed with the
view's crop: every view is one 3x3 matrix M = C_view A (image px -> view px) applied with
``cv2.warpAffine``, and predicted keypoints go back to the image with M^-1 (= A^-1 N^-1 of eq. 10).
Keypoint targets therefore stay in image pixels and never need transforming. Colour jitter changes
pixels only.

* :class:`SyntheticPoseDataset`: BOP synthetic data (``dsc-pose-synth``): image, ``mask_visib``,
  ground-truth keypoints projected from the ground-truth pose, the visible box.
* :class:`RealPoseDataset`: real RGB + the loosened 2D box + the pseudo mask written by the
  segmentation stage (``OUT/pseudo/iter_t/test/{scene:06d}/mask_visib/{im:06d}_{inst:06d}.png``, 255
  foreground, and ``mask_ignore/``). No pose is read, except in the explicitly named upper-bound mode
  ``"with_real_pose_labels"`` (ground-truth keypoints from ``scene_gt.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..geometry.camera import project_posed, warp_affine
from ..models.dsc_posenet import DscModelConfig, norm_window, unnorm_window, view_matrix
from . import bop_io
from .bop_io import find_rgb, read_rgb
from .boxes import box_xyxy_edges, loosen_box_xywh, mask_box_xyxy

MODES = ("pseudo", "with_real_pose_labels")


@dataclass
class ViewAugmentConfig:
    rotation_deg: float = 15.0  # A: rotation U(-r, r) about the box centre
    scale: float = 0.2  # A: scale U(1 - s, 1 + s)
    shift: float = 0.1  # A: translation U(-s, s) x box side
    box_loosening: float = 0.15  # synthetic, norm_box "loosened" only: box loosened outwards 0..15 % per side
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    noise: float = 3.0  # gaussian noise std, 0-255 units
    # Synthetic: the normalised crop's box. "mask" (default): the tight box of the augmented visible
    # mask (A applied to the mask's pixels), its side x U(1 - j, 1 + j) and its centre shifted by
    # U(-c, c) x side. Inference crops the box of the *predicted* mask (~0.85 x the tight box) and
    # RealPoseDataset the pseudo mask's box; the old "loosened" box (loosened outwards, then the
    # rotated box's corners) was ~1.25 x the tight box, so at inference the object looked ~1.5 x
    # larger than in training and the normalised view's keypoints shrank (object placed too far).
    norm_box: str = "mask"
    norm_box_size_jitter: float = 0.2
    norm_box_shift: float = 0.05
    # Synthetic only: an upright prior on the in-plane rotation. Empty (the paper's data): renders keep
    # their uniform +-180 deg in-plane rotation plus A's U(-rotation_deg, rotation_deg). [lo, hi]: A
    # turns the view about the box centre so that the object's +z axis, as projected into the image,
    # points U(lo, hi) degrees from image-up (positive = clockwise), as on a table seen by an upright
    # camera (LM-O: about -35..+20); views where +z points along the line of sight (projected length
    # under 0.25 of a side-on view) keep A's own rotation. Rotating about the box centre is not a
    # camera rotation exactly; the keypoint targets follow the image through M, so they stay exact.
    inplane_deg: tuple[float, ...] = ()

    @classmethod
    def off(cls) -> "ViewAugmentConfig":
        return cls(rotation_deg=0.0, scale=0.0, shift=0.0, box_loosening=0.0, brightness=0.0, contrast=0.0,
                   saturation=0.0, noise=0.0, norm_box_size_jitter=0.0, norm_box_shift=0.0)


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return mask > 127


def inplane_angle_deg(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> float | None:
    """Angle (degrees, clockwise from image-up) of the object's +z axis projected at its origin, or
    None when +z points nearly along the line of sight (projected under 0.25 of its side-on length)."""
    K, R, t = (np.asarray(v, dtype=np.float64) for v in (K, R, t))
    length = 0.05  # metres along +z
    a, b = t, t + R[:, 2] * length
    if a[2] <= 1e-6 or b[2] <= 1e-6:
        return None
    pa, pb = (K @ a)[:2] / a[2], (K @ b)[:2] / b[2]
    dx, dy = pb - pa
    if np.hypot(dx, dy) < 0.25 * K[0, 0] * length / a[2]:
        return None
    return float(np.degrees(np.arctan2(dx, -dy)))


def augment_matrix(rng: np.random.Generator | None, center, box_side: float, cfg: ViewAugmentConfig,
                   angle_deg: float | None = None) -> np.ndarray:
    """A: 3x3 similarity of the image about ``center`` (identity without rng); ``angle_deg`` replaces
    the random rotation (clockwise in the image, y down)."""
    if rng is None:
        return np.eye(3)
    angle = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    if angle_deg is not None:
        angle = np.deg2rad(angle_deg)
    scale = rng.uniform(1.0 - cfg.scale, 1.0 + cfg.scale)
    shift = rng.uniform(-cfg.shift, cfg.shift, 2) * box_side
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    cx, cy = float(center[0]), float(center[1])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    back = np.array([[1, 0, cx + shift[0]], [0, 1, cy + shift[1]], [0, 0, 1.0]])
    return back @ rot @ to_origin


def transformed_box(matrix: np.ndarray, box_xyxy) -> np.ndarray:
    """Axis-aligned box (edges) of a box's corners under a 3x3 affine map."""
    x1, y1, x2, y2 = box_xyxy
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1.0]]) @ matrix.T
    return np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])


def augmented_mask_box(mask: np.ndarray, A: np.ndarray) -> np.ndarray | None:
    """Tight box (pixel edges) of A(mask): the mask's pixel centres mapped by A, +-0.5 px x A's scale."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    points = np.stack([xs, ys], 1).astype(np.float64) @ A[:2, :2].T + A[:2, 2]
    half = 0.5 * float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    return np.array([points[:, 0].min() - half, points[:, 1].min() - half,
                     points[:, 0].max() + half, points[:, 1].max() + half])


def jitter_box(box_xyxy: np.ndarray, rng: np.random.Generator | None, size_jitter: float, shift: float) -> np.ndarray:
    """Box scaled about its centre by U(1 - size_jitter, 1 + size_jitter) (both sides alike) and its
    centre shifted by U(-shift, shift) x its longer side per axis (unchanged without rng)."""
    box = np.asarray(box_xyxy, dtype=np.float64)
    if rng is None:
        return box
    factor = rng.uniform(1.0 - size_jitter, 1.0 + size_jitter)
    side = max(box[2] - box[0], box[3] - box[1])
    centre = (box[:2] + box[2:]) / 2 + rng.uniform(-shift, shift, 2) * side
    half = (box[2:] - box[:2]) / 2 * factor
    return np.concatenate([centre - half, centre + half])


def colour_jitter(image: np.ndarray, rng: np.random.Generator | None, cfg: ViewAugmentConfig) -> np.ndarray:
    if rng is None:
        return image
    x = image.astype(np.float32)
    x = x * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    grey = x.mean(-1, keepdims=True)
    x = (x - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
    if cfg.noise > 0:
        x = x + rng.normal(0.0, cfg.noise, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def make_view_pair(image: np.ndarray, model: DscModelConfig, A: np.ndarray, box_xyxy: np.ndarray,
                   norm_box_xyxy: np.ndarray, rng: np.random.Generator | None, aug: ViewAugmentConfig,
                   masks: dict[str, np.ndarray] | None = None, prefix: str = "",
                   norm_box_augmented: bool = False) -> dict:
    """Un-normalised (``u``) and normalised (``n``) views of A(image). ``box_xyxy`` positions the
    un-normalised window, ``norm_box_xyxy`` the normalised crop (both in image px, edges; the latter
    already in A(image) px when ``norm_box_augmented``, else the box of its corners under A).
    ``masks`` (bool/uint8 HxW, image px) are warped into both views (nearest)."""
    height, width = image.shape[:2]
    box_a = transformed_box(A, box_xyxy)
    nbox_a = np.asarray(norm_box_xyxy, np.float64) if norm_box_augmented else transformed_box(A, norm_box_xyxy)
    m_u = view_matrix(unnorm_window(model, box_a, (width, height)), model.unnorm_size) @ A
    m_n = view_matrix(norm_window(model, nbox_a), model.norm_size) @ A
    out = {}
    for tag, matrix, size in (("u", m_u, model.unnorm_size), ("n", m_n, model.norm_size)):
        view = colour_jitter(warp_affine(image, matrix, size, size), rng, aug)
        out[f"{prefix}{tag}_image"] = _chw(view)
        out[f"{prefix}{tag}_matrix"] = torch.as_tensor(matrix, dtype=torch.float32)
        for name, mask in (masks or {}).items():
            warped = warp_affine(mask.astype(np.uint8), matrix, size, size, nearest=True)
            out[f"{prefix}{tag}_{name}"] = torch.from_numpy(warped.astype(np.float32))
    return out



# --------------------------------------------------------------------------------------------
@dataclass
class PoseInstance:
    image_path: Path
    im_id: int
    inst: int
    K: np.ndarray
    box_xywh: np.ndarray  # synthetic: tight visible box; real: the loosened box (the weak label)
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    mask_path: Path | None = None
    ignore_path: Path | None = None


def synthetic_instances(root: str | Path, obj_id: int, split: str = "train_synt", min_visib_fract: float = 0.2,
                        min_px: int = 64, max_images: int = 0) -> list[PoseInstance]:
    """Every visible-enough instance of ``obj_id`` in a BOP synthetic split (with mask_visib)."""
    split_dir = Path(root) / split
    items = []
    for scene_path in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        gt = bop_io.load_scene_gt(scene_path / "scene_gt.json")
        info = bop_io.load_scene_gt_info(scene_path / "scene_gt_info.json")
        cams = bop_io.load_scene_camera(scene_path / "scene_camera.json")
        im_ids = sorted(gt)[: max_images or None]
        for im_id in im_ids:
            for inst, (pose, gi) in enumerate(zip(gt[im_id], info[im_id])):
                if pose.obj_id != obj_id or gi.bbox_visib[2] <= 1 or gi.bbox_visib[3] <= 1:
                    continue
                if gi.visib_fract < min_visib_fract or (gi.px_count_visib or 0) < min_px:
                    continue
                items.append(PoseInstance(find_rgb(scene_path, im_id), im_id, inst, cams[im_id].K,
                                          np.asarray(gi.bbox_visib), pose.R, pose.t,
                                          scene_path / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"))
    if not items:
        raise ValueError(f"no usable synthetic instances of object {obj_id} in {split_dir}")
    return items


def real_instances(dataset: str | Path, scene_id: int, im_ids: list[int], obj_id: int, pseudo_dir: str | Path | None,
                   mode: str = "pseudo", box_seed: int = 0, max_loosening: float = 0.15) -> list[PoseInstance]:
    """Real instances of ``obj_id``: RGB, the loosened box and the pseudo mask (``pseudo_dir`` =
    ``OUT/pseudo/iter_t`` of the segmentation stage). Boxes come from its ``pseudo_boxes.json`` when
    present, else the scene's 2D boxes (``scene_boxes.json`` or ``bbox_visib``) loosened with the
    segmentation stage's seeded scheme (the same boxes). Poses are read only in mode
    ``with_real_pose_labels`` (upper bound)."""
    if mode not in MODES:
        raise ValueError(f"real mode {mode!r} not in {MODES}")
    from .scene_boxes import load_scene_boxes

    scene_path = bop_io.scene_dir(dataset, scene_id)
    boxes = load_scene_boxes(scene_path)  # scene_boxes.json or scene_gt_info's bbox_visib
    labelled = mode == "with_real_pose_labels"
    gt = bop_io.load_scene_gt(scene_path / "scene_gt.json") if labelled else None  # the upper bound only
    cams = bop_io.load_scene_camera(scene_path / "scene_camera.json")
    pseudo_scene = Path(pseudo_dir) / "test" / f"{scene_id:06d}" if pseudo_dir else None
    boxes_json = {}
    if pseudo_scene is not None and (pseudo_scene / "pseudo_boxes.json").is_file():
        boxes_json = json.loads((pseudo_scene / "pseudo_boxes.json").read_text())
    items = []
    height, width = read_rgb(find_rgb(scene_path, im_ids[0])).shape[:2] if im_ids else (0, 0)
    for im_id in im_ids:
        image_path = find_rgb(scene_path, im_id)
        rng = np.random.default_rng([box_seed, scene_id, im_id])
        listed = {e["inst"]: np.asarray(e["bbox_loose"]) for e in boxes_json.get(str(im_id), [])}
        for inst, scene_box in enumerate(boxes.get(im_id, [])):
            loose = loosen_box_xywh(scene_box.bbox_visib, rng, width, height, max_loosening)
            if scene_box.obj_id != obj_id or scene_box.bbox_visib[2] <= 1 or scene_box.bbox_visib[3] <= 1:
                continue
            box = listed.get(inst, loose)
            mask_path = ignore_path = None
            if pseudo_scene is not None:
                mask_path = pseudo_scene / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"
                ignore_path = pseudo_scene / "mask_ignore" / f"{im_id:06d}_{inst:06d}.png"
                if not mask_path.is_file():
                    continue
                if not ignore_path.is_file():
                    ignore_path = None
            pose = gt[im_id][inst] if labelled else None
            items.append(PoseInstance(image_path, im_id, inst, cams[im_id].K, np.asarray(box),
                                      pose.R if labelled else None, pose.t if labelled else None,
                                      mask_path, ignore_path))
    return items


class SyntheticPoseDataset(torch.utils.data.Dataset):
    """Synthetic instance -> both views (augmented when ``augment``), GT keypoints (image px),
    visible masks in both views, S (longer side of the visible box), K, R, t."""

    def __init__(self, instances: list[PoseInstance], keypoints_3d: np.ndarray, model: DscModelConfig,
                 augment: ViewAugmentConfig | None = None, seed: int = 0):
        self.instances = instances
        self.keypoints_3d = np.asarray(keypoints_3d, dtype=np.float64)
        self.model = model
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.instances)

    def _rng(self, index: int):
        return None if self.augment is None else np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        item = self.instances[index]
        rng = self._rng(index)
        aug = self.augment or ViewAugmentConfig.off()
        image = read_rgb(item.image_path)
        mask = read_mask(item.mask_path)
        box = box_xyxy_edges(item.box_xywh)
        side = float(max(box[2] - box[0], box[3] - box[1]))
        angle = None
        if rng is not None and len(aug.inplane_deg) == 2:
            current = inplane_angle_deg(item.K, item.R, item.t)
            if current is not None:
                target = rng.uniform(float(aug.inplane_deg[0]), float(aug.inplane_deg[1]))
                angle = (target - current + 180.0) % 360.0 - 180.0
        A = augment_matrix(rng, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), side, aug, angle)
        nbox, augmented = box, False
        if rng is not None and aug.norm_box == "mask":
            # the tight box of the augmented visible mask, jittered symmetrically: sized like the
            # predicted-mask box of inference and the pseudo-mask box of RealPoseDataset
            tight = augmented_mask_box(mask, A)
            if tight is not None:
                nbox, augmented = jitter_box(tight, rng, aug.norm_box_size_jitter, aug.norm_box_shift), True
        elif rng is not None and aug.norm_box == "loosened":
            if aug.box_loosening > 0:
                h, w = image.shape[:2]
                nbox = box_xyxy_edges(loosen_box_xywh(item.box_xywh, rng, w, h, aug.box_loosening))
        elif aug.norm_box not in ("mask", "loosened"):
            raise ValueError(f"augment.norm_box must be 'mask' or 'loosened', not {aug.norm_box!r}")
        out = make_view_pair(image, self.model, A, box, nbox, rng, aug, {"mask": mask},
                             norm_box_augmented=augmented)
        out["box_xyxy"] = torch.as_tensor(box, dtype=torch.float32)  # the visible box (image px, edges)
        out.update(keypoints=torch.as_tensor(project_posed(self.keypoints_3d, item.K, item.R, item.t)[0],
                                             dtype=torch.float32),
                   scale=torch.tensor(side, dtype=torch.float32), K=torch.as_tensor(item.K, dtype=torch.float32),
                   R=torch.as_tensor(item.R, dtype=torch.float32), t=torch.as_tensor(item.t, dtype=torch.float32))
        return out


class RealPoseDataset(torch.utils.data.Dataset):
    """Real instance -> the four views of eq. (10)-(11): x (``x_u``, ``x_n`` = N(x)) without
    augmentation and A(x) (``a_u``, ``a_n`` = N(A(x))), plus the alignment crop (the N(x) window at
    ``align_size`` px) with the warped pseudo mask and ignore mask; S = longer side of the loosened
    box; K. The normalised crop's box: the pseudo mask's box (inside the loosened box; for A(x) the
    box of the augmented mask), or the loosened box when the mask is empty. In mode ``with_real_pose_labels`` also ``keypoints``."""

    def __init__(self, instances: list[PoseInstance], keypoints_3d: np.ndarray, model: DscModelConfig,
                 augment: ViewAugmentConfig | None = None, align_size: int = 64, seed: int = 0):
        self.instances = instances
        self.keypoints_3d = np.asarray(keypoints_3d, dtype=np.float64)
        self.model = model
        self.augment = augment
        self.align_size = align_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> dict:
        item = self.instances[index]
        rng = None if self.augment is None else np.random.default_rng([self.seed, self.epoch, index, 1])
        aug = self.augment or ViewAugmentConfig.off()
        image = read_rgb(item.image_path)
        height, width = image.shape[:2]
        loose = box_xyxy_edges(item.box_xywh)
        x, y, w, h = (int(v) for v in item.box_xywh)
        inside = np.zeros((height, width), bool)
        inside[max(0, y):y + h, max(0, x):x + w] = True
        if item.mask_path is not None:
            mask = read_mask(item.mask_path) & inside
            ignore = read_mask(item.ignore_path) if item.ignore_path is not None else np.zeros_like(mask)
        else:
            mask, ignore = inside.copy(), np.zeros_like(inside)
        nbox = mask_box_xyxy(mask)
        nbox = loose if nbox is None else nbox
        side = float(max(loose[2] - loose[0], loose[3] - loose[1]))
        masks = {"mask": mask, "ignore": ignore}
        out = make_view_pair(image, self.model, np.eye(3), loose, nbox, None, aug, masks, prefix="x_")
        A = augment_matrix(rng, ((loose[0] + loose[2]) / 2, (loose[1] + loose[3]) / 2), side, aug)
        # N(A(x)) bounds the augmented pseudo mask (not the rotated corners of its box, up to ~1.3 x
        # larger), as inference bounds the mask it sees; "loosened" keeps the old corner box
        nbox_a, augmented = nbox, False
        if aug.norm_box == "mask" and mask.any():
            nbox_a, augmented = augmented_mask_box(mask, A), True
        out.update(make_view_pair(image, self.model, A, loose, nbox_a, rng, aug, masks, prefix="a_",
                                  norm_box_augmented=augmented))
        m_align = view_matrix(norm_window(self.model, nbox), self.align_size)
        out["align_matrix"] = torch.as_tensor(m_align, dtype=torch.float32)
        out["align_mask"] = torch.from_numpy(warp_affine(mask.astype(np.uint8), m_align, self.align_size, self.align_size, True)
                                             .astype(np.float32))
        out["align_ignore"] = torch.from_numpy(warp_affine(ignore.astype(np.uint8), m_align, self.align_size, self.align_size, True)
                                               .astype(np.float32))
        out.update(scale=torch.tensor(side, dtype=torch.float32), K=torch.as_tensor(item.K, dtype=torch.float32))
        out["box_xyxy"] = torch.as_tensor(loose, dtype=torch.float32)  # the loosened box (the weak label)
        if item.R is not None:
            out["keypoints"] = torch.as_tensor(project_posed(self.keypoints_3d, item.K, item.R, item.t)[0],
                                               dtype=torch.float32)
        return out


class IndexedObjects(torch.utils.data.Dataset):
    """Several objects' datasets as one: item i of object k's dataset with ``obj_index`` = k (the
    shared network's per-object output channels, ``DscPoseNet.forward(obj_index=...)``)."""

    def __init__(self, datasets: list):
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch = value
        for d in self.datasets:
            d.epoch = value

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        out = self.datasets[k][index - int(self.offsets[k])]
        out["obj_index"] = torch.tensor(k, dtype=torch.long)
        return out
