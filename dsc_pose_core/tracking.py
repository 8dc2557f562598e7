"""Tracking across frames: a confident pose of the previous frame starts the refiners instead of the
initialiser.

Per object instance (class id; instances of one class matched to the previous frame's by the distance
of their detection boxes' centres, in box diagonals, greedily, nearest first), :class:`Tracker` keeps
the last confident pose. In the next frame a matched detection starts from that pose's rotation with
the translation that fits it to the new box (``box_initialiser.fit_translation``: the camera moved),
passed as ``PoseEstimator.estimate``'s ``starts`` (the refiners search near it:
``align.tracking_config``), and skips the initialiser. It falls back to the initialiser, in the same
frame, when

- no refiner refined the tracked start (only objects some refiner serves are tracked at all),
- the tracked pose's confidence drops below ``min_score`` (the aligner's calibrated confidence, or
  the box IoU without the aligner), or
- the pose jumps: the refiners moved its translation more than ``max_jump`` object diameters from
  the start;

and a track ends when its detection is lost (no match in a frame) or its pose is not confident.
Optional smoothing (``smoothing`` = weight of the previous pose, 0 = none) blends the published
pose of a continued track with the previous one (rotation by slerp, translation linearly).

Tracking needs a refiner (the aligner or DeepIM): without one a tracked pose could never change.
Shapes: ``R`` [3,3], ``t`` [3] metres; boxes (x, y, w, h) pixels. No ROS imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import defaults
from .box_initialiser import fit_translation
from .data.boxes import box_xyxy_edges
from .pipeline import Detection, PipelineConfigError, PoseEstimator, PoseResult


@dataclass(frozen=True)
class TrackingConfig:
    min_score: float = defaults.TRACKING_MIN_SCORE  # a pose at least this confident continues its track
    max_shift: float = 1.0  # box centres of one instance in consecutive frames lie within this many box diagonals
    max_jump: float = 0.5  # refined minus start translation, in object diameters, beyond which the track restarts
    smoothing: float = defaults.TRACKING_SMOOTHING  # weight of the previous pose in the published one (0: none, < 1)

    def validate(self) -> None:
        if not (0.0 <= self.min_score <= 1.0 and self.max_shift > 0.0):
            raise PipelineConfigError("tracking: min_score must be in [0, 1] and max_shift > 0")
        if not (self.max_jump > 0.0 and 0.0 <= self.smoothing < 1.0):
            raise PipelineConfigError("tracking: max_jump must be > 0 and smoothing in [0, 1)")


@dataclass
class Track:
    obj_id: int
    box_xywh: np.ndarray  # the detection box of the last frame
    R: np.ndarray
    t: np.ndarray
    score: float
    frames: int = 1  # consecutive frames followed


@dataclass
class TrackingStats:
    """Counts since the tracker started (the node's diagnostics)."""

    frames: int = 0
    initialised: int = 0  # poses from the initialiser (no track to continue)
    tracked: int = 0  # poses continued from the previous frame
    reinitialised: int = 0  # tracked poses that fell back to the initialiser (low confidence or a jump)
    lost: int = 0  # tracks whose detection did not come back
    active: int = 0  # tracks after the last frame
    reasons: dict = field(default_factory=dict)  # why tracks fell back: {"low score": n, "jump": n}


def _slerp(R0: np.ndarray, R1: np.ndarray, weight: float) -> np.ndarray:
    """The rotation ``weight`` of the way from R0 to R1 (geodesic)."""
    from scipy.spatial.transform import Rotation, Slerp

    return Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([R0, R1])))(weight).as_matrix()


