"""Backgrounds for synthetic images: real photographs and procedural textures, numpy/OpenCV, seeded.

Photographs are the colour and grey sample images that ship inside the ``scikit-image`` wheel
(``skimage.data``: astronaut, coffee, chelsea, rocket, ...; no download). Each draw takes a random
scale (the image always covers the output), a random crop and a random horizontal/vertical flip.
Procedural kinds: multi-octave value ``noise``, linear ``gradient``, ``stripes`` at a random angle and
``checker`` boards at a random angle. Every function takes a ``numpy.random.Generator`` and returns
uint8 RGB [H,W,3]; the same generator state gives the same bytes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .boxes import box_mask, box_xyxy_edges

# skimage.data loaders whose files are inside the wheel (no network access needed)
PHOTO_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
    "immunohistochemistry", "brick", "grass", "gravel", "camera", "moon", "coins", "page", "text",
    "cell", "horse", "clock", "logo", "colorwheel",
)
BACKGROUND_KINDS = ("photo", "noise", "gradient", "stripes", "checker")
FOLDER_KIND = "folder"  # photographs from a directory given to the generator (e.g. a dataset's unlabeled frames)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@lru_cache(maxsize=1)
def photo_bank() -> tuple[np.ndarray, ...]:
    """The sample photographs as uint8 RGB arrays (loaded once, in a fixed order)."""
    try:
        import skimage.data as skdata
    except ImportError as exc:  # pragma: no cover - in requirements.txt
        raise RuntimeError("photo backgrounds need scikit-image (pip install scikit-image)") from exc
    out = []
    for name in PHOTO_NAMES:
        loader = getattr(skdata, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader())
        except Exception:  # a file missing from this scikit-image build: skip it
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        elif img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        if min(img.shape[:2]) >= 64:
            out.append(np.ascontiguousarray(img))
    if not out:
        raise RuntimeError("no scikit-image sample photographs could be loaded")
    return tuple(out)


@lru_cache(maxsize=2)
def folder_bank(directory: str) -> tuple[np.ndarray, ...]:
    """Every image of ``directory`` (png / jpg, sorted by name) as uint8 RGB, loaded once."""
    paths = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 64:
            images.append(np.ascontiguousarray(img[..., ::-1]))
    if not images:
        raise FileNotFoundError(f"no usable background images (png/jpg, >= 64 px) in {directory}")
    return tuple(images)


def photo_background(rng: np.random.Generator, width: int, height: int, max_zoom: float = 2.5,
                     bank: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """A random crop of a random photograph (the scikit-image samples unless ``bank`` is given),
    scaled to cover width x height, maybe flipped."""
    bank = bank or photo_bank()
    img = bank[int(rng.integers(len(bank)))]
    h, w = img.shape[:2]
    scale = max(width / w, height / h) * float(rng.uniform(1.0, max_zoom))
    new_w, new_h = max(width, int(np.ceil(w * scale))), max(height, int(np.ceil(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(img, (new_w, new_h), interpolation=interp)
    x0 = int(rng.integers(new_w - width + 1))
    y0 = int(rng.integers(new_h - height + 1))
    img = img[y0:y0 + height, x0:x0 + width]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.2:
        img = img[::-1]
    return np.ascontiguousarray(img)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def noise_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Multi-octave value noise in random colours."""
    field = np.zeros((height, width, 3), np.float64)
    amplitude, total = 1.0, 0.0
    cells = int(rng.integers(2, 6))
    for _ in range(int(rng.integers(2, 6))):
        grid = rng.random((cells + 1, cells + 1, 3))
        field += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= 0.5
        cells *= 2
    field /= total
    lo, hi = _random_color(rng), _random_color(rng)
    field = (field - field.min()) / max(np.ptp(field), 1e-9)
    return np.clip(lo + field * (hi - lo), 0, 255).astype(np.uint8)


def gradient_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    proj = xs * np.cos(angle) + ys * np.sin(angle)
    s = ((proj - proj.min()) / max(np.ptp(proj), 1e-9))[..., None]
    lo, hi = _random_color(rng), _random_color(rng)
    return np.clip(lo + s * (hi - lo), 0, 255).astype(np.uint8)


def stripes_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 80)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period)
    s = 0.5 + 0.5 * np.sin(phase)
    if rng.random() < 0.5:  # hard-edged stripes
        s = (s > 0.5).astype(np.float64)
    s = s[..., None]
    a, b = _random_color(rng), _random_color(rng)
    return np.clip(a + s * (b - a), 0, 255).astype(np.uint8)


def checker_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    angle = rng.uniform(0, np.pi / 2)
    cell = rng.uniform(8, 96)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    s = ((np.floor(u / cell) + np.floor(v / cell)) % 2)[..., None]
    a, b = _random_color(rng), _random_color(rng)
    return np.clip(a + s * (b - a), 0, 255).astype(np.uint8)


_MAKERS = {
    "photo": photo_background,
    "noise": noise_background,
    "gradient": gradient_background,
    "stripes": stripes_background,
    "checker": checker_background,
}


def random_background(rng: np.random.Generator, width: int, height: int,
                      kinds: tuple[str, ...] = BACKGROUND_KINDS,
                      weights: tuple[float, ...] | None = None, folder: str = "") -> tuple[np.ndarray, str]:
    """Draw a kind (by ``weights``, default: photographs - the samples and ``folder``'s together -
    half of the time) and make a background. Kind ``folder`` needs ``folder``, a directory of images."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in _MAKERS and k != FOLDER_KIND]
    if unknown or not kinds:
        raise ValueError(f"unknown background kinds {unknown}; choose from {BACKGROUND_KINDS + (FOLDER_KIND,)}")
    if FOLDER_KIND in kinds and not folder:
        raise ValueError(f"background kind {FOLDER_KIND!r} needs a folder of images")
    if weights is None:
        photos = [k for k in kinds if k in ("photo", FOLDER_KIND)]
        others = len(kinds) - len(photos)
        if photos and others:
            weights = tuple(0.5 / len(photos) if k in photos else 0.5 / others for k in kinds)
        else:
            weights = tuple(1.0 for _ in kinds)
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    kind = kinds[int(rng.choice(len(kinds), p=p))]
    if kind == FOLDER_KIND:
        return photo_background(rng, width, height, bank=folder_bank(str(folder))), kind
    return _MAKERS[kind](rng, width, height), kind


def hide_boxes(image: np.ndarray, boxes_xywh, downscale: int = 4) -> np.ndarray:
    """``image`` with every box filled from its surroundings (OpenCV's Telea inpainting, run at
    1/``downscale`` resolution for speed).

    A real frame used as a background photograph still shows the objects being learned; pasted
    renders on top of it would teach the network that those unlabeled photographs of the objects
    are background. Their (loose) boxes are hidden instead; the rest of the clutter stays."""
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    for box in boxes_xywh:
        mask[box_mask(box_xyxy_edges(box), width, height)] = 255
    if not mask.any():
        return image.copy()
    small_size = (max(8, width // downscale), max(8, height // downscale))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    small_mask = cv2.dilate(cv2.resize(mask, small_size, interpolation=cv2.INTER_NEAREST), np.ones((3, 3), np.uint8))
    filled = cv2.resize(cv2.inpaint(small, small_mask, 3, cv2.INPAINT_TELEA), (width, height),
                        interpolation=cv2.INTER_LINEAR)
    return np.where(mask[..., None] > 0, filled, image)
