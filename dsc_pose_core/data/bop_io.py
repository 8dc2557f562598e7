"""Reading and writing BOP-format files, converting millimetres to metres at this edge.

Covered here (see the BOP format description, ``docs/bop_datasets_format.md`` of the toolkit):

- ``scene_camera.json``: per image ``cam_K`` (3x3 row-major), ``depth_scale`` and optionally
  ``cam_R_w2c`` / ``cam_t_w2c`` (mm).
- ``scene_gt.json``: per image a list of ``{obj_id, cam_R_m2c, cam_t_m2c (mm)}``.
- ``scene_gt_info.json``: per image a list (same order as scene_gt) of ``bbox_obj``,
  ``bbox_visib`` ([x, y, w, h] px), ``px_count_all``, ``px_count_valid``, ``px_count_visib``,
  ``visib_fract``.
- test targets (``test_targets_bop19.json``): a list of ``{scene_id, im_id, obj_id, inst_count}``.
- BOP19 result CSV: ``scene_id,im_id,obj_id,score,R,t,time`` where ``R`` is 9 space-separated
  numbers (row-major), ``t`` 3 numbers in millimetres and ``time`` seconds (-1 if unknown).

- ``camera.json`` (dataset level): ``cx, cy, fx, fy, width, height, depth_scale``.

Everything returned is in metres; every writer takes metres. Writers replace the file atomically
(temporary file in the same folder + ``os.replace``), so a reader never sees half a file. Only JSON and CSV are read
(no pickle). Malformed input raises :class:`BopFormatError` naming the file (and line for CSV).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MM_TO_M = 0.001
M_TO_MM = 1000.0

RESULTS_HEADER = ("scene_id", "im_id", "obj_id", "score", "R", "t", "time")


class BopFormatError(ValueError):
    """A BOP file is missing, not valid JSON/CSV, or has malformed entries."""


# --------------------------------------------------------------------------------------------
# Data containers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraInfo:
    K: np.ndarray  # [3,3] pixels
    depth_scale: float | None = None  # multiply stored depth values by this to get mm (BOP rule)
    R_w2c: np.ndarray | None = None  # [3,3]
    t_w2c: np.ndarray | None = None  # [3] metres


@dataclass(frozen=True)
class GtPose:
    obj_id: int
    R: np.ndarray  # [3,3] object -> camera
    t: np.ndarray  # [3] metres


@dataclass(frozen=True)
class GtInfo:
    bbox_obj: tuple[int, int, int, int]  # x, y, w, h (px) of the full projected silhouette
    bbox_visib: tuple[int, int, int, int]  # x, y, w, h (px) of the visible part
    px_count_all: int | None
    px_count_valid: int | None
    px_count_visib: int | None
    visib_fract: float


@dataclass(frozen=True)
class Target:
    scene_id: int
    im_id: int
    obj_id: int
    inst_count: int


@dataclass
class PoseEstimate:
    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R: np.ndarray  # [3,3]
    t: np.ndarray  # [3] metres
    time: float = -1.0  # seconds spent on the image (BOP convention), -1 unknown
    # where it came from (file:line) for error messages; not written out
    source: str = field(default="", compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------
def repo_root() -> Path:
    """The repository root: the directory holding the ``dsc_pose_core`` package."""
    return Path(__file__).resolve().parents[2]


def default_lmo_dir() -> Path:
    """Where the LM-O evaluation data lives: ``$DSC_POSE_LMO`` or ``<repo>/../shared/data/lmo``."""
    env = os.environ.get("DSC_POSE_LMO")
    if env:
        return Path(env)
    return repo_root().parent / "shared" / "data" / "lmo"


def scene_dir(dataset_dir: str | os.PathLike, scene_id: int, split: str = "test") -> Path:
    return Path(dataset_dir) / split / f"{int(scene_id):06d}"


@dataclass
class SceneSelection:
    """A BOP scene's annotation files and the image ids chosen from it (see :func:`select_scene_images`)."""
    scene_path: Path
    cameras: dict
    gt: dict
    gt_info: dict
    im_ids: list[int]


