"""ROI crop sets for Self6D (self6d sec. 3-4): one square crop per object instance around its 2D box,
with what each experiment may use, saved as one ``.npz`` (read with ``allow_pickle=False``).

Fields: ``rgb`` uint8 [N,S,S,3]; ``depth`` float32 [N,S,S] metres (0 = no measurement; all 0 without
depth); ``mask`` uint8 [N,S,S] (255 = object: the ground-truth visible mask of a synthetic image, or
the segmentation stage's pseudo mask of a real one; all 0 when none); ``window`` [N,4] the crop's
pixel-edge window (x1, y1, x2, y2) in the full image; ``K`` [N,3,3] the full image's intrinsics;
``image_size`` [N,2] (width, height); ``R`` [N,3,3], ``t`` [N,3] metres (NaN where the experiment may
not know them); ``obj_id``; ``meta`` (JSON text).

Domains for the RGB-D experiment (no real RGB-D with ground truth exists here for these objects):
* ``source``: plain renders, the generator's default Blinn-Phong light, procedural backgrounds
  (noise, gradient, stripes, checker), its default photometric jitter; no depth.
* ``target``: the same objects under a documented appearance shift, standing in for a real RGB-D
  camera: a different lighting model (a head light with strong, tight specular highlights and a dim
  ambient term, tinted), a camera colour response (gamma 1/1.4 and white-balance gains (1.12, 1.0,
  0.82)), Gaussian blur sigma 0.8-1.5 px and noise sigma 3-6 grey levels on every image, real-photo
  backgrounds (scikit-image's sample photographs), and the depth-sensor model of
  :func:`dsc_pose_core.data.augment.apply_depth_noise` (noise growing with distance, missing pixels at
  edges). Target sets keep their ground truth for scoring held-out images only; the trainer never
  reads ``R``/``t`` of a target set it trains on.

Boxes: the visible box loosened by U(0, 15 %) per side (the DSC-PoseNet protocol), as a detector's.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bop_io
from .augment import AugmentConfig
from .boxes import loosen_box_xywh
from .synthetic import DistractorConfig, LightingConfig, PoseSamplingConfig, SynthConfig, SyntheticSceneGenerator
from ..segmentation.roi import crop, roi_window

DOMAINS = ("source", "target")
FIELDS = ("rgb", "depth", "mask", "window", "K", "image_size", "R", "t", "obj_id", "meta")
TARGET_GAINS = (1.12, 1.0, 0.82)
TARGET_GAMMA = 1.4


def camera_response(rgb: np.ndarray, gains=TARGET_GAINS, gamma: float = TARGET_GAMMA) -> np.ndarray:
    """A different camera's colour response: out = 255 (gains * rgb / 255) ^ (1 / gamma)."""
    x = np.clip(rgb.astype(np.float32) / 255.0 * np.asarray(gains, np.float32), 0.0, 1.0)
    return np.clip(np.rint(255.0 * x ** (1.0 / gamma)), 0, 255).astype(np.uint8)