class Tracker:
    """``Tracker(estimator, config)``; ``estimate(image, K, detections) -> [PoseResult]`` like
    ``PoseEstimator.estimate``, with ``PoseResult.tracked`` set where the previous frame's pose started
    the refiners. ``reset()`` forgets every track (a new video)."""

    def __init__(self, estimator: PoseEstimator, config: TrackingConfig | None = None):
        self.estimator, self.config = estimator, config or TrackingConfig()
        self.config.validate()
        if not estimator.refiners:
            raise PipelineConfigError("tracking needs a refiner (align, or DeepIM with refine_iterations > 0): "
                                      "without one a tracked pose never changes")
        self.tracks: list[Track] = []
        self.stats = TrackingStats()

    def reset(self) -> None:
        self.tracks = []

    def _match(self, detections: Sequence[Detection]) -> dict[int, Track]:
        """{detection index: its previous-frame track}: same class, box centres within ``max_shift``
        diagonals of the track's box, greedy (nearest first)."""
        pairs = []
        for i, det in enumerate(detections):
            for k, track in enumerate(self.tracks):
                try:
                    if int(det.obj_id) != track.obj_id:
                        continue
                    x, y, w, h = np.asarray(det.box_xywh, dtype=np.float64).reshape(4)
                except (TypeError, ValueError):
                    continue
                tx, ty, tw, th = track.box_xywh
                shift = np.hypot(x + w / 2 - tx - tw / 2, y + h / 2 - ty - th / 2) / max(np.hypot(tw, th), 1.0)
                if np.isfinite(shift) and shift <= self.config.max_shift:
                    pairs.append((shift, i, k))
        matched, used = {}, set()
        for _, i, k in sorted(pairs):
            if i not in matched and k not in used:
                matched[i] = self.tracks[k]
                used.add(k)
        return matched

    def _falls_back(self, result: PoseResult, start_t: np.ndarray) -> str | None:
        """Why a tracked result falls back to the initialiser, or None."""
        if not result.refined:  # no refiner moved the start: nothing confirms it in this frame
            return "not refined"
        if result.score < self.config.min_score:
            return "low score"
        diameter = self.estimator.diameters[result.obj_id]
        if np.linalg.norm(np.asarray(result.t) - start_t) > self.config.max_jump * diameter:
            return "jump"
        return None

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray, detections: Sequence[Detection]) -> list[PoseResult]:
        # only objects a refiner serves can continue a track: an unrefined start would stay as it was
        refined_ids = self.estimator.refine_ids
        matched = {i: track for i, track in self._match(detections).items() if track.obj_id in refined_ids}
        starts = {}
        for i, track in matched.items():  # the track's rotation, moved to where the detection is now
            box = box_xyxy_edges(np.asarray(detections[i].box_xywh, dtype=np.float64))
            vertices = self.estimator.vertices[track.obj_id]
            t = fit_translation(box, K, vertices, track.R, self.estimator.diameters[track.obj_id])
            starts[i] = (track.R, t if np.isfinite(t).all() and t[2] > 0 else track.t)
        results = self.estimator.estimate(image_rgb, K, detections, starts)
        fall_back = {}
        for i in matched:
            if not results[i].tracked:  # skipped by the pipeline (e.g. an implausible box): as it is
                continue
            reason = self._falls_back(results[i], starts[i][1])
            if reason is not None:
                fall_back[i] = reason
        if fall_back:  # the initialiser for those, in this frame
            order = sorted(fall_back)
            again = self.estimator.estimate(image_rgb, K, [detections[i] for i in order])
            for i, result in zip(order, again):
                result.timings["total"] = result.timings.get("total", 0.0) + results[i].timings.get("total", 0.0)
                results[i] = result
                self.stats.reasons[fall_back[i]] = self.stats.reasons.get(fall_back[i], 0) + 1
        stats = self.stats
        stats.frames += 1
        stats.reinitialised += len(fall_back)
        stats.tracked += sum(1 for r in results if r.tracked)
        stats.initialised += sum(1 for r in results if r.ok and not r.tracked)
        stats.lost += len(self.tracks) - len(matched)
        tracks = []
        for i, result in enumerate(results):
            if not result.ok or result.score < self.config.min_score:
                continue
            previous = matched.get(i)
            if previous is not None and result.tracked and self.config.smoothing > 0:
                w = self.config.smoothing
                result.R = _slerp(np.asarray(result.R), previous.R, w)
                result.t = (1 - w) * np.asarray(result.t) + w * previous.t
            frames = previous.frames + 1 if previous is not None and result.tracked else 1
            tracks.append(Track(result.obj_id, np.asarray(result.box_xywh, dtype=np.float64),
                                np.asarray(result.R, dtype=np.float64), np.asarray(result.t, dtype=np.float64),
                                float(result.score), frames))
        self.tracks = tracks
        stats.active = len(tracks)
        return results


__all__ = ["TrackingConfig", "Tracker", "Track", "TrackingStats"]
