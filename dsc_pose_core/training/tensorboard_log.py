"""TensorBoard logs of the trainers: ``OUT/tb`` (in a stage chain ``OUT/<stage>/tb``).

Every trainer logs its loss terms and learning rate every ``log_every`` steps and a sample overlay
picture every ``image_every`` steps (0 disables either). Only rank 0 of a DDP run writes; on other
ranks, and when TensorBoard is not installed, the logger drops everything (training never depends
on it). View with ``tensorboard --logdir OUT``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import distributed


class TrainLogger:
    def __init__(self, log_dir: str | Path, log_every: int, image_every: int, enabled: bool | None = None):
        self.log_every = max(0, int(log_every))
        self.image_every = max(0, int(image_every))
        self.writer = None
        if enabled is None:
            enabled = distributed.is_main()
        if enabled and (self.log_every or self.image_every):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is in requirements.txt; a trimmed install just logs nothing
                print("tensorboard is not installed: no TensorBoard logs", flush=True)
            else:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                self.writer = SummaryWriter(log_dir=str(log_dir))

    def wants_scalars(self, step: int) -> bool:
        return self.writer is not None and self.log_every > 0 and step % self.log_every == 0

    def wants_image(self, step: int) -> bool:
        return self.writer is not None and self.image_every > 0 and step % self.image_every == 0

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        """Numbers and 0-d tensors of ``values`` as ``prefix/name`` at ``step`` (others ignored)."""
        if self.writer is None:
            return
        for name, value in values.items():
            if torch.is_tensor(value):
                if value.numel() != 1:
                    continue
                value = value.detach().item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{name}" if prefix else name, float(value), step)

    def image(self, tag: str, step: int, picture: np.ndarray) -> None:
        """An RGB uint8 picture [H,W,3]."""
        if self.writer is None:
            return
        self.writer.add_image(tag, np.ascontiguousarray(picture), step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tile(pictures: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Same-sized RGB uint8 pictures side by side in rows of ``columns``."""
    if not pictures:
        raise ValueError("no pictures to tile")
    h, w = pictures[0].shape[:2]
    rows = (len(pictures) + columns - 1) // columns
    sheet = np.zeros((rows * h, min(columns, len(pictures)) * w, 3), np.uint8)
    for k, picture in enumerate(pictures):
        r, c = divmod(k, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = picture[..., :3]
    return sheet


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, color=(0, 255, 0), alpha: float = 0.45) -> np.ndarray:
    """``rgb`` (uint8 [H,W,3]) with ``mask`` (bool [H,W]) tinted in ``color``."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
