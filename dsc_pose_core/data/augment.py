"""Photometric augmentation and a depth-sensor noise model (numpy/OpenCV, seeded by a Generator).

``augment_rgb`` applies, each with its own probability: colour jitter (brightness, contrast,
saturation, hue), Gaussian blur and additive Gaussian pixel noise. ``apply_depth_noise`` turns a
perfect rendered depth map into something like a structured-light / ToF sensor's: axial Gaussian noise
whose standard deviation grows with depth (sigma(z) = a + b (z - z0)^2, the Kinect model of Nguyen,
Izadi and Lovell, 3DIMPVT 2012: a = 1.2 mm, b = 1.9 mm/m^2, z0 = 0.4 m), pixels missing along depth
discontinuities (object silhouettes) and a few missing at random. This is what Self6D's RGB-D
self-supervised stage sees from a real sensor; the perfect depth stays available for supervision.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the photometric augmentation (0 probability turns a step off)."""

    p_color: float = 0.8
    brightness: float = 0.25  # additive, fraction of 255: uniform(-b, b)
    contrast: float = 0.3  # multiplicative around the mean: uniform(1-c, 1+c)
    saturation: float = 0.3  # multiplicative: uniform(1-s, 1+s)
    hue: float = 8.0  # degrees: uniform(-h, h)
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # px
    p_noise: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 8.0)  # grey levels

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(p_color=0.0, p_blur=0.0, p_noise=0.0)


def augment_rgb(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Photometric augmentation of a uint8 RGB image [H,W,3]; returns a new uint8 image.

    The random draws happen in a fixed order whatever is switched on by chance, so two images with
    the same generator state get the same augmentation.
    """
    draws = rng.random(3)
    jitter = rng.uniform(-1, 1, size=4)
    blur_sigma = rng.uniform(*config.blur_sigma)
    noise_sigma = rng.uniform(*config.noise_sigma)
    noise_seed = int(rng.integers(2**31))
    img = image.astype(np.float32)
    if draws[0] < config.p_color:
        img = img + jitter[0] * config.brightness * 255.0
        mean = img.mean()
        img = (img - mean) * (1.0 + jitter[1] * config.contrast) + mean
        img = np.clip(img, 0, 255)
        if config.saturation > 0 or config.hue > 0:
            hsv = cv2.cvtColor((img / 255.0).astype(np.float32), cv2.COLOR_RGB2HSV)  # float: H in degrees [0,360)
            hsv[..., 0] = (hsv[..., 0] + jitter[2] * config.hue) % 360.0
            hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + jitter[3] * config.saturation), 0, 1)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    if draws[1] < config.p_blur:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigmaX=float(blur_sigma))
    if draws[2] < config.p_noise:
        img = img + np.random.default_rng(noise_seed).normal(0.0, noise_sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class DepthNoiseConfig:
    """Depth-sensor noise: sigma(z) = sigma_a + sigma_b (z - z0)^2 metres, plus missing pixels."""

    sigma_a: float = 0.0012  # m
    sigma_b: float = 0.0019  # m / m^2
    z0: float = 0.4  # m
    edge_threshold: float = 0.02  # m: a jump larger than this between neighbours is an edge
    edge_width: int = 1  # px: edges are dilated by this much before dropping
    p_edge_drop: float = 0.5  # probability that a pixel in the edge band is missing
    p_random_drop: float = 0.005  # probability that any other valid pixel is missing


def depth_sigma(z: np.ndarray, config: DepthNoiseConfig = DepthNoiseConfig()) -> np.ndarray:
    """The axial standard deviation (metres) at depth ``z`` (metres)."""
    return config.sigma_a + config.sigma_b * (np.asarray(z, dtype=np.float64) - config.z0) ** 2


def depth_edges(depth: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels next to a depth discontinuity (including valid/invalid borders), bool [H,W]."""
    d = depth.astype(np.float32)
    edges = np.zeros(d.shape, bool)
    dx = np.abs(np.diff(d, axis=1)) > threshold
    dy = np.abs(np.diff(d, axis=0)) > threshold
    edges[:, 1:] |= dx
    edges[:, :-1] |= dx
    edges[1:, :] |= dy
    edges[:-1, :] |= dy
    return edges


def apply_depth_noise(depth: np.ndarray, rng: np.random.Generator,
                      config: DepthNoiseConfig = DepthNoiseConfig()) -> np.ndarray:
    """Noisy copy of a metric depth map (float32 [H,W], 0 = no measurement)."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = depth > 0
    noise = rng.standard_normal(depth.shape).astype(np.float32)
    u_edge = rng.random(depth.shape)
    u_rand = rng.random(depth.shape)
    out = depth + noise * depth_sigma(depth, config).astype(np.float32)
    edges = depth_edges(depth, config.edge_threshold)
    if config.edge_width > 0 and edges.any():
        k = 2 * config.edge_width + 1
        edges = cv2.dilate(edges.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    drop = (edges & (u_edge < config.p_edge_drop)) | (u_rand < config.p_random_drop)
    out[~valid | drop] = 0.0
    out[out < 0] = 0.0
    return out
