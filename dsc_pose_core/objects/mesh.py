"""Object meshes: BOP .ply files (millimetres) loaded into metres."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import trimesh


class MeshLoadError(RuntimeError):
    """A mesh file is missing or cannot be read as a triangle mesh."""


@dataclass(frozen=True)
class ObjectMesh:
    """A triangle mesh in the object's frame, in metres."""

    vertices: np.ndarray  # [N,3] float64, metres
    faces: np.ndarray  # [F,3] int64
    vertex_colors: np.ndarray | None  # [N,3] float32 in [0,1], None when the file has none
    vertex_normals: np.ndarray  # [N,3] float64, unit length
    source_path: str

    @property
    def centroid(self) -> np.ndarray:
        return self.vertices.mean(axis=0)

    @property
    def bbox_center(self) -> np.ndarray:
        return 0.5 * (self.vertices.min(axis=0) + self.vertices.max(axis=0))

    def bbox_corners(self) -> np.ndarray:
        """The 8 corners of the axis-aligned bounding box, [8,3] metres."""
        lo, hi = self.vertices.min(axis=0), self.vertices.max(axis=0)
        idx = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)])
        return np.where(idx == 1, hi, lo)

    def diameter(self) -> float:
        """Largest distance between two vertices (as BOP defines it), metres."""
        from scipy.spatial import ConvexHull

        hull_points = self.vertices[ConvexHull(self.vertices).vertices]
        diffs = hull_points[:, None, :] - hull_points[None, :, :]
        return float(np.sqrt((diffs**2).sum(-1)).max())

    def decimated(self, target_faces: int) -> "ObjectMesh":
        """A coarser copy for the CPU differentiable renderer (quadric decimation)."""
        if target_faces >= len(self.faces):
            return self
        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        simplified = mesh.simplify_quadric_decimation(face_count=target_faces)
        colors = None
        if self.vertex_colors is not None:
            # colours of the new vertices are taken from the nearest original vertex
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(self.vertices).query(simplified.vertices)
            colors = self.vertex_colors[nearest]
        return ObjectMesh(
            vertices=np.asarray(simplified.vertices, dtype=np.float64),
            faces=np.asarray(simplified.faces, dtype=np.int64),
            vertex_colors=colors,
            vertex_normals=np.asarray(simplified.vertex_normals, dtype=np.float64),
            source_path=self.source_path,
        )


def load_mesh(path: str | os.PathLike, unit_scale: float = 0.001) -> ObjectMesh:
    """Load a mesh file; ``unit_scale`` converts file units to metres (BOP: mm -> 0.001)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MeshLoadError(f"mesh file not found: {path}")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise MeshLoadError(f"cannot read mesh {path}: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise MeshLoadError(f"{path} holds no triangle mesh")
    vertices = np.asarray(mesh.vertices, dtype=np.float64) * unit_scale
    if not np.isfinite(vertices).all():
        raise MeshLoadError(f"{path} has non-finite vertex coordinates")
    tri = vertices[np.asarray(mesh.faces, dtype=np.int64)]
    if not (np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) > 0).any():
        raise MeshLoadError(f"{path} is degenerate: every triangle has zero area (no surface to render or fit)")
    colors = None
    visual = getattr(mesh, "visual", None)
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors[:, :3], dtype=np.float32) / 255.0
    return ObjectMesh(
        vertices=vertices,
        faces=np.asarray(mesh.faces, dtype=np.int64),
        vertex_colors=colors,
        vertex_normals=np.asarray(mesh.vertex_normals, dtype=np.float64),
        source_path=path,
    )
