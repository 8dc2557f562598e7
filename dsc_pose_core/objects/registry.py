"""The object registry (``config/objects.yaml``): which objects the package knows and where their
meshes, symmetries and keypoints come from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import yaml

from .keypoints import object_keypoints
from .mesh import ObjectMesh, load_mesh
from .models_info import ContinuousSymmetry, ModelInfo, load_models_info


REGISTRY_KEYS = {"models_dir", "mesh_unit_scale", "objects"}
OBJECT_KEYS = {"id", "name", "mesh", "mesh_unit_scale", "symmetry"}  # a misspelt key is an error, not ignored


class RegistryError(ValueError):
    """The object registry file is missing, malformed or names unusable objects."""


@dataclass
class ObjectEntry:
    obj_id: int  # the 2D detector's class id
    name: str
    mesh_path: str
    unit_scale: float = 0.001
    info: ModelInfo | None = None  # from models_info.json when available
    symmetry_override: dict | None = field(default=None, repr=False)

    @cached_property
    def mesh(self) -> ObjectMesh:
        return load_mesh(self.mesh_path, self.unit_scale)

    @cached_property
    def model_info(self) -> ModelInfo:
        """Diameter and symmetries: models_info.json, then the registry's own symmetry field,
        else computed from the mesh with no symmetry."""
        info = self.info
        if info is None:
            vertices = self.mesh.vertices
            info = ModelInfo(self.obj_id, self.mesh.diameter(), vertices.min(0), vertices.max(0) - vertices.min(0))
        if self.symmetry_override is not None:
            info = ModelInfo(info.obj_id, info.diameter, info.bbox_min, info.bbox_size,
                             *_parse_symmetry(self.symmetry_override, self.unit_scale, self.name))
        return info

    @property
    def diameter(self) -> float:
        return self.model_info.diameter

    def keypoints(self, count: int = 8) -> np.ndarray:
        return object_keypoints(self.mesh, count)


def _parse_symmetry(spec, unit_scale: float, name: str):
    """``none`` | {discrete: [[16 numbers], ...]} | {continuous: [{axis: [..], offset: [..]}]}"""
    if spec in (None, "none"):
        return [], []
    if not isinstance(spec, dict):
        raise RegistryError(f"object {name}: symmetry must be 'none' or a mapping, got {spec!r}")
    discrete = []
    for flat in spec.get("discrete", []):
        matrix = np.asarray(flat, dtype=np.float64).reshape(4, 4).copy()
        matrix[:3, 3] *= unit_scale
        discrete.append(matrix)
    continuous = [
        ContinuousSymmetry(np.asarray(c["axis"], float) / np.linalg.norm(c["axis"]),
                           np.asarray(c.get("offset", [0, 0, 0]), float) * unit_scale)
        for c in spec.get("continuous", [])
    ]
    return discrete, continuous


class ObjectRegistry:
    def __init__(self, entries: list[ObjectEntry]):
        self._by_id = {}
        for entry in entries:
            if entry.obj_id in self._by_id:
                raise RegistryError(f"object id {entry.obj_id} is listed twice")
            self._by_id[entry.obj_id] = entry

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, models_dir: str | None = None) -> "ObjectRegistry":
        """``models_dir`` (or $DSC_POSE_MODELS_DIR) overrides the file's own, which is relative
        to the YAML file."""
        path = os.fspath(path)
        try:
            with open(path) as f:
                config = yaml.safe_load(f)
        except FileNotFoundError as exc:
            raise RegistryError(f"object registry not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise RegistryError(f"object registry {path} is not valid YAML: {exc}") from exc
        if not isinstance(config, dict) or not isinstance(config.get("objects"), list):
            raise RegistryError(f"object registry {path} needs a list under 'objects'")
        unknown = sorted(set(config) - REGISTRY_KEYS)
        if unknown:
            raise RegistryError(f"object registry {path}: unknown key(s) {unknown}; known: {sorted(REGISTRY_KEYS)}")
        base = os.path.dirname(os.path.abspath(path))
        models_dir = models_dir or os.environ.get("DSC_POSE_MODELS_DIR") or os.path.join(
            base, config.get("models_dir", "."))
        unit_scale = float(config.get("mesh_unit_scale", 0.001))
        info_path = os.path.join(models_dir, "models_info.json")
        infos = load_models_info(info_path, unit_scale) if os.path.isfile(info_path) else {}
        entries = []
        for item in config["objects"]:
            try:
                obj_id, name, mesh = int(item["id"]), str(item["name"]), str(item["mesh"])
            except (KeyError, TypeError, ValueError) as exc:
                raise RegistryError(f"{path}: each object needs id, name and mesh ({item!r})") from exc
            unknown = sorted(set(item) - OBJECT_KEYS)
            if unknown:
                raise RegistryError(f"{path}: object {obj_id} ({name}): unknown key(s) {unknown}; "
                                    f"known: {sorted(OBJECT_KEYS)}")
            scale = float(item.get("mesh_unit_scale", unit_scale))
            entries.append(ObjectEntry(
                obj_id=obj_id, name=name, mesh_path=os.path.join(models_dir, mesh), unit_scale=scale,
                info=infos.get(obj_id), symmetry_override=item.get("symmetry"),
            ))
        return cls(entries)

    def __getitem__(self, obj_id: int) -> ObjectEntry:
        try:
            return self._by_id[int(obj_id)]
        except KeyError:
            raise KeyError(f"unknown object id {obj_id}; known: {sorted(self._by_id)}") from None

    def __contains__(self, obj_id) -> bool:
        return int(obj_id) in self._by_id

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def ids(self) -> list[int]:
        return sorted(self._by_id)

    def by_name(self, name: str) -> ObjectEntry:
        for entry in self._by_id.values():
            if entry.name == name:
                return entry
        raise KeyError(f"unknown object name {name!r}")
