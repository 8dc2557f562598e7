"""The pose pipeline (docs/ARCHITECTURE.md, "One frame through the node"): (RGB image, K, 2D detections) -> 6D poses.

For every detection of a known object: an initial pose from the 2D box, then refiners (DeepIM,
test-time alignment) in turn, then a confidence. The parts are the existing modules; this file only composes them:

* initialiser (``INITIALISERS``: name -> class implementing :class:`Initialiser`): ``"dsc"``
  (:class:`DscInitialiser`: ``models.dsc_posenet.DscPoseNetEstimator``, one network per object, one
  forward pass pair per detection: the networks differ per object, so there is no batch); ``"box"``
  (:class:`BoxInitialiser`: ``box_initialiser.box_initial_pose``, pose from the box alone, no network);
  ``"self6d"`` (:class:`Self6dInitialiser`: ``models.self6d.Self6dEstimator``, one ROI regression
  network per object: rotation, image-space centre and depth, the pose built with the frame's own K);
  ``"templates"`` (:class:`TemplateInitialiser`: ``templates.retrieve``, no pose network: the rotation of the
  rendered template whose pretrained features best match the detection's masked crop, the distance from
  the mask's box). A new initialiser is a class with ``from_config`` and ``initial_pose`` and an entry in the table.
* refinement (``REFINERS``: classes implementing :class:`Refiner`, applied in turn): DeepIM
  (:class:`DeepImStage`: ``deepim.refiner.DeepImRefiner``) with ``refine_iterations`` iterations (0 disables),
  one network pass per iteration for all detections of the frame (batched), each with its detection
  box (drawn in the observed-mask channel when the checkpoint was trained so). Objects the DeepIM
  checkpoint was not trained for keep their initial pose (``refined = False``).
* alignment (:class:`AlignStage`, refiner ``"align"``; ``PipelineConfig.refiners`` orders it before
  or after DeepIM): training-free render-and-compare per detection (``align``): the rendered
  silhouette is made to agree with the weakly-supervised segmentation network's mask and the image
  edges of the detection's crop.
* confidence (``score``): with the aligner, its calibrated confidence of the final pose (energy,
  colour agreement and the object's symmetry, ``align.score_pose``); otherwise silhouette agreement
  at box level = IoU between the tight box of the final pose's rendered silhouette (the model
  vertices projected with the pose, clipped to the image: ``data.boxes.projected_box``, the box
  DeepIM itself uses as the rendered mask's box) and the detection box. DSC-PoseNet's own confidence
  (mask probability x keypoint reprojection agreement) is kept in ``init_score``.

Per-detection problems never raise: a detection of a class id the pipeline does not know, an empty
or non-finite box, or a box entirely outside the image gives a :class:`PoseResult` with ``ok``
False and ``reason`` set (same order as the detections). Bad frames (image not uint8 HxWx3, K not a
finite 3x3 with positive focal lengths) raise ``ValueError``; bad configuration or checkpoints raise
:class:`PipelineConfigError` at construction. Checkpoints are read weights-only
(``checkpoint.read_checkpoint``: the one schema, ``torch.load(weights_only=True)``). No ROS imports.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from .data.boxes import box_iou_xywh, box_xyxy_edges, projected_box
from . import defaults
from .align import AlignConfig
from .templates import TemplateConfig
from .defaults import ALIGN_ORDERS  # where the aligner runs relative to DeepIM (``refiner_order``)
from .box_checks import BoxLimits, implausible_detection
from .box_initialiser import BoxInitConfig, box_initial_pose



class PipelineConfigError(ValueError):
    """Unusable pipeline configuration: unknown initialiser, missing or corrupt checkpoint, ..."""


@dataclass
class Detection:
    obj_id: int  # the detector's class id = registry id
    box_xywh: Sequence[float]  # (x, y, w, h) in pixels, like BOP's bbox_visib
    score: float = 1.0


@dataclass
class PoseResult:
    """One result per input detection (same order). ``ok`` False: skipped, see ``reason``."""

    obj_id: int
    box_xywh: np.ndarray  # the detection box as used (clipped to the image)
    detection_score: float = 1.0
    R: np.ndarray | None = None  # [3,3] object -> camera
    t: np.ndarray | None = None  # [3] metres
    score: float = 0.0  # confidence in [0, 1]: the aligner's, else IoU(rendered silhouette box, detection box)
    init_R: np.ndarray | None = None
    init_t: np.ndarray | None = None
    init_score: float | None = None  # the initialiser's own confidence (DSC-PoseNet); None for "box"
    refined: bool = False
    tracked: bool = False  # started from a given pose (the previous frame's, ``tracking``), not the initialiser
    reason: str | None = None  # why the detection was skipped
    timings: dict = field(default_factory=dict)  # seconds: init (this detection), refine (frame batch), total (frame)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class PipelineConfig:
    init: str = defaults.INIT  # "dsc" | "box" | "self6d" | "templates" (``INITIALISERS``)
    # DSC-PoseNet checkpoints: {obj_id: path} or a directory (see ``find_dsc_checkpoint``); init "dsc" only
    dsc_checkpoints: Mapping[int, str | os.PathLike] | str | os.PathLike | None = None
    # Self6D checkpoints: {obj_id: path} or a directory (see ``find_self6d_checkpoint``); init "self6d" only
    self6d_checkpoints: Mapping[int, str | os.PathLike] | str | os.PathLike | None = None
    deepim_checkpoint: str | os.PathLike | None = None  # needed when refine_iterations > 0
    refine_iterations: int = defaults.REFINE_ITERATIONS  # DeepIM test iterations (deepim sec. 4: 2-4); 0 disables
    # refiners in the order they run (names of ``REFINERS``); None: ["deepim"] when refine_iterations > 0
    refiners: Sequence[str] | None = None
    # the weakly-supervised segmentation network whose masks the "align" refiner compares renders with
    # (and the "templates" initialiser cuts its crops with)
    segmentation_checkpoint: str | os.PathLike | None = None
    align: AlignConfig = field(default_factory=AlignConfig)
    templates: TemplateConfig = field(default_factory=TemplateConfig)  # the "templates" initialiser
    box_limits: BoxLimits = field(default_factory=BoxLimits)  # detections no object could make are skipped
    device: str = "cpu"
    obj_ids: Sequence[int] | None = None  # objects to serve (default: every registry object)
    box_templates: int = 0  # box initialiser: viewpoints scored by box IoU (0: canonical rotation)
    ransac: bool = False  # DSC-PoseNet PnP with RANSAC
    dsc_keypoint_scales: str = "both"  # "unnorm" / "norm": one scale's keypoints only (ablation)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def find_dsc_checkpoint(directory: str | os.PathLike, obj_id: int, name: str | None = None) -> Path | None:
    """The DSC-PoseNet checkpoint of ``obj_id`` in ``directory`` (or its ``dsc_posenet/`` sub-folder):
    ``obj_{id:06d}.pt``, ``{name}.pt`` or ``dsc_{name}.pt`` (``name`` = the registry name)."""
    base = Path(directory)
    names = [f"obj_{int(obj_id):06d}.pt"]
    if name:
        names += [f"{name}.pt", f"dsc_{name}.pt"]
    for folder in (base / "dsc_posenet", base):
        for n in names:
            if (folder / n).is_file():
                return folder / n
    return None


def find_self6d_checkpoint(directory: str | os.PathLike, obj_id: int, name: str | None = None) -> Path | None:
    """The Self6D checkpoint of ``obj_id`` in ``directory`` or its ``self6d/`` sub-folder:
    ``self6d/obj_{id:06d}.pt``, ``self6d_obj_{id:06d}.pt`` or ``self6d_{name}.pt``."""
    base = Path(directory)
    candidates = [base / "self6d" / f"obj_{int(obj_id):06d}.pt", base / f"self6d_obj_{int(obj_id):06d}.pt"]
    if name:
        candidates += [base / "self6d" / f"{name}.pt", base / f"self6d_{name}.pt"]
    return next((c for c in candidates if c.is_file()), None)


def _load(loader, path, what: str, device):
    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError(f"{what} checkpoint not found: {path}")
    try:
        return loader(path, device=device)
    except PipelineConfigError:
        raise
    except Exception as exc:  # truncated / not a torch file / pickled code / wrong format / shapes
        raise PipelineConfigError(f"cannot load {what} checkpoint {path}: {type(exc).__name__}: {exc}") from None


def _box_xyxy_clipped(box_xywh, width: int, height: int):
    """(clipped xywh, pixel-edge xyxy) or a reason string."""
    try:
        box = np.asarray(box_xywh, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        return f"malformed box {box_xywh!r} (expected x, y, w, h)"
    if not np.isfinite(box).all():
        return f"non-finite box {box.tolist()}"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return f"empty box {box.tolist()}"
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:
        return f"box {box.tolist()} is outside the {width}x{height} image"
    clipped = np.array([x1, y1, x2 - x1, y2 - y1])
    return clipped, box_xyxy_edges(clipped)


def _check_frame(image, K) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"K must be a finite 3x3 matrix with positive focal lengths, got {K.tolist()}")
    return K


# --------------------------------------------------------------------------------------------
# Initialisers: one protocol, one table
# --------------------------------------------------------------------------------------------
class Initialiser(Protocol):
    """A first pose for one detection: ``initial_pose(image [H,W,3] uint8 RGB, K [3,3], obj_id,
    box_xywh (clipped to the image), box_xyxy (pixel edges)) -> (R [3,3], t [3] metres, own confidence
    or None)``; raises when it has no answer (the pipeline turns that into ``PoseResult.reason``).
    ``estimators``: the per-object networks it loaded ({} for the box initialiser)."""

    estimators: dict

    def initial_pose(self, image: np.ndarray, K: np.ndarray, obj_id: int, box_xywh: np.ndarray,
                     box_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]: ...


class BoxInitialiser:
    """The pose from the box alone (no network): canonical rotation or ``box_templates`` viewpoints
    scored by box IoU, the distance from the box size (``box_initialiser``)."""

    def __init__(self, vertices: dict, diameters: dict, n_templates: int = 0):
        self.vertices, self.diameters = vertices, diameters
        self.config = BoxInitConfig(n_templates=n_templates)
        self.estimators: dict = {}

    @classmethod
    def from_config(cls, pipeline: "PoseEstimator", config: "PipelineConfig") -> "BoxInitialiser":
        return cls(pipeline.vertices, pipeline.diameters, config.box_templates)

    def initial_pose(self, image, K, obj_id, box_xywh, box_xyxy):
        R, t = box_initial_pose(box_xyxy, K, self.vertices[obj_id], self.config, diameter=self.diameters[obj_id])
        return R, t, None


class _PerObjectInitialiser:
    """An initialiser with one estimator (network) per object, loaded from per-object checkpoints."""

    def __init__(self, estimators: dict):
        self.estimators = estimators


class DscInitialiser(_PerObjectInitialiser):
    """DSC-PoseNet (one network per object): keypoints of both scales, PnP with the frame's K; its own
    confidence (mask probability x keypoint agreement) is returned."""

    @classmethod
    def from_config(cls, pipeline: "PoseEstimator", config: "PipelineConfig") -> "DscInitialiser":
        from functools import partial

        from .models.dsc_posenet import DscPoseNetEstimator

        load = partial(DscPoseNetEstimator.from_checkpoint, ransac=config.ransac,
                       keypoint_scales=config.dsc_keypoint_scales)
        return cls(pipeline.per_object_estimators(
            config.dsc_checkpoints, "dsc", "DSC-PoseNet", find_dsc_checkpoint, "obj_XXXXXX.pt, NAME.pt or dsc_NAME.pt",
            load))

    def initial_pose(self, image, K, obj_id, box_xywh, box_xyxy):
        est = self.estimators[obj_id].estimate(image, K, box_xywh)
        if not est.success:
            raise RuntimeError("DSC-PoseNet keypoints gave no PnP solution")
        return est.R, est.t, float(est.confidence)


class Self6dInitialiser(_PerObjectInitialiser):
    """Self6D (one ROI regression network per object): rotation, image-space centre and depth."""

    @classmethod
    def from_config(cls, pipeline: "PoseEstimator", config: "PipelineConfig") -> "Self6dInitialiser":
        from .models.self6d import Self6dEstimator

        return cls(pipeline.per_object_estimators(
            config.self6d_checkpoints, "self6d", "Self6D", find_self6d_checkpoint,
            "self6d/obj_XXXXXX.pt, self6d_obj_XXXXXX.pt or self6d_NAME.pt", Self6dEstimator.from_checkpoint))

    def initial_pose(self, image, K, obj_id, box_xywh, box_xyxy):
        R, t = self.estimators[obj_id].estimate(image, K, box_xywh)
        return R, t, None


class FrameMasks:
    """The weakly-supervised segmentation network (``models.segmentation.MaskPredictor``) as the pipeline's one
    mask source: ``get(image, [(obj_id, box xyxy pixel edges)]) -> [(probability [S,S] on the ROI crop, window)]``,
    each (object, box) of the current frame predicted once (the template initialiser and the aligner read the
    same masks)."""

    def __init__(self, predictor):
        self.predictor = predictor
        self._image = None
        self._cache: dict = {}

    @property
    def obj_ids(self) -> list[int]:
        return self.predictor.obj_ids

    @property
    def crop_size(self) -> int:
        return self.predictor.crop_size

    def get(self, image: np.ndarray, items) -> list:
        if self._image is not image:
            self._image, self._cache = image, {}
        keys = [(int(o), tuple(float(v) for v in box)) for o, box in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            for key, out in zip(todo, self.predictor.predict(image, [(o, np.array(b)) for o, b in todo])):
                self._cache[key] = out
        return [self._cache[k] for k in keys]


class TemplateMatcher:
    """Rendered templates matched in pretrained features (``templates``), for the initialiser and the aligner's
    ``templates`` hypotheses: ``pose(image, K, obj_id, box_xyxy) -> (R [3,3], t [3] metres, template score)``, the
    detection's crop with its background blacked out by the segmentation network's mask compared with every
    template of its object, the best template's rotation turned to the camera frame and the translation fitted
    to the mask's box (``box_initialiser.fit_translation``); one retrieval per (object, box) of a frame. Template
    banks are built at start-up or read from ``templates.cache_dir``."""

    def __init__(self, masks: FrameMasks, trunk, banks: dict, vertices: dict, diameters: dict, config: TemplateConfig):
        self.masks, self.trunk, self.banks, self.config = masks, trunk, banks, config
        self.vertices, self.diameters = vertices, diameters
        self._image, self._cache = None, {}

    @classmethod
    def for_pipeline(cls, pipeline: "PoseEstimator") -> "TemplateMatcher":
        """Banks (``pipeline.config.templates``) for the pipeline's objects that its segmentation network serves
        (the others have no mask to match)."""
        from .models.backbone import BackboneError
        from .render import RendererUnavailableError
        from .templates import FeatureTrunk, TemplateError, bank_for

        masks, config = pipeline.frame_masks(), pipeline.config.templates
        try:
            config.validate()
            trunk = FeatureTrunk(config.trunk, config.stride, pipeline.device)
            banks = {o: bank_for(o, pipeline.registry[o].mesh, trunk, config)
                     for o in sorted(set(pipeline.obj_ids) & set(masks.obj_ids))}
        except (TemplateError, BackboneError, RendererUnavailableError) as exc:
            raise PipelineConfigError(f"template matching: {exc}") from None
        return cls(masks, trunk, banks, pipeline.vertices, pipeline.diameters, config)

    def pose(self, image, K, obj_id: int, box_xyxy) -> tuple[np.ndarray, np.ndarray, float]:
        from .box_initialiser import fit_translation
        from .segmentation import roi
        from .templates import retrieve

        if self._image is not image:
            self._image, self._cache = image, {}
        key = (int(obj_id), tuple(float(v) for v in box_xyxy), tuple(np.asarray(K, dtype=float).ravel()))
        if key not in self._cache:
            (probability, window), = self.masks.get(image, [(obj_id, box_xyxy)])
            full = roi.paste(probability, window, image.shape[1], image.shape[0])
            found = retrieve(self.banks[obj_id], self.trunk, image, K, full, box_xyxy, self.config)
            R = found.rotations[0]
            t = fit_translation(found.box, K, self.vertices[obj_id], R, self.diameters[obj_id])
            self._cache[key] = (R, t, float(found.scores[0]))
        return self._cache[key]


class TemplateInitialiser:
    """Rotation from rendered templates (:class:`TemplateMatcher`); its own confidence is the template score."""

    def __init__(self, matcher: TemplateMatcher):
        self.matcher = matcher
        self.estimators: dict = {}

    @classmethod
    def from_config(cls, pipeline: "PoseEstimator", config: "PipelineConfig") -> "TemplateInitialiser":
        matcher = pipeline.template_matcher()
        unmasked = sorted(set(pipeline.obj_ids) - set(matcher.banks))
        if unmasked:
            raise PipelineConfigError(f"the templates initialiser needs masks, and the segmentation checkpoint has no "
                                      f"channel for objects {unmasked}; restrict obj_ids")
        return cls(matcher)

    def initial_pose(self, image, K, obj_id, box_xywh, box_xyxy):
        return self.matcher.pose(image, K, obj_id, box_xyxy)


# name -> initialiser class (``PipelineConfig.init``, the node's ``init`` parameter)
INITIALISERS: dict[str, type] = {"dsc": DscInitialiser, "box": BoxInitialiser, "self6d": Self6dInitialiser,
                                 "templates": TemplateInitialiser}


# --------------------------------------------------------------------------------------------
# Refiners: one protocol, one table
# --------------------------------------------------------------------------------------------
class Refiner(Protocol):
    """Improves poses of one frame: ``refine_poses(image, K, [(obj_id, R [3,3], t [3] metres, detection
    box xyxy pixel edges)], tracked) -> [(R, t) or None (left as it was)]``, one batch for the frame;
    ``tracked[i]``: item i starts from the previous frame's pose (a refiner may search less).
    ``obj_ids``: the objects it can refine; ``close()`` frees what it holds (renderers)."""

    obj_ids: set[int]

    def refine_poses(self, image: np.ndarray, K: np.ndarray, items: list,
                     tracked: Sequence[bool] | None = None) -> list: ...

    def close(self) -> None: ...


class DeepImStage:
    """DeepIM (deepim.txt sec. 3): ``iterations`` render-and-compare network passes, batched over the
    frame's detections, each with its detection box (drawn in the observed-mask channel when the
    checkpoint was trained so). Objects its checkpoint was not trained for are not refined."""

    def __init__(self, refiner, iterations: int):
        self.refiner, self.iterations = refiner, int(iterations)
        self.obj_ids = set(refiner.vertices)  # the objects its checkpoint serves

    @property
    def renderer(self):
        return self.refiner.renderer

    @classmethod
    def from_config(cls, pipeline: "PoseEstimator", config: "PipelineConfig") -> "DeepImStage":
        from functools import partial

        from .deepim.refiner import DeepImRefiner

        if config.deepim_checkpoint is None:
            raise PipelineConfigError("refine_iterations > 0 needs a DeepIM checkpoint (or set refine_iterations to 0)")
        meshes = {o: pipeline.registry[o].mesh for o in pipeline.obj_ids}
        # the zoom-in renderer is made now: a start-up failure, not one in the first frame
        refiner = _load(partial(DeepImRefiner.from_checkpoint, meshes=meshes), config.deepim_checkpoint, "DeepIM",
                        pipeline.device)
        return cls(refiner, config.refine_iterations)

    def refine_poses(self, image, K, items, tracked=None):
        out = self.refiner.refine(image, K, [(o, R, t) for o, R, t, _ in items], self.iterations,
                                  boxes=[box for *_, box in items])
        return [(out.R[i], out.t[i]) for i in range(len(items))]

    def close(self) -> None:
        if self.refiner.renderer is not None:
            self.refiner.renderer.close()
            self.refiner.renderer = None


class AlignStage:
    """Render-and-compare alignment at test time (``align``): per detection, the segmentation network's
    mask of the detection's ROI and the crop's image edges (with ``align.other_masks``, the frame's
    other detections' masks mark where the object may be hidden); the pose that makes the rendered
    silhouette agree with them (no pose network). Its confidence of the final pose (:meth:`scores`)
    becomes the results' ``score``. Objects the segmentation checkpoint was not trained for are not
    aligned. Masks and observations are computed once per frame (cached for :meth:`scores`)."""

    def __init__(self, masks: FrameMasks, renderer, obj_ids: set[int], config: AlignConfig, symmetric: dict[int, bool],
                 matcher: "TemplateMatcher | None" = None):
        from .align import tracking_config

        self.masks, self.renderer, self.obj_ids, self.config = masks, renderer, obj_ids, config
        self.matcher = matcher  # hypotheses "templates": template matching's pose competes with the start
        self.near = tracking_config(config)  # the shorter search for starts tracked from the previous frame
        self.symmetric = symmetric  # {obj_id: has a symmetry} (the confidence weighs it)
        self._frame: tuple | None = None  # (image, K, {box: Observation}) of the last frame

    @classmethod
    def from_config(cls, pipeline: "PoseEstimator", config: "PipelineConfig") -> "AlignStage":
        from .render import FastRenderer

        try:
            config.align.validate()
        except ValueError as exc:
            raise PipelineConfigError(str(exc)) from None
        masks = pipeline.frame_masks()
        obj_ids = set(masks.obj_ids) & set(pipeline.obj_ids)
        matcher = pipeline.template_matcher() if config.align.hypotheses == "templates" else None
        faces = config.align.render_faces
        try:
            renderer = FastRenderer(masks.crop_size, masks.crop_size)
        except Exception as exc:
            raise PipelineConfigError(f"alignment needs the OpenGL renderer: {exc}") from None
        for o in sorted(obj_ids):
            mesh = pipeline.registry[o].mesh
            renderer.add_object(o, mesh.decimated(faces) if faces > 0 else mesh)
        return cls(masks, renderer, obj_ids, config.align,
                   {o: bool(pipeline.registry[o].model_info.is_symmetric) for o in obj_ids}, matcher)

    def _observations(self, image, K, items) -> list:
        from .align import observe

        if self._frame is None or self._frame[0] is not image or not np.array_equal(self._frame[1], K):
            self._frame = (image, np.array(K), {})
        cache = self._frame[2]
        todo = [(int(o), tuple(box)) for o, *_, box in items if (int(o), tuple(box)) not in cache]
        if todo:
            from .segmentation import roi

            height, width = image.shape[:2]
            predicted = self.masks.get(image, todo)
            # each detection's mask in the full image: the others' are where this object may be hidden
            full = [roi.paste(p, w, width, height) for p, w in predicted] if self.config.other_masks else []
            for i, (key, (probability, window)) in enumerate(zip(todo, predicted)):
                others = [f for j, f in enumerate(full) if j != i]
                cache[key] = observe(image, K, probability, window, self.config,
                                     np.max(others, axis=0) if others else None)
        return [cache[(int(o), tuple(box))] for o, *_, box in items]

    def refine_poses(self, image, K, items, tracked=None):
        from .align import align

        tracked = tracked if tracked is not None else [False] * len(items)
        out = []
        for (obj_id, R, t, box), obs, from_track in zip(items, self._observations(image, K, items), tracked):
            extra = []
            if self.matcher is not None and not from_track and obj_id in self.matcher.banks:
                try:
                    R_m, t_m, _ = self.matcher.pose(image, K, obj_id, box)
                except Exception:  # no template pose for this detection: the start competes alone
                    R_m = None
                if R_m is not None and not (np.allclose(R_m, R) and np.allclose(t_m, t)):  # not the start itself
                    extra.append((R_m, t_m))
            try:
                R_new, t_new, _, _ = align(self.renderer, obj_id, R, t, obs, self.near if from_track else self.config,
                                           extra)
            except ValueError:  # a start behind the camera: left as it was
                out.append(None)
                continue
            out.append((R_new, t_new))
        return out

    def scores(self, image, K, items) -> list[float]:
        """The confidence (``align.score_pose``) of each item's pose."""
        from .align import score_pose

        return [score_pose(self.renderer, obj_id, R, t, obs, self.config, self.symmetric.get(obj_id, False))
                if t[2] > 0 else 0.0
                for (obj_id, R, t, _), obs in zip(items, self._observations(image, K, items))]

    def close(self) -> None:
        self._frame = None
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


# name -> refiner class (``PipelineConfig.refiners``, in the order given; DeepIM alone when
# ``refine_iterations`` > 0 and no order is given)
REFINERS: dict[str, type] = {"deepim": DeepImStage, "align": AlignStage}




def refiner_order(align: str, refine_iterations: int) -> list[str]:
    """``PipelineConfig.refiners`` for an ``align`` setting (``ALIGN_ORDERS``) and DeepIM iterations."""
    if align not in ALIGN_ORDERS:
        raise PipelineConfigError(f"align must be one of {ALIGN_ORDERS}, not {align!r}")
    deepim = ["deepim"] if refine_iterations > 0 else []
    return {"off": deepim, "before": ["align"] + deepim, "after": deepim + ["align"]}[align]


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------
class PoseEstimator:
    """``PoseEstimator(registry, config)``; ``estimate(image_rgb, K, detections) -> [PoseResult]``.

    ``registry`` is an ``objects.registry.ObjectRegistry`` (meshes for the box initialiser, the
    renderer and the confidence). Call :meth:`close` (or use ``with``) to free the renderer."""

    def __init__(self, registry, config: PipelineConfig | None = None):
        import torch

        self.config = config = config or PipelineConfig()
        if config.init not in INITIALISERS:
            raise PipelineConfigError(f"unknown initialiser {config.init!r}; choose one of {tuple(INITIALISERS)}")
        if int(config.refine_iterations) < 0:
            raise PipelineConfigError("refine_iterations must be >= 0 (0 disables DeepIM)")
        from .models.dsc_posenet import KEYPOINT_SCALES

        if config.dsc_keypoint_scales not in KEYPOINT_SCALES:
            raise PipelineConfigError(f"dsc_keypoint_scales {config.dsc_keypoint_scales!r} not in {KEYPOINT_SCALES}")
        self.registry = registry
        obj_ids = [int(o) for o in (config.obj_ids if config.obj_ids is not None else registry.ids)]
        unknown = [o for o in obj_ids if o not in registry]
        if unknown:
            raise PipelineConfigError(f"object ids {unknown} are not in the object registry (known: {registry.ids})")
        self.obj_ids = obj_ids
        self.device = torch.device(config.device)
        self.refiners: list[Refiner] = []
        self._masks: FrameMasks | None = None
        self._matcher: TemplateMatcher | None = None
        self.vertices = {}
        self.diameters = {}
        for o in obj_ids:
            entry = registry[o]
            try:
                self.vertices[o] = np.asarray(entry.mesh.vertices, dtype=np.float64)
                self.diameters[o] = float(entry.diameter)
            except Exception as exc:  # missing / corrupt mesh
                raise PipelineConfigError(f"object {o} ({entry.name}): cannot load mesh {entry.mesh_path}: {exc}") from None
        names = list(config.refiners) if config.refiners is not None else (
            ["deepim"] if int(config.refine_iterations) > 0 else [])
        unknown = [n for n in names if n not in REFINERS]
        if unknown or len(set(names)) != len(names):
            raise PipelineConfigError(f"refiners {names}: each at most once, from {tuple(REFINERS)}")
        if "deepim" in names and int(config.refine_iterations) == 0:
            raise PipelineConfigError("refiner 'deepim' needs refine_iterations > 0")
        self.initialiser: Initialiser = INITIALISERS[config.init].from_config(self, config)
        try:
            for name in names:
                self.refiners.append(REFINERS[name].from_config(self, config))
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------ loading
    def frame_masks(self) -> FrameMasks:
        """The segmentation network (``segmentation_checkpoint``), loaded once for every part that reads masks."""
        if self._masks is None:
            from .models.segmentation import MaskPredictor

            if self.config.segmentation_checkpoint is None:
                raise PipelineConfigError("the align refiner and the templates initialiser need a segmentation "
                                          "checkpoint (segmentation_checkpoint)")
            self._masks = FrameMasks(_load(MaskPredictor.from_checkpoint, self.config.segmentation_checkpoint,
                                           "segmentation", self.device))
        return self._masks

    def template_matcher(self) -> TemplateMatcher:
        """Template matching for the served objects (``templates``), set up once for every part that uses it."""
        if self._matcher is None:
            self._matcher = TemplateMatcher.for_pipeline(self)
        return self._matcher

    @property
    def dsc(self) -> dict:
        """{obj_id: DscPoseNetEstimator} when the initialiser is DSC-PoseNet, else {}."""
        return self.initialiser.estimators if isinstance(self.initialiser, DscInitialiser) else {}

    @property
    def self6d(self) -> dict:
        """{obj_id: Self6dEstimator} when the initialiser is Self6D, else {}."""
        return self.initialiser.estimators if isinstance(self.initialiser, Self6dInitialiser) else {}

    def per_object_estimators(self, spec, init: str, what: str, finder, layout: str, load) -> dict:
        """{obj_id: load(path, device)} for every served object's checkpoint (see ``checkpoint_paths``);
        the estimator's ``obj_id`` is the object its checkpoint serves: another object's checkpoint is
        one clear error."""
        estimators = {}
        for o, path in self.checkpoint_paths(spec, init, what, finder, layout).items():
            estimator = _load(load, path, what, self.device)
            if estimator.obj_id != o:
                raise PipelineConfigError(f"{path}: {what} checkpoint of object {estimator.obj_id}, expected object {o}")
            estimators[o] = estimator
        return estimators

    def checkpoint_paths(self, spec, init: str, what: str, finder, layout: str) -> dict:
        """{obj_id: checkpoint path} for every served object, from {obj_id: path} or a directory
        searched with ``finder``; a missing directory or object is one clear error."""
        if spec is None:
            raise PipelineConfigError(f"initialiser {init!r} needs {what} checkpoints (a directory or {{obj_id: path}})")
        paths, missing = {}, []
        if isinstance(spec, Mapping):
            given = {int(k): v for k, v in spec.items()}
            for o in self.obj_ids:
                if o in given:
                    paths[o] = Path(given[o])
                else:
                    missing.append(o)
        else:
            if not Path(spec).is_dir():
                raise PipelineConfigError(f"{what} checkpoint directory not found: {spec}")
            for o in self.obj_ids:
                found = finder(spec, o, self.registry[o].name)
                if found is None:
                    missing.append(o)
                else:
                    paths[o] = found
        if missing:
            where = f"in {spec} ({layout})" if not isinstance(spec, Mapping) else "given"
            raise PipelineConfigError(f"no {what} checkpoint {where} for objects {missing}; "
                                      "restrict obj_ids or add the checkpoints")
        return paths

    @property
    def refiner(self):
        """The DeepIM network refiner (``deepim.refiner.DeepImRefiner``) when DeepIM refines, else None."""
        stage = next((r for r in self.refiners if isinstance(r, DeepImStage)), None)
        return None if stage is None else stage.refiner

    @property
    def renderer(self):
        """DeepIM's fast renderer of the refined objects' meshes, or None."""
        stage = next((r for r in self.refiners if isinstance(r, DeepImStage)), None)
        return None if stage is None else stage.renderer

    @property
    def refine_ids(self) -> set[int]:
        """Objects that at least one refiner refines."""
        return set().union(*(r.obj_ids for r in self.refiners))

    def close(self) -> None:
        for refiner in self.refiners:
            refiner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ inference
    def confidence(self, obj_id: int, R, t, K, box_xyxy, width: int, height: int) -> float:
        """IoU of the pose's rendered-silhouette box (projected model, clipped to the image) and the box."""
        if not (np.isfinite(R).all() and np.isfinite(t).all()):
            return 0.0
        pb = projected_box(self.vertices[obj_id], np.asarray(R), np.asarray(t), K)
        if pb is None:
            return 0.0
        lo, hi = np.array([-0.5, -0.5]), np.array([width - 0.5, height - 0.5])
        p1, p2 = np.clip(pb[:2], lo, hi), np.clip(pb[2:], lo, hi)
        b1, b2 = np.asarray(box_xyxy[:2]), np.asarray(box_xyxy[2:])
        return box_iou_xywh((*p1, *(p2 - p1)), (*b1, *(b2 - b1)))

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray, detections: Sequence[Detection],
                 starts: Mapping[int, tuple] | None = None) -> list[PoseResult]:
        """One result per detection (same order). ``starts``: {index of a detection: (R [3,3], t [3])}
        poses that replace the initialiser for those detections (tracking: the previous frame's
        pose); the refiners then start from them (``PoseResult.tracked``)."""
        t_frame = time.perf_counter()
        starts = starts or {}
        K = _check_frame(image_rgb, K)
        height, width = image_rgb.shape[:2]
        results: list[PoseResult] = []
        todo: list[tuple[PoseResult, np.ndarray]] = []
        valid: list[tuple[int, PoseResult, np.ndarray]] = []  # (index, result, box xyxy) of plausible detections
        for index, det in enumerate(detections):
            try:
                obj_id = int(det.obj_id)
            except (TypeError, ValueError):
                obj_id = -1
            try:
                given = np.asarray(det.box_xywh, dtype=np.float64)
            except (TypeError, ValueError):
                given = np.full(4, np.nan)
            try:
                det_score = float(det.score)
            except (TypeError, ValueError):
                det_score = float("nan")
            res = PoseResult(obj_id=obj_id, box_xywh=given, detection_score=det_score)
            results.append(res)
            if obj_id not in self.vertices:
                res.reason = f"unknown class id {det.obj_id!r} (known: {self.obj_ids})"
                continue
            boxes = _box_xyxy_clipped(det.box_xywh, width, height)
            if isinstance(boxes, str):
                res.reason = boxes
                continue
            res.box_xywh, box_xyxy = boxes
            # a box no object of this size could make, or a non-finite score
            res.reason = implausible_detection(given, res.box_xywh, K, self.diameters[obj_id], det_score,
                                               self.config.box_limits)
            if res.reason:
                continue
            valid.append((index, res, box_xyxy))
        if self._masks is not None:  # every mask of the frame in one batch (the parts that read masks hit the cache)
            served = set(self._masks.obj_ids)
            self._masks.get(image_rgb, [(r.obj_id, b) for _, r, b in valid if r.obj_id in served])
        for index, res, box_xyxy in valid:
            obj_id = res.obj_id
            t0 = time.perf_counter()
            if index in starts:
                (R, t), own, res.tracked = starts[index], None, True
            else:
                try:
                    R, t, own = self.initialiser.initial_pose(image_rgb, K, obj_id, res.box_xywh, box_xyxy)
                except Exception as exc:  # e.g. PnP failure inside the estimator: skip, keep the frame
                    res.reason = f"initial pose failed: {type(exc).__name__}: {exc}"
                    continue
            res.timings["init"] = time.perf_counter() - t0
            R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64).reshape(3)
            if not (np.isfinite(R).all() and np.isfinite(t).all()):
                res.reason = "initial pose is not finite"
                continue
            res.init_R, res.init_t, res.init_score = R, t, own
            res.R, res.t = R.copy(), t.copy()
            todo.append((res, box_xyxy))
        # each refiner in turn, on every detection of an object it refines (one batch per frame)
        t_refine = 0.0
        for refiner in self.refiners:
            refine = [(r, b) for r, b in todo if r.obj_id in refiner.obj_ids]
            if not refine:
                continue
            t0 = time.perf_counter()
            out = refiner.refine_poses(image_rgb, K, [(r.obj_id, r.R, r.t, b) for r, b in refine],
                                       tracked=[r.tracked for r, _ in refine])
            t_refine += time.perf_counter() - t0
            for (r, _), pose in zip(refine, out):
                if pose is not None and np.isfinite(pose[0]).all() and np.isfinite(pose[1]).all():
                    r.R, r.t, r.refined = np.array(pose[0], dtype=np.float64), np.array(pose[1], dtype=np.float64), True
        # the aligner's confidence of the final pose (align.score_pose) where it aligns, else the box IoU
        aligner = next((s for s in self.refiners if isinstance(s, AlignStage)), None)
        scored = [(r, b) for r, b in todo if aligner is not None and r.obj_id in aligner.obj_ids]
        if scored:
            for (r, _), score in zip(scored, aligner.scores(image_rgb, K, [(r.obj_id, r.R, r.t, b) for r, b in scored])):
                r.score = score
        aligned = {id(r) for r, _ in scored}
        for r, box_xyxy in todo:
            if id(r) not in aligned:
                r.score = self.confidence(r.obj_id, r.R, r.t, K, box_xyxy, width, height)
        total = time.perf_counter() - t_frame
        for r, _ in todo:
            r.timings.update({"refine": t_refine if r.refined else 0.0, "total": total})
        return results


def load_pose_estimator(registry_path: str | os.PathLike, config: PipelineConfig, models_dir: str | None = None
                        ) -> PoseEstimator:
    """Registry YAML + config -> :class:`PoseEstimator` (registry problems as PipelineConfigError)."""
    from .objects.registry import ObjectRegistry, RegistryError

    try:
        registry = ObjectRegistry.from_yaml(registry_path, models_dir=models_dir)
    except RegistryError as exc:
        raise PipelineConfigError(str(exc)) from None
    return PoseEstimator(registry, config)


__all__ = ["Detection", "PoseResult", "PipelineConfig", "PipelineConfigError", "PoseEstimator", "Initialiser",
           "BoxInitialiser", "DscInitialiser", "Self6dInitialiser", "TemplateInitialiser", "TemplateMatcher", "FrameMasks", "Refiner", "DeepImStage", "AlignStage", "REFINERS",
           "find_dsc_checkpoint", "find_self6d_checkpoint", "load_pose_estimator", "INITIALISERS", "ALIGN_ORDERS",
           "refiner_order"]
