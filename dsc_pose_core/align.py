"""Render-and-compare alignment at test time: a training-free pose refiner (issue 26).

DSC-PoseNet aligns rendered silhouettes with segmentation masks to *train* (dsc-posenet.txt eq. 12-14)
and DeepIM compares renders with the observed crop to *refine* (deepim.txt sec. 3). Here the same
comparison is an optimisation per detection at test time, with no network of its own:

* observation (:func:`observe`): on the segmentation network's region of interest around the detection
  (a square crop, intrinsics ``K' = A K``, ``geometry.camera``): the network's foreground probability
  ``P`` and the distance transform ``D`` of the crop's image edges (Canny) within ``edge_band`` px of
  ``P``'s outline, truncated at ``edge_tau`` px;
* energy of a pose (:func:`energies`), from the rendered silhouette ``M`` (``render.FastRenderer`` at the
  crop size, meshes decimated to ``render_faces``):

      E = (1 - F_beta(M, P)) + w_edge * mean_{p in contour(M)} min(D(p), tau) / tau

  ``F_beta`` of the soft precision ``sum(M P) / sum(M)`` and recall ``sum(M P) / sum(P)`` (beta =
  ``recall_beta``; 1: Dice, the default; 0: soft IoU ``sum(M P) / (sum(M) + sum(P) - sum(M P))``) is
  eq. 12's mask agreement for one frame; optional terms: the vertex colours' agreement with the image
  (``w_colour``) and the other detections' masks as occluders (``other_masks``); the
  contour term is a chamfer distance of the silhouette's outline to image edges, which places the
  outline on the object's boundary to a pixel even where ``P`` is blurred (depth follows from the
  outline's scale: 1 px on a 70 px object is 1.4 % of depth);
* optimiser (:func:`align`): hypotheses ``G R`` for ``G`` in a set of rotations about the object's
  origin in the camera frame (the identity, 180 deg flips, or the 24 rotations of the cube), each first
  given the translation that matches the silhouette's centroid and area to ``P``'s; the best
  ``keep`` hypotheses by energy are then improved by a pattern search over DeepIM's untangled
  parameters (image-plane shift of the projected origin in crop pixels, log depth, rotation about the
  camera axes through the object origin: deepim.txt sec. 3.2), 12 renders per round (+- each
  parameter), steps halved when no move lowers the energy; the lowest energy wins;
* confidence (:func:`confidence`, :func:`score_pose`): the final energy, the colour agreement of the
  model's vertex colours with the image (normalised cross-correlation) and the object's symmetry through a
  logistic map, the pose's ``score``.

All arrays are numpy; poses are object -> camera (R [3,3], t [3] metres); crop pixels follow
``geometry.camera``'s convention (pixel centres at integers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from typing import Sequence

import cv2
import numpy as np

from .render.gl import LightConfig
from .segmentation import roi

from .defaults import ALIGN_COLOUR, ALIGN_HYPOTHESES, HYPOTHESES
AMBIENT = LightConfig(ambient=1.0, diffuse=0.0, specular=0.0)  # renders of the plain vertex colours


@dataclass(frozen=True)
class AlignConfig:
    # "none" (the start only), "flips" (+ 180 deg about the camera axes), "cube24", "templates" (+ the pose of
    # rendered templates matched in pretrained features: ``pipeline.TemplateMatcher``)
    hypotheses: str = ALIGN_HYPOTHESES
    keep: int = 2  # hypotheses refined by the pattern search (the lowest energies after the translation fit)
    rounds: int = 14  # pattern-search rounds (12 renders each)
    step_px: float = 3.0  # first steps: image-plane shift (crop pixels), log depth, rotation (degrees)
    step_log_depth: float = 0.03
    step_deg: float = 8.0
    min_step_px: float = 0.2  # the search stops when the shift step falls below this
    # a pose tracked from the previous frame (``tracking``) starts near the answer: this many rounds, from
    # half the first steps, no hypotheses
    track_rounds: int = 5
    w_edge: float = 1.0  # weight of the contour-to-edge term
    w_colour: float = ALIGN_COLOUR  # weight of the appearance term (1 - NCC of rendered vertex colours and the image) / 2
    # the frame's other detections' masks mark pixels where the object may be hidden (rendered pixels there
    # that the network calls background are not counted against the pose)
    other_masks: bool = False
    # mask term: 1 - F_beta(soft precision, soft recall) (1: Dice; > 1 forgives rendered pixels the network
    # calls background, e.g. occluded ones); 0: 1 - soft IoU
    recall_beta: float = 1.0
    colour_light: str = "ambient"  # lighting of the appearance renders: "ambient" (vertex colours) | "headlight"
    edge_tau: float = 6.0  # truncation of the edge distance (crop pixels)
    # > 0: keep only image edges within this many crop pixels of the mask's outline (the object's boundary,
    # not clutter or texture; LM-O val: ADD(-S) 0.143 against 0.116 with every edge at w_edge 0.5)
    edge_band: float = 4.0
    canny_low: float = 40.0
    canny_high: float = 120.0
    render_faces: int = 1000  # meshes decimated for the search renders (0: full meshes)
    # confidence = 1 / (1 + exp(-(w_energy E + w_colour NCC + w_symmetric S + bias))), S = 1 for objects with a
    # symmetry (their poses are judged up to it, so a silhouette's mirror ambiguity costs them less): a logistic
    # regression of "ADD(-S) correct" on LM-O val (BENCHMARKS "Test-time alignment: what limits it")
    score_w_energy: float = -5.13
    score_w_colour: float = 3.06
    score_w_symmetric: float = 1.83
    score_bias: float = -0.74

    def validate(self) -> None:
        if self.hypotheses not in HYPOTHESES:
            raise ValueError(f"align.hypotheses must be one of {HYPOTHESES}, not {self.hypotheses!r}")
        if self.keep < 1 or self.rounds < 0 or self.track_rounds < 0:
            raise ValueError("align.keep must be >= 1, align.rounds and align.track_rounds >= 0")
        if not (self.step_px > 0 and self.step_log_depth > 0 and self.step_deg > 0 and self.min_step_px > 0):
            raise ValueError("align steps must be positive")
        if min(self.w_edge, self.w_colour, self.recall_beta, self.edge_band) < 0 or not self.edge_tau > 0:
            raise ValueError("align.w_edge, w_colour, recall_beta and edge_band must be >= 0 and edge_tau > 0")
        if self.render_faces < 0:
            raise ValueError("align.render_faces must be >= 0")
        if self.colour_light not in ("ambient", "headlight"):
            raise ValueError(f"align.colour_light must be 'ambient' or 'headlight', not {self.colour_light!r}")


@dataclass
class Observation:
    """One detection's evidence on its crop: ``K`` [3,3] crop intrinsics, ``probability`` [S,S] float32
    foreground probability, ``edge_distance`` [S,S] float32 distance to the nearest image edge (crop px,
    truncated at tau), ``window`` (x1, y1, x2, y2) pixel edges in the full image."""

    K: np.ndarray
    probability: np.ndarray
    edge_distance: np.ndarray
    window: np.ndarray
    image: np.ndarray | None = None  # [S,S,3] float32 RGB crop (the appearance term)
    # [S,S] float32 probability that another detected object covers the pixel (it may hide this one:
    # rendered pixels there that the network calls background are not counted against a pose); None: none
    occluded: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.probability.shape[0]


def observe(image: np.ndarray, K: np.ndarray, probability: np.ndarray, window, config: AlignConfig,
            occluded: np.ndarray | None = None) -> Observation:
    """The evidence of one detection: ``probability`` [S,S] is the mask network's output on the square
    ``window`` (``models.segmentation.MaskPredictor``); the image [H,W,3] uint8 RGB is cropped the same way;
    ``occluded`` [H,W] (optional): the other detections' foreground probability in the full image."""
    size = probability.shape[0]
    affine = np.eye(3)
    affine[:2] = roi.window_affine(window, size)
    crop = roi.crop(image, window, size)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, config.canny_low, config.canny_high)
    if config.edge_band > 0:  # only edges near the mask's outline: the object's boundary, not clutter
        outline = cv2.Canny((probability > 0.5).astype(np.uint8) * 255, 1, 1) > 0
        near = cv2.distanceTransform((~outline).astype(np.uint8), cv2.DIST_L2, 3) <= config.edge_band
        edges = np.where(near, edges, 0).astype(np.uint8)
    distance = cv2.distanceTransform((edges == 0).astype(np.uint8), cv2.DIST_L2, 3)
    probability = probability.astype(np.float32)
    return Observation(K=affine @ np.asarray(K, dtype=np.float64), probability=probability,
                       edge_distance=np.minimum(distance, config.edge_tau).astype(np.float32),
                       window=np.asarray(window, dtype=np.float64), image=crop.astype(np.float32),
                       occluded=None if occluded is None else roi.crop(occluded.astype(np.float32), window, size))


