"""Differentiable renderer (PyTorch3D's rasterizer): soft silhouettes and hard depth of a batch of
poses of one mesh, with gradients to R, t (and K).

Same camera convention as the fast renderer (:mod:`dsc_pose_core.render.gl`): OpenCV pinhole K,
centre of pixel (i, j) at (i, j), crops by K' = A K and the crop size.

Camera mapping. Vertices are moved into the OpenCV camera frame (X = R x + t) and projected with K
here, in torch; the rasterizer receives PyTorch3D NDC directly. PyTorch3D's NDC has +x left,
+y up, the shorter image side S = min(H, W) spanning [-1, 1], and its pixel (row y, column x)
centred at x_ndc = (W - 1 - 2 x) / S, y_ndc = (H - 1 - 2 y) / S (``pix_to_non_square_ndc``).
So an OpenCV pixel coordinate (u, v) maps to ((W - 1 - 2u) / S, (H - 1 - 2v) / S) and z stays the
camera depth Z (what ``MeshRasterizer`` does with ``verts_view`` z). This equals
``PerspectiveCameras(in_ndc=False, focal_length=(fx, fy), principal_point=(cx + 0.5, cy + 0.5))``
in PyTorch3D's own screen space, whose pixel centres sit at half-integers (a test checks the two
agree), and unlike that camera it also accepts a skew K[0, 1].

Soft silhouette (SoftRas, as PyTorch3D's ``SoftSilhouetteShader``): for each pixel and each of the
``faces_per_pixel`` nearest faces within the blur radius, p = sigmoid(-d / sigma) with d the signed
squared distance from the pixel centre to the projected triangle (negative inside); alpha =
1 - prod(1 - p). ``sigma_px`` is given in pixels at the render resolution: p = sigmoid(-d_px^2 /
sigma_px^2) outside a face, i.e. PyTorch3D's sigma = (2 sigma_px / S)^2 in NDC^2 units. Faces are
kept up to where p falls to 1e-4 (PyTorch3D's blur_radius = ln(1e4 - 1) sigma).

Two implementations of the silhouette give the same values and gradients:
- ``method="fast"`` (default): rasterize without autograd to find the faces of each pixel, then
  recompute the signed distances and the sigmoid blend in vectorised torch with autograd. On CPU
  its backward costs about as much as its forward (PyTorch3D's CPU backward ~10x more).
- ``method="pytorch3d"``: the rasterizer's and ``sigmoid_alpha_blend``'s own autograd.

CPU cost grows with H x W x faces (no binning on CPU): render ROI crops (64-128 px) of decimated
meshes (``add_object(..., target_faces=2000)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..objects.mesh import ObjectMesh


@dataclass
class DiffRenderOutput:
    silhouette: torch.Tensor | None  # [B,H,W] soft alpha in [0, 1]
    depth: torch.Tensor | None  # [B,H,W] camera z in metres of the nearest face, 0 = background
    rgb: torch.Tensor | None = None  # [B,3,H,W] in [0, 1]: vertex colours x soft silhouette (render_rgbd)

    @property
    def mask(self) -> torch.Tensor:
        """Hard mask [B,H,W] bool (from the depth render)."""
        return self.depth > 0


class _Fragments(NamedTuple):
    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor
    dists: torch.Tensor


def opencv_to_ndc(uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """OpenCV pixel coordinates [...,2] -> PyTorch3D NDC (+x left, +y up, short side in [-1, 1])."""
    s = float(min(width, height))
    return torch.stack([(width - 1 - 2 * uv[..., 0]) / s, (height - 1 - 2 * uv[..., 1]) / s], dim=-1)


class DifferentiableRenderer:
    """Batched differentiable rendering of one registered mesh per call.

    Arguments follow :meth:`FastRenderer.render_batch`: ``(K, obj_id, R, t, width, height)`` with
    torch tensors K [B,3,3] or [3,3], R [B,3,3], t [B,3] (metres, object -> camera).
    """

    def __init__(self, faces_per_pixel: int = 50, sigma_px: float = 1.0, device: str | torch.device = "cpu",
                 min_depth: float = 1e-3):
        if faces_per_pixel < 1:
            raise ValueError("faces_per_pixel must be >= 1")
        if sigma_px <= 0:
            raise ValueError("sigma_px must be > 0")
        self.faces_per_pixel = int(faces_per_pixel)
        self.sigma_px = float(sigma_px)
        self.device = torch.device(device)
        self.min_depth = float(min_depth)
        self._meshes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._colors: dict[int, torch.Tensor] = {}

    def add_object(self, obj_id: int, mesh: ObjectMesh, target_faces: int | None = None) -> ObjectMesh:
        """Register a mesh (metres), decimated to ``target_faces`` when given; returns the mesh used."""
        if target_faces is not None:
            mesh = mesh.decimated(target_faces)
        vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=self.device)
        faces = torch.as_tensor(mesh.faces, dtype=torch.int64, device=self.device)
        self._meshes[int(obj_id)] = (vertices, faces)
        colors = mesh.vertex_colors if mesh.vertex_colors is not None else 0.5 * torch.ones(len(mesh.vertices), 3)
        self._colors[int(obj_id)] = torch.as_tensor(colors, dtype=torch.float32, device=self.device)
        return mesh

    def num_faces(self, obj_id: int) -> int:
        return int(self._mesh(obj_id)[1].shape[0])

    def _mesh(self, obj_id: int):
        try:
            return self._meshes[int(obj_id)]
        except KeyError:
            raise KeyError(f"object {obj_id} was not added; added: {sorted(self._meshes)}") from None

    # ------------------------------------------------------------------ geometry
    def project(self, K, obj_id: int, R, t):
        """Vertices in the camera frame [B,V,3] and their OpenCV pixel coordinates [B,V,2]."""
        vertices, _ = self._mesh(obj_id)
        R = torch.as_tensor(R, dtype=torch.float32, device=self.device).reshape(-1, 3, 3)
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(-1, 3)
        K = torch.as_tensor(K, dtype=torch.float32, device=self.device)
        K = K.expand(R.shape[0], 3, 3) if K.dim() == 2 else K
        if not (R.shape[0] == t.shape[0] == K.shape[0]):
            raise ValueError(f"batch sizes differ: R {R.shape[0]}, t {t.shape[0]}, K {K.shape[0]}")
        points = vertices @ R.transpose(1, 2) + t[:, None, :]
        homogeneous = points @ K.transpose(1, 2)
        uv = homogeneous[..., :2] / homogeneous[..., 2:3].clamp_min(self.min_depth)
        return points, uv

    def _rasterize(self, points, uv, faces, width, height, blur_radius, faces_per_pixel, perspective_correct):
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes

        verts_ndc = torch.cat([opencv_to_ndc(uv, width, height), points[..., 2:3]], dim=-1)
        batch = verts_ndc.shape[0]
        meshes = Meshes(verts=verts_ndc, faces=faces.expand(batch, -1, -1))
        pix_to_face, zbuf, bary, dists = rasterize_meshes(
            meshes, image_size=(height, width), blur_radius=blur_radius, faces_per_pixel=faces_per_pixel,
            bin_size=0, perspective_correct=perspective_correct)
        return _Fragments(pix_to_face, zbuf, bary, dists)

    def _blur_radius_ndc(self, width, height) -> tuple[float, float]:
        sigma_ndc = (2.0 * self.sigma_px / min(width, height)) ** 2
        return sigma_ndc, math.log(1.0 / 1e-4 - 1.0) * sigma_ndc

    # ------------------------------------------------------------------ outputs
    def silhouette(self, K, obj_id: int, R, t, width: int, height: int, method: str = "fast") -> torch.Tensor:
        """Soft silhouette [B,H,W] (differentiable w.r.t. R, t, K)."""
        _, faces = self._mesh(obj_id)
        points, uv = self.project(K, obj_id, R, t)
        sigma_ndc, blur = self._blur_radius_ndc(width, height)
        if method == "pytorch3d":
            from pytorch3d.renderer.blending import BlendParams, sigmoid_alpha_blend

            fragments = self._rasterize(points, uv, faces, width, height, blur, self.faces_per_pixel, False)
            colors = torch.zeros(*fragments.pix_to_face.shape, 3, device=self.device)
            return sigmoid_alpha_blend(colors, fragments, BlendParams(sigma=sigma_ndc))[..., 3]
        if method != "fast":
            raise ValueError(f"method must be 'fast' or 'pytorch3d', got {method!r}")
        with torch.no_grad():
            fragments = self._rasterize(points.detach(), uv.detach(), faces, width, height, blur,
                                        self.faces_per_pixel, False)
        return soft_silhouette_from_faces(uv, faces, fragments.pix_to_face, self.sigma_px)

    def depth(self, K, obj_id: int, R, t, width: int, height: int) -> torch.Tensor:
        """Hard depth [B,H,W]: camera z (metres) of the nearest face, 0 = background (differentiable
        inside the mask through PyTorch3D's z-buffer)."""
        _, faces = self._mesh(obj_id)
        points, uv = self.project(K, obj_id, R, t)
        fragments = self._rasterize(points, uv, faces, width, height, 0.0, 1, True)
        zbuf = fragments.zbuf[..., 0]
        return torch.where(fragments.pix_to_face[..., 0] >= 0, zbuf, torch.zeros_like(zbuf))

    def render_rgbd(self, K, obj_id: int, R, t, width: int, height: int) -> DiffRenderOutput:
        """Soft silhouette, depth and colour [B,3,H,W] from ONE rasterization (Self6D's
        R(R, t, K, M) = (I^R, D^R, M^R), self6d eq. 1).

        The rasterizer runs once without autograd (with the silhouette's blur radius and
        ``faces_per_pixel``) only to list the candidate faces of each pixel; the soft silhouette, the
        nearest covering face's perspective-correct depth and its interpolated vertex colour are then
        recomputed in vectorised torch, so gradients reach the pose through the projected vertices and
        their depths (PyTorch3D's CPU rasterizer backward, and a second hard rasterization, would cost
        several times more; ``test_render_rgbd_matches_pytorch3d`` checks the values against
        ``depth()`` and PyTorch3D's ``interpolate_face_attributes``). Colour is unlit vertex colour (grey
        without), times the soft silhouette so edges pass gradients; background 0."""
        vertices, faces = self._mesh(obj_id)
        points, uv = self.project(K, obj_id, R, t)
        sigma_ndc, blur = self._blur_radius_ndc(width, height)
        with torch.no_grad():
            fragments = self._rasterize(points.detach(), uv.detach(), faces, width, height, blur,
                                        self.faces_per_pixel, False)
        pix_to_face = fragments.pix_to_face
        silhouette = soft_silhouette_from_faces(uv, faces, pix_to_face, self.sigma_px)
        depth, colors = nearest_face_depth_color(uv, points[..., 2], faces, pix_to_face,
                                                 self._colors[int(obj_id)])
        rgb = (colors * silhouette[..., None]).permute(0, 3, 1, 2)
        return DiffRenderOutput(silhouette=silhouette, depth=depth, rgb=rgb)

    def render(self, K, obj_id: int, R, t, width: int, height: int, silhouette: bool = True,
               depth: bool = True, method: str = "fast") -> DiffRenderOutput:
        return DiffRenderOutput(
            silhouette=self.silhouette(K, obj_id, R, t, width, height, method) if silhouette else None,
            depth=self.depth(K, obj_id, R, t, width, height) if depth else None,
        )


def soft_silhouette_from_faces(uv: torch.Tensor, faces: torch.Tensor, pix_to_face: torch.Tensor,
                               sigma_px: float) -> torch.Tensor:
    """SoftRas silhouette from a rasterizer's face lists, in vectorised torch (autograd through ``uv``).

    uv [B,V,2] OpenCV pixel coordinates of the vertices; faces [F,3]; pix_to_face [B,H,W,K] packed
    face indices (b * F + f, -1 = none). Returns alpha [B,H,W]: 1 - prod_k (1 - sigmoid(-d_k /
    sigma_px^2)), d_k the signed squared pixel distance to face k (negative inside).
    """
    batch, height, width, _ = pix_to_face.shape
    num_faces = faces.shape[0]
    valid = pix_to_face >= 0
    entry = valid.nonzero()  # [N,4]: b, y, x, k
    packed = pix_to_face[valid]
    vertex_index = faces[packed % num_faces] + (packed // num_faces)[:, None] * uv.shape[1]  # [N,3]
    tri = uv.reshape(-1, 2).index_select(0, vertex_index.reshape(-1)).reshape(-1, 3, 2)  # [N,3,2]
    pixel = torch.stack([entry[:, 2], entry[:, 1]], dim=-1).to(uv.dtype)  # (x, y) = (u, v)
    d2 = _signed_squared_distance(pixel, tri)
    log_one_minus_p = torch.nn.functional.logsigmoid(d2 / (sigma_px ** 2))  # log(1 - sigmoid(-d2/s^2))
    flat = (entry[:, 0] * height + entry[:, 1]) * width + entry[:, 2]
    total = torch.zeros(batch * height * width, dtype=uv.dtype, device=uv.device).index_add(0, flat, log_one_minus_p)
    return (1.0 - torch.exp(total)).reshape(batch, height, width)


def _signed_squared_distance(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Squared distance from points p [N,2] to triangles tri [N,3,2], negative inside (as PyTorch3D:
    inside means all three barycentric coordinates > 0)."""
    v0, v1, v2 = tri.unbind(1)

    def segment(a, b):
        ab = b - a
        l2 = (ab * ab).sum(-1)
        s = ((p - a) * ab).sum(-1) / l2.clamp_min(1e-12)
        s = s.clamp(0.0, 1.0)
        diff = a + s[:, None] * ab - p
        return (diff * diff).sum(-1)

    d = torch.minimum(torch.minimum(segment(v0, v1), segment(v0, v2)), segment(v1, v2))

    edge = _twice_signed_area
    with torch.no_grad():
        area = edge(v0, v1, v2)
        w0, w1, w2 = edge(v1, v2, p) / area, edge(v2, v0, p) / area, edge(v0, v1, p) / area
        inside = (w0 > 0) & (w1 > 0) & (w2 > 0)
    return torch.where(inside, -d, d)


def nearest_face_depth_color(uv: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, pix_to_face: torch.Tensor,
                             vertex_colors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth [B,H,W] and colour [B,H,W,3] of the nearest face that *covers* each pixel centre, from a
    rasterizer's z-sorted candidate lists ``pix_to_face`` [B,H,W,K] (packed b * F + f, -1 = none; with
    a blur radius the list also holds nearby faces that do not cover the pixel, skipped here).
    Perspective-correct barycentrics from the projected vertices ``uv`` [B,V,2] and their camera
    depths ``z`` [B,V] (autograd through both): 1/z = sum_i w_i / z_i, attributes weighted by
    (w_i / z_i) z. Pixels covered by no face get depth 0 and colour 0."""
    batch, height, width, k = pix_to_face.shape
    num_faces, num_vertices = faces.shape[0], uv.shape[1]
    valid = pix_to_face >= 0
    entry = valid.nonzero()  # [N,4]: b, y, x, k
    packed = pix_to_face[valid]
    vertex_index = faces[packed % num_faces] + (packed // num_faces)[:, None] * num_vertices  # [N,3]
    with torch.no_grad():
        tri = uv.detach().reshape(-1, 2)[vertex_index]  # [N,3,2]
        pixel = torch.stack([entry[:, 2], entry[:, 1]], dim=-1).to(uv.dtype)
        weights = _barycentric(pixel, tri)
        covers = (weights > 0).all(-1)
        flags = torch.zeros(valid.shape, dtype=torch.bool, device=uv.device)
        flags[valid] = covers
        rank = torch.arange(k, 0, -1, device=uv.device)  # first covering candidate = highest score
        first = (flags * rank).argmax(-1)  # [B,H,W]
        hit = flags.any(-1)
        chosen_face = torch.gather(pix_to_face, -1, first[..., None])[..., 0]
    chosen = hit.nonzero()  # [M,3]: b, y, x
    packed = chosen_face[hit]
    vertex_index = faces[packed % num_faces] + (packed // num_faces)[:, None] * num_vertices  # [M,3]
    tri = uv.reshape(-1, 2)[vertex_index]  # [M,3,2] with autograd
    tri_z = z.reshape(-1)[vertex_index]  # [M,3]
    pixel = torch.stack([chosen[:, 2], chosen[:, 1]], dim=-1).to(uv.dtype)
    weights = _barycentric(pixel, tri) / tri_z
    inverse_depth = weights.sum(-1)
    depth_values = 1.0 / inverse_depth
    color_values = ((weights / inverse_depth[:, None])[..., None] * vertex_colors[vertex_index % num_vertices]).sum(1)
    flat = (chosen[:, 0] * height + chosen[:, 1]) * width + chosen[:, 2]
    depth = torch.zeros(batch * height * width, dtype=uv.dtype, device=uv.device).index_put((flat,), depth_values)
    colors = torch.zeros(batch * height * width, 3, dtype=uv.dtype, device=uv.device).index_put((flat,), color_values)
    return depth.reshape(batch, height, width), colors.reshape(batch, height, width, 3)


def _twice_signed_area(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Edge function of 2D points [N,2]: twice the signed area of the triangle (a, b, c)."""
    return (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]) - (c[:, 1] - a[:, 1]) * (b[:, 0] - a[:, 0])


def _barycentric(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentric coordinates [N,3] of points p [N,2] in triangles tri [N,3,2]."""
    v0, v1, v2 = tri.unbind(1)
    edge = _twice_signed_area
    area = edge(v0, v1, v2)
    area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
    return torch.stack([edge(v1, v2, p), edge(v2, v0, p), edge(v0, v1, p)], dim=-1) / area[:, None]