def select_scene_images(dataset_dir: str | os.PathLike, scene_id: int, split_dir: str = "test",
                        split: str | None = None, im_ids=None, max_images: int = 0) -> SceneSelection:
    """Load a scene's scene_camera / scene_gt / scene_gt_info and choose its images: the ids listed
    under ``split`` in ``dataset_dir/splits.json``, else ``im_ids``, else every image of the scene;
    at most ``max_images`` (0 = all). Raises FileNotFoundError / ValueError with one clear sentence."""
    dataset = Path(dataset_dir)
    scene_path = scene_dir(dataset, scene_id, split_dir)
    if not scene_path.is_dir():
        raise FileNotFoundError(f"scene folder not found: {scene_path}")
    cameras = load_scene_camera(scene_path / "scene_camera.json")
    gt = load_scene_gt(scene_path / "scene_gt.json")
    gt_info = load_scene_gt_info(scene_path / "scene_gt_info.json")
    if split:
        splits = load_splits(dataset / "splits.json")
        if split not in splits:
            raise ValueError(f"split {split!r} not in {dataset / 'splits.json'}: {sorted(splits)}")
        ids = list(splits[split])
    elif im_ids is not None:
        ids = [int(i) for i in im_ids]
    else:
        ids = sorted(cameras)
    missing = [i for i in ids if i not in cameras]
    if missing:
        raise ValueError(f"image ids {missing[:10]} are not in {scene_path / 'scene_camera.json'}")
    if max_images > 0:
        ids = ids[:max_images]
    return SceneSelection(scene_path, cameras, gt, gt_info, ids)


