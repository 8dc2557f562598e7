"""Synthetic training data: rendered objects on random backgrounds, written as a BOP dataset.

What one image is (``SyntheticSceneGenerator.sample``):

1. ``objects_per_image`` objects (drawn from ``obj_ids``, without repetition while there are enough)
   get poses from :class:`PoseSamplingConfig`: the object origin projects to a uniform point of the
   image (inside a margin, so every object is at least partly in view) at a uniform depth; the
   viewpoint has a uniform elevation / azimuth on the object's view sphere (object +z is "up",
   elevation measured from the object's xy plane along the line of sight) and a uniform in-plane
   rotation. Bounding spheres of objects (and distractors) never intersect, so objects sit at
   different depths and occlude each other without interpenetrating.
2. Optional distractors (random boxes, spheres and cylinders of random colours, trimesh primitives)
   are rendered too but not annotated.
3. Each object is rendered alone (its full silhouette, also beyond the image border) and all together
   (visible parts). An object seen less than ``min_visib_fract`` is given a new pose, up to
   ``max_tries`` rounds; objects still failing are dropped.
4. The render is composited over a background (a scikit-image sample photograph with random
   scale/crop/flip, or a procedural texture), lit by a random :class:`~dsc_pose_core.render.LightConfig`,
   and augmented (colour jitter, blur, noise). Depth (metres) can get a sensor noise model
   (:mod:`dsc_pose_core.data.augment`).

Every image ``i`` draws from its own generator, ``SeedSequence(seed, spawn_key=(0, i))``, so an image
is the same whatever else was generated before it: runs resume and extend deterministically.

Dataset layout (BOP; ``generate_dataset``), ``OUT/``:

    camera.json                  cx, cy, fx, fy, width, height, depth_scale
    synth_config.json            the generator configuration (checked when resuming)
    models/models_info.json      the selected objects' entries, plus copies of their .ply files
    train_synt/000000/           (``split`` and ``scene_id`` are configurable)
        rgb/000000.png ...       uint8 RGB (png, or jpg with rgb_ext="jpg")
        depth/000000.png         uint16; value * depth_scale = millimetres (only with depth=True)
        mask/000000_000000.png   full silhouette of instance k inside the image (0/255)
        mask_visib/000000_000000.png  visible part of instance k
        scene_camera.json        cam_K, depth_scale
        scene_gt.json            obj_id, cam_R_m2c, cam_t_m2c (mm)
        scene_gt_info.json       bbox_obj, bbox_visib, px_count_all, px_count_valid, px_count_visib, visib_fract

The split is named ``train_synt`` (BOP's name for non-PBR synthetic training images, next to
``train_pbr``); the image/instance numbering and the JSON contents follow the BOP format, so
``bop_io`` and BOP tooling read it. ``scene_gt_info`` follows the BOP toolkit's ``calc_gt_info``:
``px_count_all`` and ``bbox_obj`` count the whole silhouette including the part outside the image,
``px_count_valid`` the silhouette pixels inside the image with a depth measurement, ``px_count_visib``
the visible pixels (exact, from the multi-object render's instance map), ``visib_fract`` =
``px_count_visib / px_count_all``; boxes are ``[x, y, x_max - x_min, y_max - y_min]`` as the toolkit's
``calc_2d_bbox`` writes them ([-1, -1, -1, -1] when empty).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import bop_io
from .augment import AugmentConfig, DepthNoiseConfig, augment_rgb, apply_depth_noise
from .backgrounds import BACKGROUND_KINDS, random_background
from .boxes import mask_box_bop

# LM-O / LINEMOD (Kinect v1) intrinsics at 640x480
LMO_K = (572.4114, 0.0, 325.2611, 0.0, 573.57043, 242.04899, 0.0, 0.0, 1.0)
DEFAULT_SPLIT = "train_synt"
DISTRACTOR_ID_BASE = -1000  # renderer ids of distractor shapes: -1000, -1001, ...


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoseSamplingConfig:
    """Distribution of object poses (angles in degrees, distances in metres)."""

    distance: tuple[float, float] = (0.35, 1.5)  # depth (camera z) of the object origin
    elevation_deg: tuple[float, float] = (-15.0, 90.0)  # camera above the object's xy plane
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    inplane_deg: tuple[float, float] = (-180.0, 180.0)  # rotation about the line of sight
    image_margin: float = 0.05  # the origin projects into [m W, (1-m) W] x [m H, (1-m) H]
    max_tries: int = 100  # per object, to find a place that does not intersect the others
    # clutter like the real test scenes (LM-O): > 0 places every object and distractor of an image
    # within this distance (metres) of one common centre, so they touch and occlude each other;
    # 0 scatters them over the whole image
    cluster_radius: float = 0.0
    # bounding spheres may overlap down to this fraction of the sum of their radii (spheres around
    # elongated objects are loose); a failed try widens the cluster by 15 %
    cluster_spacing: float = 0.75

    def validate(self) -> None:
        for name in ("distance", "elevation_deg", "azimuth_deg", "inplane_deg"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"pose sampling: {name} range ({lo}, {hi}) is empty")
        if not self.distance[0] > 0:
            raise ValueError("pose sampling: distances must be positive")
        if not -90 <= self.elevation_deg[0] <= self.elevation_deg[1] <= 90:
            raise ValueError("pose sampling: elevations must lie in [-90, 90] degrees")
        if not 0 <= self.image_margin < 0.5:
            raise ValueError("pose sampling: image_margin must be in [0, 0.5)")
        if self.cluster_radius < 0 or not 0 < self.cluster_spacing <= 1:
            raise ValueError("pose sampling: cluster_radius must be >= 0 and cluster_spacing in (0, 1]")


@dataclass(frozen=True)
class DistractorConfig:
    """Random primitive shapes rendered into the image but not annotated."""

    min_count: int = 0
    max_count: int = 0
    size: tuple[float, float] = (0.03, 0.15)  # metres, largest extent
    kinds: tuple[str, ...] = ("box", "sphere", "cylinder")
    bank_size: int = 16  # distinct shapes (and colours) made once per seed


@dataclass(frozen=True)
class LightingConfig:
    """Ranges of the random Blinn-Phong light (see ``render.LightConfig``)."""

    ambient: tuple[float, float] = (0.25, 0.6)
    diffuse: tuple[float, float] = (0.3, 0.8)
    specular: tuple[float, float] = (0.0, 0.4)
    shininess: tuple[float, float] = (8.0, 64.0)
    p_headlight: float = 0.2  # otherwise a directional light from the camera's side
    tint: float = 0.15  # light colour channels uniform in [1 - tint, 1]


@dataclass(frozen=True)
class SynthConfig:
    models_dir: str
    obj_ids: tuple[int, ...]
    out_dir: str = "synthetic"
    n_images: int = 100
    seed: int = 0
    width: int = 640
    height: int = 480
    K: tuple[float, ...] = LMO_K  # row-major 3x3
    depth_scale: float = 0.1  # stored depth value * depth_scale = millimetres (BOP)
    objects_per_image: int = 1
    min_visib_fract: float = 0.1
    max_tries: int = 30  # rounds of re-placing objects that are not visible enough
    depth: bool = False  # write depth/ images
    depth_noise: bool = False  # store depth with the sensor noise model applied
    depth_noise_config: DepthNoiseConfig = DepthNoiseConfig()
    pose: PoseSamplingConfig = PoseSamplingConfig()
    distractors: DistractorConfig = DistractorConfig()
    lighting: LightingConfig = LightingConfig()
    augment: AugmentConfig = AugmentConfig()
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS
    background_dir: str = ""  # images for background kind "folder"
    # per-object appearance randomisation before compositing (0 = off): colour gains per channel in
    # [1 - s, 1 + s], a brightness offset in [-s/2, s/2] x 255 and a saturation factor in [1 - s, 1 + s],
    # drawn per rendered instance, so mesh colours need not match the photographs
    object_jitter: float = 0.0
    edge_blend: bool = True  # soften the inner edge of silhouettes when compositing
    mesh_unit_scale: float = 0.001  # BOP meshes are millimetres
    split: str = DEFAULT_SPLIT
    scene_id: int = 0
    rgb_ext: str = "png"
    flush_every: int = 25  # rewrite the JSON files every this many images
    progress: bool = True

    # fields that do not change the images (a resumed run may differ in these)
    RUNTIME_FIELDS = ("out_dir", "n_images", "flush_every", "progress")

    def validate(self) -> None:
        if not self.obj_ids:
            raise ValueError("no object ids given")
        if self.n_images < 0 or self.objects_per_image < 1:
            raise ValueError("n_images must be >= 0 and objects_per_image >= 1")
        if self.width <= 0 or self.height <= 0:
            raise ValueError("image size must be positive")
        if len(self.K) != 9:
            raise ValueError("K must hold 9 numbers (row-major 3x3)")
        if not 0 <= self.min_visib_fract <= 1:
            raise ValueError("min_visib_fract must be in [0, 1]")
        if self.rgb_ext not in ("png", "jpg"):
            raise ValueError("rgb_ext must be 'png' or 'jpg'")
        if not self.depth_scale > 0:
            raise ValueError("depth_scale must be positive")
        if self.distractors.max_count < self.distractors.min_count:
            raise ValueError("distractors: max_count < min_count")
        self.pose.validate()

    @property
    def K_matrix(self) -> np.ndarray:
        return np.asarray(self.K, dtype=np.float64).reshape(3, 3)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict) -> "SynthConfig":
        nested = {"pose": PoseSamplingConfig, "distractors": DistractorConfig, "lighting": LightingConfig,
                  "augment": AugmentConfig, "depth_noise_config": DepthNoiseConfig}
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            if f.name in nested:
                value = nested[f.name](**{k: _tuplify(v) for k, v in value.items()})
            kwargs[f.name] = _tuplify(value)
        return cls(**kwargs)

    def content_dict(self) -> dict:
        """The settings that determine the images (compared when resuming)."""
        d = self.to_dict()
        for key in self.RUNTIME_FIELDS:
            d.pop(key, None)
        d["models_dir"] = os.path.abspath(d["models_dir"])
        return d


def _tuplify(value):
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """K of the same camera resampled from (W, H) to (W', H') (pixel centres at integers)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


