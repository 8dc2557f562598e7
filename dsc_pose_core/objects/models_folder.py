"""A BOP models folder (``obj_XXXXXX.ply`` in millimetres + ``models_info.json``) and an object
registry YAML written from a user's meshes in any units and any format trimesh reads (.ply, .obj,
.stl, .glb, .off).

The renderers, the synthetic generator and every trainer read objects the BOP way (millimetre meshes
with ``models_info.json``); a new object's mesh rarely comes like that. :func:`write_models_folder`
converts each mesh once: scaled to millimetres by its declared unit (``units: m | cm | mm`` or
``mesh_unit_scale``: metres per mesh unit), textures baked into vertex colours (the renderers colour
by vertex), the object frame kept as it is (the poses the model learns are in the mesh's own frame),
and ``diameter`` / ``min_*`` / ``size_*`` computed. A mesh whose diameter is implausible for its
declared unit (under 5 mm or over 3 m) is an error: that is how a forgotten ``units:`` shows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNIT_SCALES = {"m": 1.0, "cm": 0.01, "mm": 0.001}  # metres per mesh unit
PLAUSIBLE_DIAMETER_M = (0.005, 3.0)


class MeshSpecError(ValueError):
    """A user's object description or mesh that cannot be used (one clear message)."""


@dataclass
class ObjectSpec:
    """One object of a chain config's ``data.objects`` list."""
    id: int
    name: str
    mesh: str  # path to the user's mesh
    units: str = ""  # "m" | "cm" | "mm"; or
    mesh_unit_scale: float = 0.0  # metres per mesh unit (0 = from units)
    symmetry: dict | str | None = None  # the registry's symmetry: (in millimetres, the folder's unit)

    def metres_per_unit(self) -> float:
        if self.units and self.mesh_unit_scale:
            raise MeshSpecError(f"object {self.id} ({self.name}): give units or mesh_unit_scale, not both")
        if self.mesh_unit_scale:
            if not self.mesh_unit_scale > 0:
                raise MeshSpecError(f"object {self.id}: mesh_unit_scale must be > 0 (metres per mesh unit)")
            return float(self.mesh_unit_scale)
        if self.units not in UNIT_SCALES:
            raise MeshSpecError(f"object {self.id} ({self.name}): units must be one of {sorted(UNIT_SCALES)} "
                                f"(or mesh_unit_scale: metres per mesh unit), got {self.units!r}")
        return UNIT_SCALES[self.units]


def _load_trimesh(path: Path):
    import trimesh

    if not path.is_file():
        raise MeshSpecError(f"mesh not found: {path}")
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many kinds for unreadable files
        raise MeshSpecError(f"{path}: trimesh cannot read it as a mesh: {exc}") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise MeshSpecError(f"{path}: no triangles in it")
    return loaded


def _vertex_colours(mesh) -> np.ndarray | None:
    """uint8 [N,4] per vertex, or None when the mesh has no colour (the renderers then use grey)."""
    visual = mesh.visual
    try:
        if visual.kind == "texture":
            visual = visual.to_color()  # bake the texture into the vertices
        if visual.kind in ("vertex", "face"):
            colors = np.asarray(visual.vertex_colors)
            if colors.shape == (len(mesh.vertices), 4):
                return colors.astype(np.uint8)
    except Exception:  # a broken texture is not worth failing over: render in grey
        return None
    return None


def convert_mesh(spec: ObjectSpec, models_dir: Path) -> dict:
    """Write ``models_dir/obj_{id:06d}.ply`` in millimetres; return its models_info entry."""
    import trimesh
    from scipy.spatial.distance import pdist

    scale_m = spec.metres_per_unit()
    source = _load_trimesh(Path(spec.mesh))
    vertices_mm = np.asarray(source.vertices, np.float64) * scale_m * 1000.0
    colors = _vertex_colours(source)
    mesh = trimesh.Trimesh(vertices_mm, np.asarray(source.faces), process=False)
    if colors is not None:
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    hull = mesh.convex_hull.vertices if len(mesh.vertices) > 3 else mesh.vertices
    diameter_mm = float(pdist(np.asarray(hull)).max())
    lo, hi = PLAUSIBLE_DIAMETER_M
    if not lo * 1000.0 <= diameter_mm <= hi * 1000.0:
        raise MeshSpecError(
            f"{spec.mesh}: at {scale_m:g} m per unit the object is {diameter_mm / 1000.0:.4g} m across; expected "
            f"{lo * 100:g} cm to {hi:g} m. Is units: right? (the file's raw extent is "
            f"{float(np.ptp(source.vertices, axis=0).max()):.4g} units)")
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"obj_{spec.id:06d}.ply"
    tmp = target.with_name(f".{target.name}.tmp.ply")
    mesh.export(str(tmp))
    os.replace(tmp, target)
    bmin, bmax = mesh.bounds
    return {"diameter": diameter_mm, "min_x": float(bmin[0]), "min_y": float(bmin[1]), "min_z": float(bmin[2]),
            "size_x": float(bmax[0] - bmin[0]), "size_y": float(bmax[1] - bmin[1]), "size_z": float(bmax[2] - bmin[2])}


