"""BOP ``models_info.json``: diameters, extents and symmetries, converted to metres."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ContinuousSymmetry:
    axis: np.ndarray  # [3] unit vector in the object frame
    offset: np.ndarray  # [3] metres, a point on the axis


@dataclass(frozen=True)
class ModelInfo:
    obj_id: int
    diameter: float  # metres
    bbox_min: np.ndarray  # [3] metres
    bbox_size: np.ndarray  # [3] metres
    # 4x4 object-frame transforms (translation in metres) that leave the object looking the same
    symmetries_discrete: list[np.ndarray] = field(default_factory=list)
    symmetries_continuous: list[ContinuousSymmetry] = field(default_factory=list)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetries_discrete or self.symmetries_continuous)


def _to_metres_transform(flat16: list[float], unit_scale: float) -> np.ndarray:
    transform = np.asarray(flat16, dtype=np.float64).reshape(4, 4).copy()
    transform[:3, 3] *= unit_scale
    return transform


def parse_models_info(raw: dict, unit_scale: float = 0.001) -> dict[int, ModelInfo]:
    infos = {}
    for key, entry in raw.items():
        obj_id = int(key)
        try:
            continuous = [
                ContinuousSymmetry(
                    axis=np.asarray(sym["axis"], dtype=np.float64) / np.linalg.norm(sym["axis"]),
                    offset=np.asarray(sym["offset"], dtype=np.float64) * unit_scale,
                )
                for sym in entry.get("symmetries_continuous", [])
            ]
            infos[obj_id] = ModelInfo(
                obj_id=obj_id,
                diameter=float(entry["diameter"]) * unit_scale,
                bbox_min=np.array([entry["min_x"], entry["min_y"], entry["min_z"]], float) * unit_scale,
                bbox_size=np.array([entry["size_x"], entry["size_y"], entry["size_z"]], float) * unit_scale,
                symmetries_discrete=[
                    _to_metres_transform(s, unit_scale) for s in entry.get("symmetries_discrete", [])
                ],
                symmetries_continuous=continuous,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"models_info entry for object {key} is malformed: {exc}") from exc
    return infos


def load_models_info(path: str | os.PathLike, unit_scale: float = 0.001) -> dict[int, ModelInfo]:
    """Read a BOP models_info.json; keys are object ids."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"models_info.json not found: {path}")
    with open(path) as f:
        return parse_models_info(json.load(f), unit_scale)
