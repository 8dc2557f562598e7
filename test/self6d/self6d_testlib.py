"""Shared constants of the Self6D tests (imported by name: test folders are not packages)."""

import torch

CROP = 64
K_CROP = torch.tensor([[260.0, 0.0, 31.5], [0.0, 260.0, 31.5], [0.0, 0.0, 1.0]])


def gt_pose():
    from scipy.spatial.transform import Rotation

    R = torch.tensor(Rotation.from_euler("xyz", [110, 20, 35], degrees=True).as_matrix(), dtype=torch.float32)
    return R[None], torch.tensor([[0.0, 0.0, 0.6]])