def specs_fingerprint(specs: list[ObjectSpec]) -> str:
    """Hash of the meshes' bytes and their declared units: a changed mesh file re-runs the chain."""
    digest = hashlib.sha256()
    for spec in specs:
        digest.update(json.dumps([spec.id, spec.name, spec.units, spec.mesh_unit_scale, spec.symmetry],
                                 sort_keys=True).encode())
        path = Path(spec.mesh)
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def parse_specs(items) -> list[ObjectSpec]:
    """``data.objects`` (a list of mappings) -> specs, with one clear error per bad entry."""
    if not isinstance(items, list) or not items:
        raise MeshSpecError("objects: expected a non-empty list of {id, name, mesh, units}")
    specs, seen = [], set()
    allowed = {"id", "name", "mesh", "units", "mesh_unit_scale", "symmetry"}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MeshSpecError(f"objects[{i}]: expected a mapping {{id, name, mesh, units}}, got {item!r}")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise MeshSpecError(f"objects[{i}]: unknown keys {unknown} (allowed: {sorted(allowed)})")
        missing = [k for k in ("id", "name", "mesh") if k not in item]
        if missing:
            raise MeshSpecError(f"objects[{i}]: missing {missing}")
        try:
            obj_id = int(item["id"])
        except (TypeError, ValueError):
            raise MeshSpecError(f"objects[{i}]: id must be an integer (the detector's class id)") from None
        if obj_id < 1 or obj_id in seen:
            raise MeshSpecError(f"objects[{i}]: id {obj_id} must be >= 1 and unique")
        seen.add(obj_id)
        spec = ObjectSpec(obj_id, str(item["name"]), str(item["mesh"]), str(item.get("units", "")),
                          float(item.get("mesh_unit_scale", 0.0)), item.get("symmetry"))
        spec.metres_per_unit()  # unit errors now, before anything is written
        specs.append(spec)
    return specs


def write_models_folder(specs: list[ObjectSpec], out_dir: str | os.PathLike) -> Path:
    """``out_dir/models/`` (BOP, millimetres) + ``out_dir/objects.yaml`` (registry); returns the
    registry path. Meshes are converted again only when their source or units changed."""
    import yaml

    from ..data.bop_io import atomic_write_text

    out_dir = Path(out_dir)
    models_dir = out_dir / "models"
    fingerprint = specs_fingerprint(specs)
    registry = out_dir / "objects.yaml"
    stamp = out_dir / "source.sha256"
    if registry.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return registry
    infos = {str(spec.id): convert_mesh(spec, models_dir) for spec in specs}
    atomic_write_text(models_dir / "models_info.json", json.dumps(infos, indent=2) + "\n")
    objects = []
    for spec in specs:
        entry = {"id": spec.id, "name": spec.name, "mesh": f"obj_{spec.id:06d}.ply"}
        if spec.symmetry is not None:
            entry["symmetry"] = spec.symmetry
        objects.append(entry)
    text = ("# written by dsc_pose_core.objects.models_folder from "
            + ", ".join(f"{s.mesh} ({s.units or f'{s.mesh_unit_scale:g} m/unit'})" for s in specs) + "\n"
            + yaml.safe_dump({"models_dir": "models", "mesh_unit_scale": 0.001, "objects": objects}, sort_keys=False))
    atomic_write_text(registry, text)
    atomic_write_text(stamp, fingerprint + "\n")
    return registry
