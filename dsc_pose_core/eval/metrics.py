"""Pose error functions (metres, pixels, degrees).

Definitions follow the BOP toolkit's ``pose_error`` module (Hodan et al., ECCVW'16 and the BOP
challenge pages), with model points ``P`` in the object frame, estimate ``(R_e, t_e)`` and ground
truth ``(R_g, t_g)`` mapping object -> camera:

- ADD   = mean_p |(R_e p + t_e) - (R_g p + t_g)|                            (Hinterstoisser'12)
- ADD-S = mean_{p_g} min_{p_e} |p_e - p_g|, nearest neighbour from each GT-posed point to the
          estimate-posed points (ADI in BOP)
- ADD(-S): ADD-S for symmetric objects, ADD otherwise
- Proj2D = mean_p |pi(K, R_e p + t_e) - pi(K, R_g p + t_g)| in pixels     (Brachmann'16)
- rotation error   = arccos((tr(R_e R_g^-1) - 1) / 2) in degrees
- translation error = |t_e - t_g| in metres
- MSSD = min_{S} max_p |(R_e p + t_e) - (R_g (R_s p + t_s) + t_g)|        (BOP19)
- MSPD = min_{S} max_p |pi(R_e p + t_e) - pi(R_g (R_s p + t_s) + t_g)|   (BOP19, pixels)

where ``S = (R_s, t_s)`` runs over the symmetry set of
:func:`dsc_pose_core.objects.symmetry.symmetry_transformations` (identity included).

VSD needs a depth image of the scene and a depth renderer; it is not provided here (the LM-O
evaluation data has no depth), so evaluators report AR_VSD as ``None``.

Each error has a single-pose function and a batched ``*_batch`` variant taking ``R_e [P,3,3]``,
``t_e [P,3]`` etc. and returning ``[P]``; the batched ones are what the BOP evaluator uses.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..geometry.camera import project_posed  # numpy only: scoring stays free of torch

# ~ number of float64 3-vectors materialised at once in the symmetry-aware errors
_CHUNK_POINTS = 2_000_000


def _as_batch(R, t):
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    return R.reshape(-1, 3, 3), t.reshape(-1, 3)


def _syms_arrays(syms) -> tuple[np.ndarray, np.ndarray]:
    """Accept a list of (R, t) or a tuple of stacked arrays; None means identity only."""
    if syms is None:
        return np.eye(3)[None], np.zeros((1, 3))
    if isinstance(syms, tuple) and len(syms) == 2 and np.asarray(syms[0]).ndim == 3:
        return np.asarray(syms[0], np.float64), np.asarray(syms[1], np.float64).reshape(-1, 3)
    Rs = np.stack([np.asarray(R, np.float64) for R, _ in syms])
    ts = np.stack([np.asarray(t, np.float64).reshape(3) for _, t in syms])
    return Rs, ts


def transform_points(pts: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``R p + t`` for every point: pts [N,3] -> [N,3] (or [...,N,3] for batched R, t)."""
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64)
    return np.matmul(pts, np.swapaxes(R, -1, -2)) + t[..., None, :]


