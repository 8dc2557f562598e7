"""Initial-pose noise for training (deepim appendix B.1).

Rotation: independent N(0, 15 deg^2) on each of the three Euler angles, redrawn while the angular
distance to the ground truth exceeds 45 deg. Translation: dx, dy ~ N(0, (1 cm)^2), dz ~ N(0, (5 cm)^2)
("RGB-based pose estimation methods usually have larger variance on depth estimation"). The paper
calls 1 cm / 5 cm variances; N(0, 0.01^2) makes them standard deviations, which is what is used.
The rotation noise is applied about the object centre with camera-parallel axes (the frame of the
untangled representation, sec. 3.3): R = R_noise R_gt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class PoseNoiseConfig:
    rot_std_deg: float = 15.0
    max_rot_deg: float = 45.0
    trans_std: tuple[float, float, float] = (0.01, 0.01, 0.05)  # metres
    min_depth: float = 0.1  # a noisy depth below this is redrawn (the object must stay in front)

    def validate(self) -> None:
        if self.rot_std_deg < 0 or self.max_rot_deg <= 0 or any(s < 0 for s in self.trans_std):
            raise ValueError("pose noise: standard deviations must be >= 0 and max_rot_deg > 0")
        if len(self.trans_std) != 3:
            raise ValueError("pose noise: trans_std needs 3 numbers")


def sample_rotation_noise(rng: np.random.Generator, std_deg: float, max_deg: float) -> np.ndarray:
    for _ in range(1000):
        angles = rng.normal(0.0, std_deg, size=3)
        R = Rotation.from_euler("xyz", angles, degrees=True)
        if R.magnitude() <= math.radians(max_deg):
            return R.as_matrix()
    return np.eye(3)


def sample_pose_noise(rng: np.random.Generator, R: np.ndarray, t: np.ndarray,
                      config: PoseNoiseConfig = PoseNoiseConfig()) -> tuple[np.ndarray, np.ndarray]:
    """A noisy copy (R', t') of the pose (R, t) (appendix B.1)."""
    R_noise = sample_rotation_noise(rng, config.rot_std_deg, config.max_rot_deg)
    t = np.asarray(t, dtype=np.float64)
    for _ in range(1000):
        t_new = t + rng.normal(0.0, 1.0, size=3) * np.asarray(config.trans_std, dtype=np.float64)
        if t_new[2] >= config.min_depth:
            break
    else:
        t_new = t.copy()
    return R_noise @ np.asarray(R, dtype=np.float64), t_new