# --------------------------------------------------------------------------------------------
# Random numbers
# --------------------------------------------------------------------------------------------
def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: independent of every other image."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0, int(index))))


def _bank_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))


# --------------------------------------------------------------------------------------------
# Pose sampling
# --------------------------------------------------------------------------------------------
def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _align_z_to(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking (0, 0, 1) to the unit vector ``direction`` (z > 0)."""
    d = direction / np.linalg.norm(direction)
    v = np.array([-d[1], d[0], 0.0])  # e_z x d
    c = d[2]
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def view_rotation(elevation: float, azimuth: float, inplane: float, t: np.ndarray) -> np.ndarray:
    """Object -> camera rotation for a camera at (elevation, azimuth) radians on the object's view sphere,
    looking at the object origin, which lies at ``t`` in the camera frame.

    The camera centre in the object frame is ``|t| (cos e cos a, cos e sin a, sin e)``; the object's
    +z axis points up in the image before the in-plane rotation (about the line of sight).
    """
    ce, se, ca, sa = np.cos(elevation), np.sin(elevation), np.cos(azimuth), np.sin(azimuth)
    c = np.array([ce * ca, ce * sa, se])
    z_cam = -c  # optical axis, object frame
    x_cam = np.array([-sa, ca, 0.0])  # horizontal: well defined at every elevation
    y_cam = np.cross(z_cam, x_cam)  # image "down" = object -z when seen from the side
    R_c2o = np.stack([x_cam, y_cam, z_cam], axis=1)
    return _align_z_to(np.asarray(t, dtype=np.float64)) @ _rot_z(inplane) @ R_c2o.T


def sample_pose(rng: np.random.Generator, config: PoseSamplingConfig, K: np.ndarray, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
    """One pose (R [3,3], t [3] metres) from the configured distribution."""
    m = config.image_margin
    u = rng.uniform(m * width, (1 - m) * width) - 0.5
    v = rng.uniform(m * height, (1 - m) * height) - 0.5
    z = rng.uniform(*config.distance)
    elevation = np.deg2rad(rng.uniform(*config.elevation_deg))
    azimuth = np.deg2rad(rng.uniform(*config.azimuth_deg))
    inplane = np.deg2rad(rng.uniform(*config.inplane_deg))
    t = z * np.linalg.solve(K, np.array([u, v, 1.0]))
    return view_rotation(elevation, azimuth, inplane, t), t


def sample_pose_near(rng: np.random.Generator, config: PoseSamplingConfig, centre: np.ndarray,
                     radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A pose whose origin lies uniformly in the ball of ``radius`` around ``centre`` (camera frame),
    viewed from the configured elevation / azimuth / in-plane ranges."""
    direction = rng.standard_normal(3)
    offset = direction / np.linalg.norm(direction) * radius * rng.uniform() ** (1.0 / 3.0)
    t = np.asarray(centre, dtype=np.float64) + offset
    t[2] = max(t[2], 0.5 * config.distance[0])  # never behind or at the camera
    elevation = np.deg2rad(rng.uniform(*config.elevation_deg))
    azimuth = np.deg2rad(rng.uniform(*config.azimuth_deg))
    inplane = np.deg2rad(rng.uniform(*config.inplane_deg))
    return view_rotation(elevation, azimuth, inplane, t), t


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


# --------------------------------------------------------------------------------------------
# Boxes and masks (BOP conventions)
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Distractor shapes
# --------------------------------------------------------------------------------------------
def make_distractor_bank(config: DistractorConfig, seed: int):
    """[(mesh (ObjectMesh, metres), colour rgb in [0,1], bounding radius)] made from trimesh primitives."""
    import trimesh

    from ..objects.mesh import ObjectMesh

    rng = _bank_rng(seed)
    bank = []
    kinds = tuple(config.kinds)
    for _ in range(config.bank_size if config.max_count > 0 else 0):
        kind = kinds[int(rng.integers(len(kinds)))]
        size = rng.uniform(*config.size)
        if kind == "box":
            extents = size * rng.uniform(0.3, 1.0, size=3)
            extents[int(rng.integers(3))] = size
            mesh = trimesh.creation.box(extents=extents)
        elif kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=2, radius=size / 2)
        elif kind == "cylinder":
            radius = size / 2 * rng.uniform(0.3, 1.0)
            mesh = trimesh.creation.cylinder(radius=radius, height=size, sections=24)
        else:
            raise ValueError(f"unknown distractor kind {kind!r}; use box, sphere, cylinder")
        if kind != "sphere":
            mesh.unmerge_vertices()  # flat shading of faces
        color = rng.uniform(0.05, 1.0, size=3)
        obj = ObjectMesh(vertices=np.asarray(mesh.vertices, np.float64), faces=np.asarray(mesh.faces, np.int64),
                         vertex_colors=None, vertex_normals=np.asarray(mesh.vertex_normals, np.float64),
                         source_path=f"<distractor {kind}>")
        radius = float(np.linalg.norm(obj.vertices, axis=1).max())
        bank.append((obj, tuple(float(c) for c in color), radius))
    return bank


