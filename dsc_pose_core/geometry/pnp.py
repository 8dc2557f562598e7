"""Perspective-n-Point: OpenCV for inference, and a differentiable PnP for training.

The differentiable solver follows the BPnP idea (Chen et al., CVPR 2020; used as eq. (9) of
dsc-posenet): the forward pass solves PnP without gradients, and the backward pass differentiates
the optimality condition of the reprojection objective with the implicit function theorem,
so gradients flow to the 2D keypoints (and optionally to the 3D points, intrinsics and weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .camera import project_points
from .rotations import axis_angle_to_matrix


@dataclass(frozen=True)
class PnPResult:
    rotation: np.ndarray  # [3,3]
    translation: np.ndarray  # [3], same units as the 3D points
    inliers: np.ndarray  # [N] bool
    success: bool


def solve_pnp(
    points_3d: np.ndarray,
    points_2d: np.ndarray,
    K: np.ndarray,
    ransac: bool = False,
    ransac_reprojection_px: float = 3.0,
    ransac_iterations: int = 200,
    refine: bool = True,
) -> PnPResult:
    """EPnP (optionally inside RANSAC) followed by Levenberg-Marquardt refinement on the inliers."""
    points_3d = np.ascontiguousarray(points_3d, dtype=np.float64).reshape(-1, 3)
    points_2d = np.ascontiguousarray(points_2d, dtype=np.float64).reshape(-1, 2)
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    if len(points_3d) != len(points_2d):
        raise ValueError(f"PnP needs as many 3D as 2D points, got {len(points_3d)} and {len(points_2d)}")
    if len(points_3d) < 4:
        raise ValueError(f"PnP needs at least 4 correspondences, got {len(points_3d)}")
    no_distortion = np.zeros(5)
    inliers = np.ones(len(points_3d), dtype=bool)
    if ransac:
        ok, rvec, tvec, inlier_idx = cv2.solvePnPRansac(
            points_3d, points_2d, K, no_distortion, iterationsCount=ransac_iterations,
            reprojectionError=ransac_reprojection_px, flags=cv2.SOLVEPNP_EPNP,
        )
        if ok and inlier_idx is not None:
            inliers = np.zeros(len(points_3d), dtype=bool)
            inliers[inlier_idx.ravel()] = True
    else:
        ok, rvec, tvec = cv2.solvePnP(points_3d, points_2d, K, no_distortion, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        return PnPResult(np.eye(3), np.zeros(3), np.zeros(len(points_3d), bool), False)
    if refine and inliers.sum() >= 4:
        rvec, tvec = cv2.solvePnPRefineLM(points_3d[inliers], points_2d[inliers], K, no_distortion, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    return PnPResult(rotation, tvec.ravel(), inliers, bool(np.isfinite(tvec).all()))


def _reprojection_objective(pose6, points_2d, points_3d, K, weights):
    """Per-batch sum_i w_i ||pi(R(r) X_i + t) - x_i||^2, the objective BPnP minimises."""
    rotation = axis_angle_to_matrix(pose6[:, :3])
    points_cam = points_3d @ rotation.transpose(-1, -2) + pose6[:, None, 3:]
    residual = project_points(points_cam, K) - points_2d
    return (weights * (residual**2).sum(-1)).sum(-1)


def _gauss_newton_polish(pose6, points_2d, points_3d, K, weights, steps=8):
    """Drive the OpenCV solution to the exact optimum in float64 so implicit gradients are exact."""
    def residuals(pose):
        rotation = axis_angle_to_matrix(pose[:3])
        points_cam = points_3d @ rotation.T + pose[3:]
        return ((project_points(points_cam, K) - points_2d) * weights.sqrt().unsqueeze(-1)).reshape(-1)

    for _ in range(steps):
        jac = torch.func.jacrev(residuals)(pose6)
        res = residuals(pose6)
        step = torch.linalg.lstsq(jac, -res.unsqueeze(-1)).solution.squeeze(-1)
        pose6 = pose6 + step
        if step.abs().max() < 1e-13:
            break
    return pose6


class _BackpropPnP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points_2d, points_3d, K, weights):
        solutions = []
        for p2, p3, k, w in zip(points_2d.detach().double(), points_3d.detach().double(), K.detach().double(),
                                weights.detach().double()):
            use = w > 0
            result = solve_pnp(p3[use].numpy(), p2[use].numpy(), k.numpy(), refine=True)
            rvec, _ = cv2.Rodrigues(result.rotation)
            pose6 = torch.from_numpy(np.concatenate([rvec.ravel(), result.translation]))
            solutions.append(_gauss_newton_polish(pose6, p2, p3, k, w))
        pose6 = torch.stack(solutions).to(points_2d.dtype)
        ctx.save_for_backward(pose6, points_2d, points_3d, K, weights)
        return pose6

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_pose6):
        pose6, points_2d, points_3d, K, weights = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) for t, need in zip(
            (points_2d, points_3d, K, weights), ctx.needs_input_grad)]
        with torch.enable_grad():
            pose = pose6.detach().requires_grad_(True)
            objective = _reprojection_objective(pose, *inputs).sum()
            # optimality condition g(pose, inputs) = d objective / d pose = 0 at the solution
            gradient = torch.autograd.grad(objective, pose, create_graph=True)[0]
            hessian = torch.stack(
                [torch.autograd.grad(gradient[:, k].sum(), pose, retain_graph=True)[0] for k in range(6)], dim=1
            )
            # implicit function theorem: d pose / d input = -H^-1 dg/d input
            adjoint = torch.linalg.solve(hessian.transpose(-1, -2), grad_pose6.unsqueeze(-1)).squeeze(-1)
            wanted = [t for t in inputs if t.requires_grad]
            grads = torch.autograd.grad((gradient * adjoint).sum(), wanted, allow_unused=True) if wanted else []
        grads = iter(grads)
        return tuple(
            (-g if (g := next(grads)) is not None else None) if t.requires_grad else None for t in inputs
        )


def differentiable_pnp(
    points_2d: torch.Tensor,
    points_3d: torch.Tensor,
    K: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched PnP with gradients: 2D [B,N,2], 3D [B,N,3] (or [N,3]), K [B,3,3] (or [3,3]),
    optional per-point weights [B,N] -> (R [B,3,3], t [B,3])."""
    batch = points_2d.shape[0]
    points_3d = points_3d.expand(batch, *points_3d.shape[-2:])
    K = K.expand(batch, 3, 3)
    if weights is None:
        weights = torch.ones(points_2d.shape[:2], dtype=points_2d.dtype, device=points_2d.device)
    pose6 = _BackpropPnP.apply(points_2d, points_3d, K, weights)
    return axis_angle_to_matrix(pose6[:, :3]), pose6[:, 3:]