def contour(masks: np.ndarray) -> np.ndarray:
    """Bool [B,S,S]: silhouette pixels with a 4-neighbour outside the silhouette (or on the crop border)."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    interior = (padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
    return masks & ~interior


def colour_agreement(rgb: np.ndarray, masks: np.ndarray, obs: Observation) -> np.ndarray:
    """Normalised cross-correlation [B] (mean over R, G, B) of rendered colours ``rgb`` [B,S,S,3] and the
    image crop over the rendered pixels the network calls foreground (occluders left out); 0 when fewer
    than 4 such pixels (on the half-resolution grid it uses). Weighted moments as batched matrix products
    ([B,1,P] @ [B,P,3]), so no [B,P,3] temporary is weighted pixel by pixel."""
    # every second pixel in each direction: a quarter of the work, the same agreement to within noise
    B = len(masks)
    w = (masks[:, ::2, ::2] & (obs.probability[::2, ::2] > 0.5)[None]).reshape(B, 1, -1).astype(np.float64)  # [B,1,P]
    x = rgb[:, ::2, ::2].reshape(B, -1, 3).astype(np.float64) / 255.0  # [B,P,3]
    y = obs.image[::2, ::2].reshape(-1, 3).astype(np.float64) / 255.0  # [P,3]
    n = w.sum(2)  # [B,1]
    safe = np.maximum(n, 1.0)
    sx, sy = (w @ x)[:, 0], (w[:, 0] @ y)  # [B,3]
    sxx, syy, sxy = (w @ (x * x))[:, 0], w[:, 0] @ (y * y), (w @ (x * y[None]))[:, 0]
    cov = sxy - sx * sy / safe
    var_x = np.maximum(sxx - sx * sx / safe, 0.0)
    var_y = np.maximum(syy - sy * sy / safe, 0.0)
    norm = np.sqrt(var_x * var_y)
    ncc = np.where(norm > 1e-10, cov / np.maximum(norm, 1e-10), 0.0).mean(1)
    return np.where(n[:, 0] >= 4, ncc, 0.0).astype(np.float32)


def _visible_weight(masks: np.ndarray, obs: Observation) -> np.ndarray:
    """float [B,S,S]: the rendered pixels that count (all, less those another detection may cover and the
    network calls background)."""
    m = masks.astype(np.float32)
    if obs.occluded is None:
        return m
    return m * (1.0 - obs.occluded * (1.0 - obs.probability))


def energies(masks: np.ndarray, obs: Observation, config: AlignConfig, rgb: np.ndarray | None = None) -> np.ndarray:
    """E [B] of rendered silhouettes ``masks`` (bool [B,S,S]) against ``obs`` (module docstring)."""
    B = len(masks)
    m = _visible_weight(masks, obs).reshape(B, -1)
    p = obs.probability
    inter = masks.reshape(B, -1).astype(np.float32) @ p.ravel()  # sums as matrix products: [B,P] @ [P]
    area = m.sum(1)
    union = area + p.sum() - inter
    iou = inter / np.maximum(union, 1e-6)
    if config.recall_beta > 0:
        precision = inter / np.maximum(area, 1e-6)
        recall = inter / max(float(p.sum()), 1e-6)
        b2 = config.recall_beta ** 2
        iou = (1 + b2) * precision * recall / np.maximum(b2 * precision + recall, 1e-6)
    edge = contour(masks).reshape(B, -1).astype(np.float32)
    n = edge.sum(1)
    chamfer = (edge @ obs.edge_distance.ravel()) / np.maximum(n, 1) / config.edge_tau
    chamfer = np.where(n > 0, chamfer, 1.0)
    energy = (1.0 - iou) + config.w_edge * chamfer
    if rgb is not None and config.w_colour > 0:
        energy = energy + config.w_colour * (1.0 - colour_agreement(rgb, masks, obs)) / 2
    return energy


def confidence(energy: float, colour: float, config: AlignConfig, symmetric: bool = False) -> float:
    """The pose's confidence in (0, 1): a logistic map of the final energy, the colour agreement
    (``colour_agreement`` of the vertex-colour render) and whether the object has a symmetry:
    ``1 / (1 + exp(-(a E + b NCC + c S + d)))``."""
    z = (config.score_w_energy * float(energy) + config.score_w_colour * float(colour)
         + config.score_w_symmetric * float(bool(symmetric)) + config.score_bias)
    return float(1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0))))


def score_features(renderer, obj_id: int, R: np.ndarray, t: np.ndarray, obs: Observation, config: AlignConfig
                   ) -> tuple[float, float]:
    """(energy, colour agreement) of a pose: what :func:`confidence` maps (one vertex-colour render). The energy
    is the mask and edge terms only, whatever ``w_colour`` the search used: the colour agreement is its own
    feature, so the confidence's weights mean the same with and without the colour term in the search."""
    out = renderer.render_batch(obs.K, obj_id, np.asarray(R)[None], np.asarray(t).reshape(1, 3), obs.size, obs.size,
                                rgb=True, light=AMBIENT)
    masks = out.instance > 0
    energy = energies(masks, obs, config)[0]
    return float(energy), float(colour_agreement(out.rgb, masks, obs)[0])