# --------------------------------------------------------------------------------------------
# One sample
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticSample:
    """One synthetic image in memory (poses in metres, masks bool, depth float32 metres)."""

    rgb: np.ndarray  # uint8 [H,W,3]
    depth: np.ndarray  # float32 [H,W] metres, 0 = none; noisy when the noise model is on
    depth_clean: np.ndarray  # float32 [H,W] the rendered depth
    K: np.ndarray  # [3,3]
    obj_ids: list[int]
    R: np.ndarray  # [N,3,3] object -> camera
    t: np.ndarray  # [N,3] metres
    masks: np.ndarray  # bool [N,H,W] full silhouette inside the image
    masks_visib: np.ndarray  # bool [N,H,W] visible part
    infos: list[bop_io.GtInfo]
    background: str = ""
    light: object = None
    n_distractors: int = 0

    @property
    def poses(self) -> list[bop_io.GtPose]:
        return [bop_io.GtPose(o, R, t) for o, R, t in zip(self.obj_ids, self.R, self.t)]


@dataclass
class _Placed:
    obj_id: int  # renderer id
    R: np.ndarray
    t: np.ndarray
    radius: float


def jitter_instances(rgb: np.ndarray, instance: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Independent colour gain, brightness and saturation change for each instance id > 0 of
    ``instance`` in the float RGB render ``rgb`` (a new array, values clipped to 0-255)."""
    out = rgb.copy()
    for inst in np.unique(instance):
        if inst <= 0:
            continue
        m = instance == inst
        region = out[m] * rng.uniform(1.0 - strength, 1.0 + strength, 3) + rng.uniform(-0.5, 0.5) * strength * 255.0
        grey = region.mean(axis=1, keepdims=True)
        out[m] = grey + (region - grey) * rng.uniform(1.0 - strength, 1.0 + strength)
    return np.clip(out, 0.0, 255.0)


class SyntheticSceneGenerator:
    """Renders synthetic samples of the configured objects (one OpenGL renderer, meshes loaded once).

    ``sample(i)`` returns image ``i`` of the dataset (deterministic in (seed, i)); ``sample_from(rng)``
    draws a fresh one from any generator (on-the-fly training data).
    """

    def __init__(self, config: SynthConfig, renderer=None, meshes: dict | None = None):
        from ..objects import load_mesh, load_models_info
        from ..render import FastRenderer

        config.validate()
        self.config = config
        self.K = config.K_matrix
        models_dir = Path(config.models_dir)
        info_path = models_dir / "models_info.json"
        self.models_info = load_models_info(info_path, unit_scale=config.mesh_unit_scale) if info_path.is_file() else {}
        self.meshes = dict(meshes or {})
        for obj_id in config.obj_ids:
            if obj_id not in self.meshes:
                self.meshes[obj_id] = load_mesh(models_dir / f"obj_{int(obj_id):06d}.ply", config.mesh_unit_scale)
        self.radius = {o: float(np.linalg.norm(m.vertices, axis=1).max()) for o, m in self.meshes.items()}
        self.corners = {o: m.bbox_corners() for o, m in self.meshes.items()}
        self._own_renderer = renderer is None
        self.renderer = renderer or FastRenderer(config.width, config.height)
        for obj_id in config.obj_ids:
            self.renderer.add_object(int(obj_id), self.meshes[obj_id])
        self.distractors = make_distractor_bank(config.distractors, config.seed)
        for k, (mesh, color, _) in enumerate(self.distractors):
            self.renderer.add_object(DISTRACTOR_ID_BASE - k, mesh, color=color)

    def close(self) -> None:
        if self._own_renderer and self.renderer is not None:
            self.renderer.close()
        self.renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- placement
    def _place(self, rng, obj_id: int, radius: float, others: list[_Placed], random_rot: bool = False,
               centre: np.ndarray | None = None) -> _Placed:
        """A pose for one object that does not intersect ``others`` (bounding spheres); with a cluster
        ``centre``, near it (``pose.cluster_radius``), allowing the spheres to overlap by ``cluster_spacing``."""
        cfg = self.config
        R = t = None
        spacing = 1.0 if centre is None else cfg.pose.cluster_spacing
        for attempt in range(max(1, cfg.pose.max_tries)):
            if centre is None:
                R, t = sample_pose(rng, cfg.pose, self.K, cfg.width, cfg.height)
            else:
                R, t = sample_pose_near(rng, cfg.pose, centre, cfg.pose.cluster_radius * 1.15 ** attempt)
            if random_rot:
                R = random_rotation(rng)
            if all(np.linalg.norm(t - o.t) >= spacing * (radius + o.radius) for o in others):
                break
        return _Placed(obj_id, R, t, radius)

    def _silhouette(self, placed: _Placed) -> tuple[np.ndarray, int, tuple[int, int, int, int]]:
        """(in-image mask, px_count_all, bbox_obj) of one object rendered alone; the part outside the
        image is rendered on an extended canvas (as BOP's calc_gt_info does)."""
        cfg = self.config
        W, H = cfg.width, cfg.height
        pts = self.corners[placed.obj_id] @ placed.R.T + placed.t
        z = np.maximum(pts[:, 2], 1e-6)
        u = self.K[0, 0] * pts[:, 0] / z + self.K[0, 1] * pts[:, 1] / z + self.K[0, 2]
        v = self.K[1, 1] * pts[:, 1] / z + self.K[1, 2]

        def pad(lo, hi, size):  # grow in steps of 64 px, at most one image size each way
            before = 0 if lo >= 0 else min(size, int(np.ceil((-lo + 2) / 64.0)) * 64)
            after = 0 if hi <= size - 1 else min(size, int(np.ceil((hi - size + 3) / 64.0)) * 64)
            return before, after

        left, right = pad(u.min(), u.max(), W)
        top, bottom = pad(v.min(), v.max(), H)
        K_ext = self.K.copy()
        K_ext[0, 2] += left
        K_ext[1, 2] += top
        out = self.renderer.render(K_ext, [(placed.obj_id, placed.R, placed.t)], width=W + left + right,
                                   height=H + top + bottom, rgb=False)
        full = out.instance > 0
        inside = full[top:top + H, left:left + W]
        return np.ascontiguousarray(inside), int(full.sum()), mask_box_bop(full, offset=(-left, -top))

    def _light(self, rng):
        from ..render import LightConfig

        lc = self.config.lighting
        ambient, diffuse = rng.uniform(*lc.ambient), rng.uniform(*lc.diffuse)
        specular, shininess = rng.uniform(*lc.specular), rng.uniform(*lc.shininess)
        color = tuple(float(c) for c in rng.uniform(1 - lc.tint, 1.0, size=3))
        direction = rng.standard_normal(3)
        headlight = rng.random() < lc.p_headlight
        direction[2] = -abs(direction[2]) - 0.3  # from the camera's side of the scene
        return LightConfig(ambient=float(ambient), diffuse=float(diffuse), specular=float(specular),
                           shininess=float(shininess),
                           direction=None if headlight else tuple(float(d) for d in direction / np.linalg.norm(direction)),
                           color=color)

    # ---------------------------------------------------------------- sampling
    def sample(self, index: int) -> SyntheticSample:
        """Image ``index`` of the dataset with this configuration's seed."""
        return self.sample_from(image_rng(self.config.seed, index))

    def sample_from(self, rng: np.random.Generator) -> SyntheticSample:
        cfg = self.config
        W, H = cfg.width, cfg.height
        ids = list(cfg.obj_ids)
        n = cfg.objects_per_image
        chosen = list(rng.choice(ids, size=n, replace=n > len(ids)))
        centre = sample_pose(rng, cfg.pose, self.K, W, H)[1] if cfg.pose.cluster_radius > 0 else None
        objects: list[_Placed] = []
        for obj_id in chosen:
            objects.append(self._place(rng, int(obj_id), self.radius[int(obj_id)], objects, centre=centre))
        n_distr = int(rng.integers(cfg.distractors.min_count, cfg.distractors.max_count + 1)) if self.distractors else 0
        distractors: list[_Placed] = []
        for _ in range(n_distr):
            k = int(rng.integers(len(self.distractors)))
            distractors.append(self._place(rng, DISTRACTOR_ID_BASE - k, self.distractors[k][2],
                                           objects + distractors, random_rot=True, centre=centre))
        light = self._light(rng)
        background, bg_kind = random_background(rng, W, H, cfg.background_kinds, folder=cfg.background_dir)
        post_rng = np.random.default_rng(rng.integers(2**63))  # augmentation and depth noise

        sil: list = [None] * len(objects)
        render = None
        for attempt in range(max(1, cfg.max_tries)):
            for i, o in enumerate(objects):
                if sil[i] is None:
                    sil[i] = self._silhouette(o)
            render = self.renderer.render(self.K, [(o.obj_id, o.R, o.t) for o in objects + distractors],
                                          width=W, height=H, light=light)
            counts = np.bincount(render.instance.ravel(), minlength=len(objects) + len(distractors) + 1)
            bad = [i for i in range(len(objects))
                   if sil[i][1] == 0 or counts[i + 1] / sil[i][1] < cfg.min_visib_fract - 1e-12]
            if not bad:
                break
            if attempt == cfg.max_tries - 1:  # give up on these objects
                keep = [i for i in range(len(objects)) if i not in bad]
                objects = [objects[i] for i in keep]
                sil = [sil[i] for i in keep]
                render = self.renderer.render(self.K, [(o.obj_id, o.R, o.t) for o in objects + distractors],
                                              width=W, height=H, light=light)
                break
            for i in bad:
                others = [o for j, o in enumerate(objects) if j != i] + distractors
                objects[i] = self._place(rng, objects[i].obj_id, objects[i].radius, others, centre=centre)
                sil[i] = None

        # composite
        any_mask = render.instance > 0
        alpha = any_mask.astype(np.float32)
        if cfg.edge_blend:
            alpha = np.minimum(cv2.GaussianBlur(alpha, (3, 3), 0.8), alpha)
        foreground = render.rgb.astype(np.float32)
        if cfg.object_jitter > 0:
            foreground = jitter_instances(foreground, render.instance, np.random.default_rng(post_rng.integers(2**63)),
                                          cfg.object_jitter)
        rgb = foreground * alpha[..., None] + background.astype(np.float32) * (1 - alpha[..., None])
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        rgb = augment_rgb(rgb, post_rng, cfg.augment)
        depth_clean = render.depth.astype(np.float32)
        depth = apply_depth_noise(depth_clean, post_rng, cfg.depth_noise_config) if cfg.depth_noise else depth_clean
        if cfg.depth:  # what a reader gets back from the uint16 file
            depth = _quantise_depth(depth, cfg.depth_scale)

        masks = np.zeros((len(objects), H, W), bool)
        masks_visib = np.zeros((len(objects), H, W), bool)
        infos = []
        for i in range(len(objects)):
            inside, px_all, bbox_obj = sil[i]
            visib = render.instance == i + 1
            masks[i], masks_visib[i] = inside, visib
            px_visib = int(visib.sum())
            infos.append(bop_io.GtInfo(
                bbox_obj=bbox_obj, bbox_visib=mask_box_bop(visib), px_count_all=px_all,
                px_count_valid=int((inside & (depth > 0)).sum()), px_count_visib=px_visib,
                visib_fract=px_visib / px_all if px_all > 0 else 0.0))
        return SyntheticSample(
            rgb=rgb, depth=depth, depth_clean=depth_clean, K=self.K.copy(),
            obj_ids=[o.obj_id for o in objects],
            R=np.stack([o.R for o in objects]) if objects else np.zeros((0, 3, 3)),
            t=np.stack([o.t for o in objects]) if objects else np.zeros((0, 3)),
            masks=masks, masks_visib=masks_visib, infos=infos, background=bg_kind, light=light,
            n_distractors=len(distractors))


def _quantise_depth(depth_m: np.ndarray, depth_scale: float) -> np.ndarray:
    """Depth as stored in a BOP uint16 png and read back (metres)."""
    return (depth_to_uint16(depth_m, depth_scale).astype(np.float32) * (depth_scale / 1000.0)).astype(np.float32)


def depth_to_uint16(depth_m: np.ndarray, depth_scale: float) -> np.ndarray:
    """Metres -> BOP depth image values (value * depth_scale = mm), clipped to uint16."""
    return np.clip(np.rint(np.asarray(depth_m, np.float64) * 1000.0 / depth_scale), 0, 65535).astype(np.uint16)


def read_depth(path: str | os.PathLike, depth_scale: float) -> np.ndarray:
    """A BOP depth png in metres (float32)."""
    raw = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FileNotFoundError(f"cannot read depth image {path}")
    return (raw.astype(np.float32) * (depth_scale / 1000.0)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Dataset writing
# --------------------------------------------------------------------------------------------
class SceneWriter:
    """Paths and files of one BOP scene of a synthetic dataset."""

    def __init__(self, out_dir: str | os.PathLike, split: str, scene_id: int, rgb_ext: str = "png", depth: bool = False):
        self.root = Path(out_dir)
        self.scene = bop_io.scene_dir(self.root, scene_id, split)
        self.rgb_ext, self.depth = rgb_ext, depth

    def rgb_path(self, im_id: int) -> Path:
        return self.scene / "rgb" / f"{im_id:06d}.{self.rgb_ext}"

    def depth_path(self, im_id: int) -> Path:
        return self.scene / "depth" / f"{im_id:06d}.png"

    def mask_path(self, im_id: int, inst: int, visib: bool = False) -> Path:
        return self.scene / ("mask_visib" if visib else "mask") / f"{im_id:06d}_{inst:06d}.png"

    def files(self, im_id: int, n_instances: int) -> list[Path]:
        out = [self.rgb_path(im_id)]
        if self.depth:
            out.append(self.depth_path(im_id))
        for k in range(n_instances):
            out += [self.mask_path(im_id, k), self.mask_path(im_id, k, visib=True)]
        return out

    def make_dirs(self) -> None:
        for sub in ("rgb", "mask", "mask_visib") + (("depth",) if self.depth else ()):
            (self.scene / sub).mkdir(parents=True, exist_ok=True)
            for tmp in (self.scene / sub).glob(".*.tmp*"):  # left by an interrupted run
                tmp.unlink(missing_ok=True)

    def write_sample(self, im_id: int, sample: SyntheticSample, depth_scale: float) -> None:
        """Masks and depth first, the rgb image last: a present rgb file marks a finished image."""
        for k in range(len(sample.obj_ids)):
            bop_io.atomic_write_image(self.mask_path(im_id, k), sample.masks[k].astype(np.uint8) * 255)
            bop_io.atomic_write_image(self.mask_path(im_id, k, visib=True), sample.masks_visib[k].astype(np.uint8) * 255)
        if self.depth:
            bop_io.atomic_write_image(self.depth_path(im_id), depth_to_uint16(sample.depth, depth_scale))
        bop_io.atomic_write_image(self.rgb_path(im_id), sample.rgb)


@dataclass
class GenerationReport:
    path: Path
    rendered: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _write_models(config: SynthConfig, out: Path) -> None:
    """OUT/models: the selected objects' models_info entries and copies of their meshes."""
    src = Path(config.models_dir)
    dst = out / "models"
    dst.mkdir(parents=True, exist_ok=True)
    info_path = src / "models_info.json"
    if info_path.is_file():
        with open(info_path) as f:
            info = json.load(f)
        selected = {str(int(k)): v for k, v in info.items() if int(k) in set(int(o) for o in config.obj_ids)}
        bop_io.atomic_write_text(dst / "models_info.json", json.dumps(selected, indent=2) + "\n")
    for obj_id in config.obj_ids:
        name = f"obj_{int(obj_id):06d}.ply"
        target = dst / name
        if not target.exists() or target.stat().st_size != (src / name).stat().st_size:
            shutil.copyfile(src / name, target)


def _check_config(config: SynthConfig, out: Path) -> None:
    path = out / "synth_config.json"
    if path.is_file():
        with open(path) as f:
            old = SynthConfig.from_dict(json.load(f))
        if old.content_dict() != config.content_dict():
            a, b = old.content_dict(), config.content_dict()
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ValueError(f"{out} holds a dataset made with other settings ({', '.join(diff)}); "
                             "use a new output folder (or the same settings to resume)")
    bop_io.atomic_write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")


def generate_dataset(config: SynthConfig, generator: SyntheticSceneGenerator | None = None,
                     report: GenerationReport | None = None) -> Path:
    """Write (or complete) the BOP dataset described by ``config``; returns the dataset root.

    Images already finished (rgb, depth, masks present and listed in scene_gt.json) are skipped;
    the JSON files are rewritten atomically every ``flush_every`` images and at the end (also when
    interrupted), so an interrupted run resumes cleanly and yields the same bytes.
    """
    config.validate()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(config, out)
    report = report if report is not None else GenerationReport(out)
    report.path = out
    t0 = time.perf_counter()
    writer = SceneWriter(out, config.split, config.scene_id, config.rgb_ext, config.depth)
    writer.make_dirs()
    bop_io.save_camera_json(out / "camera.json", bop_io.DatasetCamera(
        K=config.K_matrix, width=config.width, height=config.height, depth_scale=config.depth_scale))
    _write_models(config, out)

    gt_path, info_path, cam_path = (writer.scene / n for n in ("scene_gt.json", "scene_gt_info.json", "scene_camera.json"))
    # Entries of finished images are kept as they were read (raw JSON), so a resumed run rewrites
    # the files byte for byte; they are parsed with the bop_io readers to validate them.
    tables = []
    for path, reader in ((gt_path, bop_io.load_scene_gt), (info_path, bop_io.load_scene_gt_info),
                         (cam_path, bop_io.load_scene_camera)):
        raw = {}
        if path.is_file():
            reader(path)
            with open(path, encoding="utf-8") as f:
                raw = {int(k): v for k, v in json.load(f).items()}
        tables.append(raw)
    scene_gt, scene_info, scene_cam = tables
    done = {i for i in scene_gt
            if i in scene_info and i in scene_cam and all(p.is_file() for p in writer.files(i, len(scene_gt[i])))}
    todo = [i for i in range(config.n_images) if i not in done]
    report.skipped = sorted(i for i in range(config.n_images) if i in done)
    for table in tables:  # images past n_images from a longer earlier run stay listed if finished
        for i in [k for k in table if k not in done]:
            del table[i]

    def flush():
        bop_io.save_image_keyed_json(gt_path, scene_gt)
        bop_io.save_image_keyed_json(info_path, scene_info)
        bop_io.save_image_keyed_json(cam_path, scene_cam)

    own = generator is None
    bar = None
    try:
        if todo:
            generator = generator or SyntheticSceneGenerator(config)
            if config.progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), desc="dsc-pose-synth", unit="img")
            for count, im_id in enumerate(todo, start=1):
                sample = generator.sample(im_id)
                writer.write_sample(im_id, sample, config.depth_scale)
                scene_gt[im_id] = bop_io.gt_to_json(sample.poses)
                scene_info[im_id] = bop_io.gt_info_to_json(sample.infos)
                scene_cam[im_id] = bop_io.camera_to_json(bop_io.CameraInfo(K=sample.K, depth_scale=config.depth_scale))
                report.rendered.append(im_id)
                if bar is not None:
                    bar.update(1)
                if config.flush_every > 0 and count % config.flush_every == 0:
                    flush()
    finally:
        flush()
        if bar is not None:
            bar.close()
        if own and generator is not None:
            generator.close()
        report.seconds = time.perf_counter() - t0
    return out
