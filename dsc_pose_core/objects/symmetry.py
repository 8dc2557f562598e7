"""Symmetry transformations of an object model, as the BOP benchmark defines them.

A symmetry transformation ``S = (R_s, t_s)`` acts in the object frame and leaves the object looking
the same, so a pose ``(R, t)`` and ``(R R_s, R t_s + t)`` are indistinguishable.

BOP's rule (``get_symmetry_transformations`` of the BOP toolkit, used for MSSD and MSPD):

- the discrete set is the identity followed by every ``symmetries_discrete`` entry of
  models_info;
- each continuous symmetry (axis ``a`` through the point ``o``) is discretised into
  ``n = ceil(pi / max_sym_disc_step)`` rotations by ``i * 2 pi / n`` for ``i = 0 .. n-1``
  (``max_sym_disc_step`` is the largest step, as a fraction of the object diameter, that the
  vertex furthest from the axis may travel; the diameter cancels out, so ``n`` depends on the
  step alone: 315 for the BOP value 0.01), each with translation ``t = o - R o``;
- when continuous ones exist, the result is every product ``cont o disc``:
  ``R = R_c R_d``, ``t = R_c t_d + t_c`` (discrete outer loop, continuous inner loop);
  otherwise it is the discrete set.

All translations are in metres (``ModelInfo`` is already converted).
"""

from __future__ import annotations

import math

import numpy as np

from .models_info import ModelInfo

BOP_MAX_SYM_DISC_STEP = 0.01


def rotation_about_axis(angle: float, axis: np.ndarray) -> np.ndarray:
    """Rotation matrix for ``angle`` radians about the unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    x, y, z = a
    c, s = math.cos(angle), math.sin(angle)
    C = 1.0 - c
    return np.array(
        [
            [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
        ]
    )


def continuous_steps(max_sym_disc_step: float = BOP_MAX_SYM_DISC_STEP) -> int:
    """Number of rotations a continuous symmetry is discretised into (BOP: 315)."""
    if not max_sym_disc_step > 0:
        raise ValueError(f"max_sym_disc_step must be positive, got {max_sym_disc_step}")
    # arc travelled by the furthest vertex per step, pi*d/n, must not exceed step*d
    return int(math.ceil(math.pi / max_sym_disc_step))


def symmetry_transformations(
    info: ModelInfo | None, max_sym_disc_step: float = BOP_MAX_SYM_DISC_STEP
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The list of ``(R [3,3], t [3] metres)`` symmetry transformations; identity is first."""
    discrete = [(np.eye(3), np.zeros(3))]
    if info is not None:
        for T in info.symmetries_discrete:
            T = np.asarray(T, dtype=np.float64)
            discrete.append((T[:3, :3].copy(), T[:3, 3].copy()))

    continuous = []
    if info is not None and info.symmetries_continuous:
        n = continuous_steps(max_sym_disc_step)
        step = 2.0 * math.pi / n
        for sym in info.symmetries_continuous:
            offset = np.asarray(sym.offset, dtype=np.float64)
            for i in range(n):
                R = rotation_about_axis(i * step, sym.axis)
                continuous.append((R, offset - R @ offset))

    if not continuous:
        return discrete
    out = []
    for R_d, t_d in discrete:
        for R_c, t_c in continuous:
            out.append((R_c @ R_d, R_c @ t_d + t_c))
    return out


def symmetry_transformations_array(
    info: ModelInfo | None, max_sym_disc_step: float = BOP_MAX_SYM_DISC_STEP
) -> tuple[np.ndarray, np.ndarray]:
    """The same set stacked: ``Rs [S,3,3]``, ``ts [S,3]`` (metres)."""
    syms = symmetry_transformations(info, max_sym_disc_step)
    return np.stack([R for R, _ in syms]), np.stack([t for _, t in syms])