def score_pose(renderer, obj_id: int, R: np.ndarray, t: np.ndarray, obs: Observation, config: AlignConfig,
               symmetric: bool = False) -> float:
    """:func:`confidence` of a pose."""
    return confidence(*score_features(renderer, obj_id, R, t, obs, config), config, symmetric)


def _axis_rotation(axis: int, radians: float) -> np.ndarray:
    c, s = math.cos(radians), math.sin(radians)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def hypothesis_rotations(kind: str) -> np.ndarray:
    """Rotations G [N,3,3] applied as ``G R`` (about the object origin, camera axes); G[0] is the identity.
    ``flips``: the identity and 180 deg about x, y, z; ``cube24``: the 24 rotations of the cube."""
    if kind in ("none", "templates"):  # "templates": the extra starts come from template matching (``align(extra=)``)
        return np.eye(3)[None]
    if kind == "flips":
        return np.stack([np.eye(3)] + [_axis_rotation(a, math.pi) for a in range(3)])
    if kind != "cube24":
        raise ValueError(f"unknown hypothesis set {kind!r}; choose one of {HYPOTHESES}")
    found = [np.eye(3)]
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for signs in np.ndindex(2, 2, 2):
            G = np.zeros((3, 3))
            for row, (col, sign) in enumerate(zip(perm, signs)):
                G[row, col] = -1.0 if sign else 1.0
            if np.linalg.det(G) > 0 and not any(np.allclose(G, F) for F in found):
                found.append(G)
    return np.stack(found)