def find_rgb(scene_path: str | os.PathLike, im_id: int) -> Path:
    """The RGB image of ``im_id`` in a BOP scene folder (png, jpg or jpeg, as BOP datasets vary)."""
    for ext in ("png", "jpg", "jpeg"):
        path = Path(scene_path) / "rgb" / f"{im_id:06d}.{ext}"
        if path.exists():
            return path
    raise FileNotFoundError(f"no rgb image {im_id:06d} in {Path(scene_path) / 'rgb'}")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB HxWx3."""
    import cv2

    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------
def _load_json(path: str | os.PathLike):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BOP file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise BopFormatError(f"{path}: not valid JSON ({exc})") from exc


def _int_key(path: str, key) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise BopFormatError(f"{path}: image id {key!r} is not an integer") from None


def _array(path: str, where: str, value, size: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BopFormatError(f"{path}: {where} is not a list of numbers") from None
    if arr.size != size:
        raise BopFormatError(f"{path}: {where} has {arr.size} numbers, expected {size}")
    if not np.isfinite(arr).all():
        raise BopFormatError(f"{path}: {where} contains non-finite numbers")
    return arr


def _bbox(path: str, where: str, value) -> tuple[int, int, int, int]:
    arr = _array(path, where, value, 4)
    return tuple(int(round(v)) for v in arr)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Scene files
# --------------------------------------------------------------------------------------------
def load_scene_camera(path: str | os.PathLike) -> dict[int, CameraInfo]:
    """Read ``scene_camera.json``: {im_id: CameraInfo} (translations in metres)."""
    path = os.fspath(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise BopFormatError(f"{path}: expected a JSON object keyed by image id")
    out: dict[int, CameraInfo] = {}
    for key, entry in raw.items():
        im_id = _int_key(path, key)
        if not isinstance(entry, dict) or "cam_K" not in entry:
            raise BopFormatError(f"{path}: image {key} has no cam_K")
        K = _array(path, f"image {key} cam_K", entry["cam_K"], 9).reshape(3, 3)
        depth_scale = entry.get("depth_scale")
        R_w2c = t_w2c = None
        if "cam_R_w2c" in entry and "cam_t_w2c" in entry:
            R_w2c = _array(path, f"image {key} cam_R_w2c", entry["cam_R_w2c"], 9).reshape(3, 3)
            t_w2c = _array(path, f"image {key} cam_t_w2c", entry["cam_t_w2c"], 3) * MM_TO_M
        out[im_id] = CameraInfo(
            K=K,
            depth_scale=None if depth_scale is None else float(depth_scale),
            R_w2c=R_w2c,
            t_w2c=t_w2c,
        )
    return out


def load_scene_gt(path: str | os.PathLike) -> dict[int, list[GtPose]]:
    """Read ``scene_gt.json``: {im_id: [GtPose]} with ``t`` converted from mm to metres."""
    path = os.fspath(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise BopFormatError(f"{path}: expected a JSON object keyed by image id")
    out: dict[int, list[GtPose]] = {}
    for key, entries in raw.items():
        im_id = _int_key(path, key)
        if not isinstance(entries, list):
            raise BopFormatError(f"{path}: image {key} should hold a list of poses")
        poses = []
        for i, e in enumerate(entries):
            where = f"image {key} instance {i}"
            try:
                obj_id = int(e["obj_id"])
                R = _array(path, f"{where} cam_R_m2c", e["cam_R_m2c"], 9).reshape(3, 3)
                t = _array(path, f"{where} cam_t_m2c", e["cam_t_m2c"], 3) * MM_TO_M
            except (KeyError, TypeError) as exc:
                raise BopFormatError(f"{path}: {where} lacks {exc}") from None
            poses.append(GtPose(obj_id=obj_id, R=R, t=t))
        out[im_id] = poses
    return out


def load_scene_gt_info(path: str | os.PathLike) -> dict[int, list[GtInfo]]:
    """Read ``scene_gt_info.json``: {im_id: [GtInfo]} in the order of scene_gt."""
    path = os.fspath(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise BopFormatError(f"{path}: expected a JSON object keyed by image id")
    out: dict[int, list[GtInfo]] = {}
    for key, entries in raw.items():
        im_id = _int_key(path, key)
        if not isinstance(entries, list):
            raise BopFormatError(f"{path}: image {key} should hold a list")
        infos = []
        for i, e in enumerate(entries):
            where = f"image {key} instance {i}"
            try:
                visib = float(e["visib_fract"])
                infos.append(
                    GtInfo(
                        bbox_obj=_bbox(path, f"{where} bbox_obj", e.get("bbox_obj", [-1] * 4)),
                        bbox_visib=_bbox(path, f"{where} bbox_visib", e.get("bbox_visib", [-1] * 4)),
                        px_count_all=_opt_int(e.get("px_count_all")),
                        px_count_valid=_opt_int(e.get("px_count_valid")),
                        px_count_visib=_opt_int(e.get("px_count_visib")),
                        visib_fract=visib,
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise BopFormatError(f"{path}: {where} is malformed ({exc})") from None
        out[im_id] = infos
    return out


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def load_targets(path: str | os.PathLike) -> list[Target]:
    """Read a BOP test-targets JSON list (``test_targets_bop19.json``)."""
    path = os.fspath(path)
    raw = _load_json(path)
    if not isinstance(raw, list):
        raise BopFormatError(f"{path}: expected a JSON list of targets")
    out = []
    for i, e in enumerate(raw):
        try:
            out.append(
                Target(
                    scene_id=int(e["scene_id"]),
                    im_id=int(e["im_id"]),
                    obj_id=int(e["obj_id"]),
                    inst_count=int(e.get("inst_count", 1)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BopFormatError(f"{path}: target #{i} is malformed ({exc})") from None
    return out


def load_splits(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read ``splits.json`` ({name: [im_id, ...]})."""
    path = os.fspath(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise BopFormatError(f"{path}: expected a JSON object {{split name: [im ids]}}")
    try:
        return {str(k): [int(i) for i in v] for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise BopFormatError(f"{path}: malformed split list ({exc})") from None


# --------------------------------------------------------------------------------------------
# Writers (metres in, BOP millimetres out)
# --------------------------------------------------------------------------------------------
def _num(v) -> float | int:
    """A JSON number: integers stay integers, floats keep full precision (repr round-trips)."""
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def _dump_image_keyed(path: str | os.PathLike, data: dict) -> None:
    """Write {im_id: value} as BOP does: one image per line, keys in numeric order; atomic."""
    lines = [f"  {json.dumps(str(int(k)))}: {json.dumps(data[k], separators=(', ', ': '))}"
             for k in sorted(data, key=int)]
    atomic_write_text(path, "{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n"))


def atomic_write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image (``[H,W,3]`` RGB, or one channel: masks, 16-bit depth) through a temporary file
    and ``os.replace``: a file that exists is complete. JPEG quality 95 for ``.jpg``."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(tmp), image, params):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def camera_to_json(cam: CameraInfo) -> dict:
    """One ``scene_camera.json`` entry (``t_w2c`` metres -> mm)."""
    entry: dict = {"cam_K": [_num(v) for v in np.asarray(cam.K, dtype=np.float64).reshape(9)]}
    if cam.depth_scale is not None:
        entry["depth_scale"] = _num(cam.depth_scale)
    if cam.R_w2c is not None and cam.t_w2c is not None:
        entry["cam_R_w2c"] = [_num(v) for v in np.asarray(cam.R_w2c, dtype=np.float64).reshape(9)]
        entry["cam_t_w2c"] = [_num(v) for v in np.asarray(cam.t_w2c, dtype=np.float64).reshape(3) * M_TO_MM]
    return entry


def gt_to_json(poses) -> list[dict]:
    """One image's ``scene_gt.json`` list from [GtPose] (``t`` metres -> ``cam_t_m2c`` mm)."""
    return [
        {
            "cam_R_m2c": [_num(v) for v in np.asarray(p.R, dtype=np.float64).reshape(9)],
            "cam_t_m2c": [_num(v) for v in np.asarray(p.t, dtype=np.float64).reshape(3) * M_TO_MM],
            "obj_id": int(p.obj_id),
        }
        for p in poses
    ]


def gt_info_to_json(infos) -> list[dict]:
    """One image's ``scene_gt_info.json`` list from [GtInfo]."""
    entries = []
    for g in infos:
        e: dict = {"bbox_obj": [int(v) for v in g.bbox_obj], "bbox_visib": [int(v) for v in g.bbox_visib]}
        for key in ("px_count_all", "px_count_valid", "px_count_visib"):
            value = getattr(g, key)
            if value is not None:
                e[key] = int(value)
        e["visib_fract"] = float(g.visib_fract)
        entries.append(e)
    return entries


def save_image_keyed_json(path: str | os.PathLike, raw: dict) -> None:
    """Write already-encoded {im_id: entry} (BOP layout: one image per line, numeric key order)."""
    _dump_image_keyed(path, raw)


def save_scene_camera(path: str | os.PathLike, cameras: dict[int, CameraInfo]) -> None:
    """Write ``scene_camera.json`` from {im_id: CameraInfo} (``t_w2c`` metres -> mm)."""
    _dump_image_keyed(path, {int(k): camera_to_json(c) for k, c in cameras.items()})


def save_scene_gt(path: str | os.PathLike, scene_gt: dict[int, list[GtPose]]) -> None:
    """Write ``scene_gt.json`` from {im_id: [GtPose]} (``t`` metres -> ``cam_t_m2c`` mm)."""
    _dump_image_keyed(path, {int(k): gt_to_json(p) for k, p in scene_gt.items()})


def save_scene_gt_info(path: str | os.PathLike, scene_gt_info: dict[int, list[GtInfo]]) -> None:
    """Write ``scene_gt_info.json`` from {im_id: [GtInfo]} (same instance order as scene_gt)."""
    _dump_image_keyed(path, {int(k): gt_info_to_json(i) for k, i in scene_gt_info.items()})


@dataclass(frozen=True)
class DatasetCamera:
    """A dataset-level ``camera.json``: intrinsics, image size and depth scale."""

    K: np.ndarray  # [3,3]
    width: int
    height: int
    depth_scale: float = 1.0


def load_camera_json(path: str | os.PathLike) -> DatasetCamera:
    """Read a BOP ``camera.json`` ({cx, cy, fx, fy, width, height, depth_scale})."""
    path = os.fspath(path)
    raw = _load_json(path)
    try:
        K = np.array([[float(raw["fx"]), 0.0, float(raw["cx"])], [0.0, float(raw["fy"]), float(raw["cy"])],
                      [0.0, 0.0, 1.0]])
        cam = DatasetCamera(K=K, width=int(raw["width"]), height=int(raw["height"]),
                            depth_scale=float(raw.get("depth_scale", 1.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise BopFormatError(f"{path}: camera.json needs cx, cy, fx, fy, width, height ({exc})") from None
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 and cam.width > 0 and cam.height > 0):
        raise BopFormatError(f"{path}: camera.json has non-positive focal length or image size")
    return cam


def save_camera_json(path: str | os.PathLike, camera: DatasetCamera) -> None:
    K = np.asarray(camera.K, dtype=np.float64)
    raw = {"cx": _num(K[0, 2]), "cy": _num(K[1, 2]), "depth_scale": _num(camera.depth_scale),
           "fx": _num(K[0, 0]), "fy": _num(K[1, 1]), "height": int(camera.height), "width": int(camera.width)}
    atomic_write_text(path, json.dumps(raw, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Result CSVs
# --------------------------------------------------------------------------------------------
def _parse_numbers(text: str, count: int, what: str, where: str) -> np.ndarray:
    parts = text.split()
    if len(parts) != count:
        raise BopFormatError(f"{where}: {what} has {len(parts)} numbers, expected {count}")
    try:
        arr = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise BopFormatError(f"{where}: {what} is not numeric: {text!r}") from None
    if not np.isfinite(arr).all():
        raise BopFormatError(f"{where}: {what} contains non-finite numbers")
    return arr


def read_bop_results(path: str | os.PathLike) -> list[PoseEstimate]:
    """Read a BOP19 results CSV; ``t`` is converted from millimetres to metres.

    The header line is optional. Blank lines are skipped. Any malformed row raises
    :class:`BopFormatError` with ``<file>:<line>``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    ests: list[PoseEstimate] = []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            where = f"{path}:{line_no}"
            if not row or all(not c.strip() for c in row):
                continue
            if line_no == 1 and row[0].strip() == "scene_id":
                if tuple(c.strip() for c in row) != RESULTS_HEADER:
                    raise BopFormatError(
                        f"{where}: header should be {','.join(RESULTS_HEADER)}, got {','.join(row)}"
                    )
                continue
            if len(row) != 7:
                raise BopFormatError(
                    f"{where}: expected 7 comma-separated fields "
                    f"(scene_id,im_id,obj_id,score,R,t,time), got {len(row)}"
                )
            try:
                scene_id, im_id, obj_id = (int(row[i].strip()) for i in range(3))
            except ValueError:
                raise BopFormatError(f"{where}: scene_id, im_id and obj_id must be integers") from None
            try:
                score = float(row[3])
                time_s = float(row[6]) if row[6].strip() else -1.0
            except ValueError:
                raise BopFormatError(f"{where}: score and time must be numbers") from None
            if not math.isfinite(score):
                raise BopFormatError(f"{where}: score is not finite")
            R = _parse_numbers(row[4], 9, "R", where).reshape(3, 3)
            t = _parse_numbers(row[5], 3, "t", where) * MM_TO_M
            ests.append(
                PoseEstimate(scene_id, im_id, obj_id, score, R, t, time_s, source=where)
            )
    return ests


def write_bop_results(path: str | os.PathLike, estimates) -> None:
    """Write estimates (``t`` in metres) as a BOP19 results CSV (``t`` in millimetres)."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(",".join(RESULTS_HEADER) + "\n")
        for e in estimates:
            R = np.asarray(e.R, dtype=np.float64).reshape(9)
            t = np.asarray(e.t, dtype=np.float64).reshape(3) * M_TO_MM
            f.write(
                f"{int(e.scene_id)},{int(e.im_id)},{int(e.obj_id)},{float(e.score)!r},"
                + " ".join(repr(float(v)) for v in R)
                + ","
                + " ".join(repr(float(v)) for v in t)
                + f",{float(e.time)!r}\n"
            )