def domain_synth_config(domain: str, obj_id: int, models_dir: str, seed: int,
                        distance=(0.5, 1.1)) -> SynthConfig:
    """The generator settings of a domain (see the module doc)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    common = dict(models_dir=str(models_dir), obj_ids=(int(obj_id),), seed=int(seed), objects_per_image=1,
                  min_visib_fract=0.4, pose=PoseSamplingConfig(distance=tuple(distance), elevation_deg=(0.0, 80.0),
                                                                image_margin=0.15),
                  distractors=DistractorConfig(min_count=0, max_count=2), progress=False)
    if domain == "source":
        return SynthConfig(**common, background_kinds=("noise", "gradient", "stripes", "checker"))
    return SynthConfig(**common, background_kinds=("photo",), depth_noise=True,
                       lighting=LightingConfig(ambient=(0.1, 0.25), diffuse=(0.6, 1.0), specular=(0.4, 0.9),
                                               shininess=(32.0, 128.0), p_headlight=1.0, tint=0.3),
                       augment=AugmentConfig(p_color=0.0, p_blur=1.0, blur_sigma=(0.8, 1.5), p_noise=1.0,
                                             noise_sigma=(3.0, 6.0)))


def _empty(n: int, size: int) -> dict:
    return {"rgb": np.zeros((n, size, size, 3), np.uint8), "depth": np.zeros((n, size, size), np.float32),
            "mask": np.zeros((n, size, size), np.uint8), "window": np.zeros((n, 4), np.float32),
            "K": np.zeros((n, 3, 3), np.float64), "image_size": np.zeros((n, 2), np.float32),
            "R": np.full((n, 3, 3), np.nan), "t": np.full((n, 3), np.nan)}


def _put(arrays: dict, i: int, rgb, depth, mask, box_xywh, K, R, t, size: int, context: float) -> None:
    window = roi_window(box_xywh, context)
    height, width = rgb.shape[:2]
    arrays["rgb"][i] = crop(rgb, window, size)
    if depth is not None:
        arrays["depth"][i] = crop(depth.astype(np.float32), window, size, nearest=True)
    if mask is not None:
        arrays["mask"][i] = crop(mask.astype(np.uint8) * 255 if mask.dtype == bool else mask, window, size, nearest=True)
    arrays["window"][i] = window
    arrays["K"][i] = K
    arrays["image_size"][i] = (width, height)
    if R is not None:
        arrays["R"][i], arrays["t"][i] = R, t


def make_synthetic_crops(domain: str, obj_id: int, models_dir: str, n_images: int, seed: int, size: int = 64,
                         context: float = 1.2, distance=(0.5, 1.1), progress: bool = True) -> dict:
    """``n_images`` rendered images of ``obj_id`` in ``domain``, one crop each (see module doc)."""
    from tqdm import tqdm

    config = domain_synth_config(domain, obj_id, models_dir, seed, distance)
    arrays = _empty(n_images, size)
    keep = np.zeros(n_images, bool)
    with SyntheticSceneGenerator(config) as generator:
        for i in tqdm(range(n_images), desc=f"roi crops ({domain})", disable=not progress):
            sample = generator.sample(i)
            if not sample.obj_ids:
                continue
            rng = np.random.default_rng([seed, i, 7])
            rgb = camera_response(sample.rgb) if domain == "target" else sample.rgb
            box = loosen_box_xywh(sample.infos[0].bbox_visib, rng, config.width, config.height, 0.15)
            _put(arrays, i, rgb, sample.depth if domain == "target" else None, sample.masks_visib[0], box,
                 sample.K, sample.R[0], sample.t[0], size, context)
            keep[i] = True
    arrays = {k: v[keep] for k, v in arrays.items()}
    arrays["obj_id"] = np.array(int(obj_id))
    arrays["meta"] = np.array(json.dumps({"domain": domain, "seed": seed, "n_images": n_images, "size": size,
                                          "context": context, "distance": list(distance),
                                          "generator": config.content_dict()}))
    return arrays


def make_lmo_crops(dataset: str | os.PathLike, split: str, obj_id: int, size: int = 64, context: float = 1.2,
                   pseudo_dir: str | os.PathLike | None = None, keep_poses: bool = False, scene_id: int = 2,
                   box_seed: int = 0) -> dict:
    """Crops of ``obj_id`` in an LM-O split: loosened ``bbox_visib`` boxes (the seeded scheme of the
    segmentation stage), the pseudo masks of ``pseudo_dir`` when given, and the poses only when
    ``keep_poses`` (scoring on ``val``; never for ``train_real`` outside an upper bound)."""
    from .dsc_views import read_mask, real_instances

    dataset = Path(dataset)
    splits = bop_io.load_splits(dataset / "splits.json")
    if split not in splits:
        raise ValueError(f"{dataset}: no split {split!r} (have {sorted(splits)})")
    instances = real_instances(dataset, scene_id, splits[split], obj_id, pseudo_dir,
                               mode="with_real_pose_labels" if keep_poses else "pseudo", box_seed=box_seed)
    arrays = _empty(len(instances), size)
    for i, inst in enumerate(instances):
        rgb = bop_io.read_rgb(inst.image_path)
        mask = read_mask(inst.mask_path) if inst.mask_path is not None else None
        _put(arrays, i, rgb, None, mask, inst.box_xywh, inst.K, inst.R, inst.t, size, context)
    arrays["obj_id"] = np.array(int(obj_id))
    arrays["meta"] = np.array(json.dumps({"domain": f"lmo:{split}", "size": size, "context": context,
                                          "pseudo_dir": str(pseudo_dir or ""), "poses": bool(keep_poses)}))
    return arrays


def save_crops(path: str | os.PathLike, arrays: dict) -> Path:
    """Atomic write (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


def load_crops(path: str | os.PathLike) -> dict:
    with np.load(path, allow_pickle=False) as data:
        missing = [f for f in FIELDS if f not in data.files]
        if missing:
            raise ValueError(f"{path}: not a ROI crop set (missing {missing})")
        out = {k: data[k] for k in FIELDS}
    out["meta"] = json.loads(str(out["meta"]))
    out["obj_id"] = int(out["obj_id"])
    return out


def crops_path(cache_dir: str | os.PathLike, domain: str, obj_id: int, n_images: int, seed: int, size: int,
               context: float) -> Path:
    return Path(cache_dir) / f"{domain}_obj{int(obj_id)}_n{int(n_images)}_seed{int(seed)}_s{int(size)}_c{context:g}.npz"


def ensure_synthetic_crops(cache_dir: str | os.PathLike, domain: str, obj_id: int, models_dir: str, n_images: int,
                           seed: int, size: int = 64, context: float = 1.2, distance=(0.5, 1.1),
                           progress: bool = True) -> Path:
    """The cached crop set for these settings, made first when missing or made with other settings."""
    path = crops_path(cache_dir, domain, obj_id, n_images, seed, size, context)
    expected = domain_synth_config(domain, obj_id, models_dir, seed, distance).content_dict()
    if path.is_file():
        try:
            if load_crops(path)["meta"].get("generator") == json.loads(json.dumps(expected)):
                return path
        except (ValueError, OSError, KeyError):
            pass  # unreadable or other settings: make it again
    return save_crops(path, make_synthetic_crops(domain, obj_id, models_dir, n_images, seed, size, context, distance,
                                                 progress))


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dsc_pose_core.data.roi_crops",
                                     description="make a cached Self6D ROI crop set (source or target domain)")
    parser.add_argument("--domain", choices=DOMAINS, required=True)
    parser.add_argument("--obj-id", type=int, required=True)
    parser.add_argument("--models-dir", default=str(bop_io.default_lmo_dir() / "models"))
    parser.add_argument("--n-images", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--context", type=float, default=1.2)
    parser.add_argument("--cache-dir", default="out/self6d_data")
    args = parser.parse_args(argv)
    path = ensure_synthetic_crops(args.cache_dir, args.domain, args.obj_id, args.models_dir, args.n_images, args.seed,
                                  args.size, args.context)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --------------------------------------------------------------------------------------------
# Training-time augmentation of labelled crops (torch, batched)
# --------------------------------------------------------------------------------------------
@dataclass
class CropAugmentConfig:
    """Augmentation of source crops during training (self6d sec. 4: "a lot of augmentations (e.g.
    random Gaussian noise, intensity jitter) leads to best results"). 0 probabilities / ranges turn
    a step off."""

    p_color: float = 0.8
    brightness: float = 0.2  # additive, fraction of the range: U(-b, b)
    contrast: float = 0.3  # U(1 - c, 1 + c) around the mean
    channel_gain: float = 0.15  # per channel U(1 - g, 1 + g): white balance / colour response
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # px
    p_noise: float = 0.5
    noise_sigma: tuple[float, float] = (0.0, 0.03)  # fraction of the range
    shift: float = 0.05  # the crop window moves by U(-s, s) of its side (a detector's box error)
    scale: tuple[float, float] = (0.9, 1.1)  # and its side scales by U(lo, hi)


def augment_crops(batch: dict, config: CropAugmentConfig, generator=None) -> dict:
    """A new batch: each crop re-sampled from a jittered window (``window`` updated to match, so the
    pose targets stay exact), its mask alike, then photometric jitter, blur and noise on the RGB."""
    import torch
    import torch.nn.functional as F

    rgb = batch["rgb"].float() / 255.0  # [B,3,S,S]
    n = rgb.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    out = dict(batch)
    if config.shift > 0 or config.scale != (1.0, 1.0):
        shift = (u(n, 2) * 2 - 1) * config.shift
        scale = config.scale[0] + u(n) * (config.scale[1] - config.scale[0])
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = 2 * shift
        grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
        rgb = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        mask = F.grid_sample(batch["mask"].float()[:, None], grid, mode="nearest", padding_mode="zeros",
                             align_corners=False)[:, 0]
        out["mask"] = mask.to(batch["mask"].dtype)
        if bool((batch["depth"] > 0).any()):
            depth = F.grid_sample(batch["depth"].float()[:, None], grid, mode="nearest", padding_mode="zeros",
                                  align_corners=False)[:, 0]
            out["depth"] = depth
        window = batch["window"].float()
        centre = 0.5 * (window[:, :2] + window[:, 2:])
        side = window[:, 2] - window[:, 0]
        new_centre = centre + shift * side[:, None]
        half = 0.5 * scale * side
        out["window"] = torch.stack([new_centre[:, 0] - half, new_centre[:, 1] - half,
                                     new_centre[:, 0] + half, new_centre[:, 1] + half], dim=1)
    color = u(n) < config.p_color
    if bool(color.any()):
        gain = 1.0 + (u(n, 3) * 2 - 1) * config.channel_gain
        contrast = 1.0 + (u(n) * 2 - 1) * config.contrast
        brightness = (u(n) * 2 - 1) * config.brightness
        mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((rgb * gain[:, :, None, None] - mean) * contrast[:, None, None, None] + mean
                    + brightness[:, None, None, None]).clamp(0, 1)
        rgb = torch.where(color[:, None, None, None], jittered, rgb)
    blur = u(n) < config.p_blur
    if bool(blur.any()):
        from kornia.filters import gaussian_blur2d

        sigma = config.blur_sigma[0] + u(n) * (config.blur_sigma[1] - config.blur_sigma[0])
        sigmas = torch.stack([sigma, sigma], dim=1)
        rgb = torch.where(blur[:, None, None, None], gaussian_blur2d(rgb, (7, 7), sigmas), rgb)
    noise = u(n) < config.p_noise
    if bool(noise.any()):
        sigma = config.noise_sigma[0] + u(n) * (config.noise_sigma[1] - config.noise_sigma[0])
        noisy = rgb + torch.randn(rgb.shape, generator=generator) * sigma[:, None, None, None]
        rgb = torch.where(noise[:, None, None, None], noisy.clamp(0, 1), rgb)
    out["rgb"] = (rgb * 255.0).round().to(torch.uint8)
    return out