# --------------------------------------------------------------------------------------------
# Batched errors
# --------------------------------------------------------------------------------------------
def add_batch(R_e, t_e, R_g, t_g, pts) -> np.ndarray:
    """ADD for P pose pairs: [P] metres."""
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    pts = np.asarray(pts, np.float64)
    out = np.empty(len(R_e))
    step = max(1, _CHUNK_POINTS // max(1, len(pts)))
    for s in range(0, len(R_e), step):
        sl = slice(s, s + step)
        d = np.matmul(R_e[sl] - R_g[sl], pts.T) + (t_e[sl] - t_g[sl])[:, :, None]  # [p,3,N]
        out[sl] = np.sqrt((d * d).sum(1)).mean(-1)
    return out


def add_s_batch(R_e, t_e, R_g, t_g, pts) -> np.ndarray:
    """ADD-S (BOP's ADI) for P pose pairs: [P] metres, nearest neighbours by cKDTree.

    For each GT-posed point the nearest estimate-posed point is found. Distances are invariant
    to a common rigid motion (``R_e`` is assumed to be a rotation), so the GT-posed points are mapped into the estimate's object
    frame, ``R_e^T (R_g p + t_g - t_e)``, and queried against one tree of the model points.
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    pts = np.asarray(pts, np.float64)
    tree = cKDTree(pts)
    out = np.empty(len(R_e))
    for i in range(len(R_e)):
        R_rel = R_e[i].T @ R_g[i]
        t_rel = R_e[i].T @ (t_g[i] - t_e[i])
        dists, _ = tree.query(pts @ R_rel.T + t_rel, k=1, workers=-1)
        out[i] = dists.mean()
    return out


def proj2d_batch(R_e, t_e, R_g, t_g, K, pts) -> np.ndarray:
    """Mean 2D projection distance of the model points, [P] pixels. K: [3,3] or [P,3,3]."""
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    K = np.broadcast_to(np.asarray(K, np.float64), (len(R_e), 3, 3))
    pts = np.asarray(pts, np.float64)
    out = np.empty(len(R_e))
    step = max(1, _CHUNK_POINTS // max(1, 2 * len(pts)))
    for s in range(0, len(R_e), step):
        sl = slice(s, s + step)
        uv_e, _ = project_posed(pts, K[sl], R_e[sl], t_e[sl])  # [p,N,2]
        uv_g, _ = project_posed(pts, K[sl], R_g[sl], t_g[sl])
        out[sl] = np.linalg.norm(uv_e - uv_g, axis=-1).mean(-1)
    return out


def rotation_error_deg_batch(R_e, R_g) -> np.ndarray:
    """Angle of R_e R_g^-1 in degrees, [P]."""
    R_e = np.asarray(R_e, np.float64).reshape(-1, 3, 3)
    R_g = np.asarray(R_g, np.float64).reshape(-1, 3, 3)
    rel = R_e @ np.linalg.inv(R_g)
    cos = 0.5 * (np.trace(rel, axis1=1, axis2=2) - 1.0)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def translation_error_batch(t_e, t_g) -> np.ndarray:
    """|t_e - t_g| in metres, [P]."""
    t_e = np.asarray(t_e, np.float64).reshape(-1, 3)
    t_g = np.asarray(t_g, np.float64).reshape(-1, 3)
    return np.linalg.norm(t_e - t_g, axis=1)


def _sym_poses(R_g, t_g, sym_R, sym_t):
    """GT poses composed with each symmetry: R_g R_s, R_g t_s + t_g -> [P,S,3,3], [P,S,3]."""
    R_gs = np.matmul(R_g[:, None], sym_R[None])
    t_gs = np.einsum("pij,sj->psi", R_g, sym_t) + t_g[:, None, :]
    return R_gs, t_gs


def mssd_batch(R_e, t_e, R_g, t_g, pts, syms=None) -> np.ndarray:
    """Maximum symmetry-aware surface distance, [P] metres."""
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    sym_R, sym_t = _syms_arrays(syms)
    pts = np.asarray(pts, np.float64)
    n_p, n_s, n_pts = len(R_e), len(sym_R), len(pts)
    best = np.full(n_p, np.inf)
    s_step = max(1, min(n_s, _CHUNK_POINTS // max(1, n_pts)))
    p_step = max(1, _CHUNK_POINTS // max(1, n_pts * s_step))
    for p0 in range(0, n_p, p_step):
        ps = slice(p0, p0 + p_step)
        for s0 in range(0, n_s, s_step):
            ss = slice(s0, s0 + s_step)
            R_gs, t_gs = _sym_poses(R_g[ps], t_g[ps], sym_R[ss], sym_t[ss])
            M = R_e[ps][:, None] - R_gs  # [p,s,3,3]
            c = t_e[ps][:, None, :] - t_gs  # [p,s,3]
            d = np.matmul(M, pts.T) + c[..., None]  # [p,s,3,N]
            worst = np.sqrt((d * d).sum(-2).max(-1))  # [p,s]
            best[ps] = np.minimum(best[ps], worst.min(-1))
    return best


def mspd_batch(R_e, t_e, R_g, t_g, K, pts, syms=None) -> np.ndarray:
    """Maximum symmetry-aware projection distance, [P] pixels. K: [3,3] or [P,3,3]."""
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    K = np.broadcast_to(np.asarray(K, np.float64), (len(R_e), 3, 3))
    sym_R, sym_t = _syms_arrays(syms)
    pts = np.asarray(pts, np.float64)
    n_p, n_s, n_pts = len(R_e), len(sym_R), len(pts)
    best = np.full(n_p, np.inf)
    s_step = max(1, min(n_s, _CHUNK_POINTS // max(1, n_pts)))
    p_step = max(1, _CHUNK_POINTS // max(1, n_pts * s_step))
    for p0 in range(0, n_p, p_step):
        ps = slice(p0, p0 + p_step)
        Kp = K[ps]
        uv_e = project_posed(pts, Kp, R_e[ps], t_e[ps])[0][:, None]  # [p,1,N,2]
        for s0 in range(0, n_s, s_step):
            ss = slice(s0, s0 + s_step)
            R_gs, t_gs = _sym_poses(R_g[ps], t_g[ps], sym_R[ss], sym_t[ss])
            uv_g, _ = project_posed(pts, Kp[:, None], R_gs, t_gs)  # [p,s,N,2]
            d = uv_g - uv_e
            worst = np.sqrt((d * d).sum(-1).max(-1))
            best[ps] = np.minimum(best[ps], worst.min(-1))
    return best


# --------------------------------------------------------------------------------------------
# Single-pose conveniences
# --------------------------------------------------------------------------------------------
def add(R_e, t_e, R_g, t_g, pts) -> float:
    """ADD (metres when pts and t are in metres)."""
    return float(add_batch(R_e, t_e, R_g, t_g, pts)[0])


def add_s(R_e, t_e, R_g, t_g, pts) -> float:
    """ADD-S / ADI (metres)."""
    return float(add_s_batch(R_e, t_e, R_g, t_g, pts)[0])


def add_or_add_s(R_e, t_e, R_g, t_g, pts, symmetric: bool) -> float:
    """ADD(-S): ADD-S for symmetric objects, ADD otherwise."""
    return add_s(R_e, t_e, R_g, t_g, pts) if symmetric else add(R_e, t_e, R_g, t_g, pts)


def proj2d(R_e, t_e, R_g, t_g, K, pts) -> float:
    """Mean 2D projection error of the model points (pixels)."""
    return float(proj2d_batch(R_e, t_e, R_g, t_g, K, pts)[0])


def rotation_error_deg(R_e, R_g) -> float:
    return float(rotation_error_deg_batch(R_e, R_g)[0])


def translation_error(t_e, t_g) -> float:
    """Euclidean translation error in the units of t (metres inside this package)."""
    return float(translation_error_batch(t_e, t_g)[0])


def n_deg_n_cm(R_e, t_e, R_g, t_g, deg: float = 5.0, cm: float = 5.0) -> bool:
    """True when rotation error < deg degrees and translation error < cm centimetres."""
    return rotation_error_deg(R_e, R_g) < deg and translation_error(t_e, t_g) < cm * 0.01


def mssd(R_e, t_e, R_g, t_g, pts, syms=None) -> float:
    """MSSD (metres); ``syms`` from :func:`~dsc_pose_core.objects.symmetry.symmetry_transformations`."""
    return float(mssd_batch(R_e, t_e, R_g, t_g, pts, syms)[0])


def mspd(R_e, t_e, R_g, t_g, K, pts, syms=None) -> float:
    """MSPD (pixels)."""
    return float(mspd_batch(R_e, t_e, R_g, t_g, K, pts, syms)[0])
