"""Two renderers behind one calling convention.

- :class:`FastRenderer` (``gl.py``): headless OpenGL through EGL (Mesa llvmpipe on a CPU, the GPU
  driver on a GPU). No gradients. Several objects per frame with mutual occlusion; RGB (Blinn-Phong
  shaded vertex colours), metric depth, instance / object-id maps. numpy in, numpy out.
- :class:`DifferentiableRenderer` (``differentiable.py``): PyTorch3D. Soft silhouettes and hard
  depth of a batch of poses of one mesh, differentiable w.r.t. R, t. torch in, torch out.

Shared convention: poses R [3x3] / t [3] (metres) map object -> camera; pinhole K in the OpenCV
convention of :mod:`dsc_pose_core.geometry.camera` (x right, y down, z forward, centre of pixel i at
coordinate i); a crop is rendered by passing K' = A K (``geometry.crop_intrinsics``) and the crop
size. ``FastRenderer.render_batch(K, obj_id, R, t, width, height)`` and
``DifferentiableRenderer.render(K, obj_id, R, t, width, height)`` take the same arguments. Depth is
camera z in metres with 0 for background.

The PyTorch3D module is imported lazily (it is slow to import and not needed for fast rendering).
"""

from .gl import EGL_HELP, FastRenderer, LightConfig, RendererUnavailableError, RenderOutput, projection_from_intrinsics

__all__ = [
    "FastRenderer", "LightConfig", "RenderOutput", "RendererUnavailableError", "EGL_HELP",
    "projection_from_intrinsics", "DifferentiableRenderer", "DiffRenderOutput", "soft_silhouette_from_faces",
]


def __getattr__(name):
    if name in ("DifferentiableRenderer", "DiffRenderOutput", "soft_silhouette_from_faces", "opencv_to_ndc"):
        from . import differentiable

        return getattr(differentiable, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
