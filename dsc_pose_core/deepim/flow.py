"""Optical-flow targets from renders, for DeepIM's auxiliary flow loss (deepim sec. 3.2, 4.1).

The flow goes from the rendered image (current pose p_src) to the observed image (target pose
p_tgt), both seen through the same zoom-in camera K (the crop intrinsics). A rendered pixel x with
depth d is back-projected, X = d K^-1 [x, 1], moved with the object to the target pose,
X' = R_tgt R_src^T (X - t_src) + t_tgt, and projected, x' = pi(K X'); the flow is x' - x. It is valid
where x' falls inside the crop and the point is the visible surface of the target render there
(|depth_tgt(x') - z'| below a tolerance, depth sampled at the nearest pixel), i.e. not self-occluded
in the target pose; an optional observed visibility mask (occlusion by other objects) restricts it
further.
"""

from __future__ import annotations

import torch


def flow_from_renders(depth_src: torch.Tensor, K: torch.Tensor, R_src: torch.Tensor, t_src: torch.Tensor,
                      R_tgt: torch.Tensor, t_tgt: torch.Tensor, depth_tgt: torch.Tensor,
                      tolerance: float = 0.01, visible_tgt: torch.Tensor | None = None):
    """Batched flow targets.

    depth_src, depth_tgt: [B,H,W] metres (0 = background) rendered with K [B,3,3] (or [3,3]) at the
    source and target poses (R [B,3,3], t [B,3]). ``visible_tgt`` [B,H,W] bool optionally marks the
    pixels where the object is visible in the observed image. Returns (flow [B,2,H,W] in pixels,
    (dx, dy); valid [B,H,W] bool). Invalid pixels have flow 0.
    """
    B, H, W = depth_src.shape
    dtype = depth_src.dtype
    K = K.to(dtype).expand(B, 3, 3) if K.dim() == 2 else K.to(dtype)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype, device=depth_src.device),
                            torch.arange(W, dtype=dtype, device=depth_src.device), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, H * W, 3)  # [1,N,3]
    rays = pix @ torch.linalg.inv(K).transpose(-1, -2)  # [B,N,3]
    d = depth_src.reshape(B, H * W, 1)
    cam_src = rays * d
    R_rel = R_tgt.to(dtype) @ R_src.to(dtype).transpose(-1, -2)
    cam_tgt = (cam_src - t_src.to(dtype).unsqueeze(1)) @ R_rel.transpose(-1, -2) + t_tgt.to(dtype).unsqueeze(1)
    z = cam_tgt[..., 2]
    proj = cam_tgt @ K.transpose(-1, -2)
    uv = proj[..., :2] / proj[..., 2:3].clamp_min(1e-9)
    flow = (uv - pix[..., :2]).reshape(B, H, W, 2)

    valid = (depth_src > 0).reshape(B, H * W) & (z > 1e-6)
    u_near = torch.round(uv[..., 0])
    v_near = torch.round(uv[..., 1])
    inside = (u_near >= 0) & (u_near <= W - 1) & (v_near >= 0) & (v_near <= H - 1)
    valid &= inside
    index = (v_near.clamp(0, H - 1) * W + u_near.clamp(0, W - 1)).long()
    d_tgt = torch.gather(depth_tgt.reshape(B, H * W), 1, index)
    valid &= (d_tgt > 0) & ((d_tgt - z).abs() < tolerance)
    if visible_tgt is not None:
        valid &= torch.gather(visible_tgt.reshape(B, H * W).bool(), 1, index)
    valid = valid.reshape(B, H, W)
    flow = torch.where(valid.unsqueeze(-1), flow, torch.zeros_like(flow))
    return flow.permute(0, 3, 1, 2).contiguous(), valid