def _rodrigues(w: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(w, dtype=np.float64).reshape(3, 1))[0]


class _Search:
    """Poses in DeepIM's untangled parameters around a reference (R0, t0) on the crop ``K``:
    p = (du, dv [crop px], log depth ratio, wx, wy, wz [rad, camera axes through the object origin])."""

    def __init__(self, K: np.ndarray, R0: np.ndarray, t0: np.ndarray):
        self.K, self.Kinv, self.R0 = K, np.linalg.inv(K), R0
        uvw = K @ t0
        self.uv0, self.z0 = uvw[:2] / uvw[2], float(t0[2])

    def pose(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.z0 * math.exp(p[2])
        t = z * (self.Kinv @ np.array([self.uv0[0] + p[0], self.uv0[1] + p[1], 1.0]))
        return _rodrigues(p[3:]) @ self.R0, t


def tracking_config(config: AlignConfig) -> AlignConfig:
    """The search for a pose tracked from the previous frame: ``track_rounds`` rounds from half the
    first steps, the start rotation only."""
    return dataclasses.replace(config, rounds=config.track_rounds, step_px=config.step_px / 2,
                               step_log_depth=config.step_log_depth / 2, step_deg=config.step_deg / 2,
                               hypotheses="none", keep=1)


def align(renderer, obj_id: int, R: np.ndarray, t: np.ndarray, obs: Observation, config: AlignConfig,
          extra: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """Aligned pose of one detection: (R [3,3], t [3] metres, final energy, {"renders": n, "hypothesis": i}).
    ``renderer`` holds ``obj_id`` (``render.FastRenderer``); ``extra``: more starting poses [(R, t)] that compete
    with the start's hypotheses (e.g. template matching's), numbered after them."""
    size = obs.size
    renders = 0

    colour = config.w_colour > 0
    light = AMBIENT if config.colour_light == "ambient" else None

    def energies_of(Rs, ts):
        nonlocal renders
        renders += len(Rs)
        out = renderer.render_batch(obs.K, obj_id, np.asarray(Rs), np.asarray(ts), size, size, rgb=colour,
                                    light=light)
        masks = out.instance > 0
        return masks, energies(masks, obs, config, out.rgb if colour else None)

    R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64).reshape(3)
    if t[2] <= 0:
        raise ValueError("the start pose is behind the camera")
    # 1) hypotheses, each with the translation that matches P's centroid and area
    G = hypothesis_rotations(config.hypotheses)
    starts_R = G @ R
    starts_t = np.repeat(t[None], len(G), 0)
    extra = [(np.asarray(Re, dtype=np.float64), np.asarray(te, dtype=np.float64).reshape(3)) for Re, te in extra]
    extra = [(Re, te) for Re, te in extra if te[2] > 0]
    if extra:
        starts_R = np.concatenate([starts_R, np.stack([Re for Re, _ in extra])])
        starts_t = np.concatenate([starts_t, np.stack([te for _, te in extra])])
    masks, start_E = energies_of(starts_R, starts_t)
    p = obs.probability
    p_area = float(p.sum())
    if p_area >= 4.0:
        ys, xs = np.mgrid[0:size, 0:size]
        p_centroid = np.array([(p * xs).sum(), (p * ys).sum()]) / p_area
        visible = _visible_weight(masks, obs)
        for i, m in enumerate(masks):
            area = float(visible[i].sum())
            if area < 4.0:
                continue
            centroid = np.array([xs[m].mean(), ys[m].mean()])
            search = _Search(obs.K, starts_R[i], starts_t[i])
            # the silhouette scales with 1 / depth; its centroid moves with the projected origin
            ratio = math.sqrt(area / p_area)
            shift = p_centroid - (search.uv0 + (centroid - search.uv0) / ratio)
            starts_R[i], starts_t[i] = search.pose(np.array([shift[0], shift[1], math.log(ratio), 0, 0, 0]))
        masks, start_E = energies_of(starts_R, starts_t)
    order = np.argsort(start_E, kind="stable")[: config.keep]
    # 2) pattern search from the best hypotheses
    steps0 = np.array([config.step_px, config.step_px, config.step_log_depth] + [math.radians(config.step_deg)] * 3)
    moves = np.concatenate([np.diag(np.ones(6)), -np.diag(np.ones(6))])
    best = (float(start_E[order[0]]), starts_R[order[0]], starts_t[order[0]], int(order[0]))
    for h in order:
        search = _Search(obs.K, starts_R[h], starts_t[h])
        p_now, E_now, steps = np.zeros(6), float(start_E[h]), steps0.copy()
        for _ in range(config.rounds):
            if steps[0] < config.min_step_px:
                break
            candidates = p_now + moves * steps
            poses = [search.pose(c) for c in candidates]
            _, E = energies_of([q[0] for q in poses], [q[1] for q in poses])
            j = int(np.argmin(E))
            if E[j] < E_now:
                p_now, E_now = candidates[j], float(E[j])
            else:
                steps = steps / 2
        if E_now < best[0]:
            R_h, t_h = search.pose(p_now)
            best = (E_now, R_h, t_h, int(h))
    E, R_best, t_best, hypothesis = best
    return R_best, t_best, E, {"renders": renders, "hypothesis": hypothesis}


__all__ = ["AlignConfig", "Observation", "observe", "energies", "contour", "colour_agreement", "confidence",
           "score_features", "score_pose", "hypothesis_rotations",
           "align", "tracking_config", "HYPOTHESES"]
