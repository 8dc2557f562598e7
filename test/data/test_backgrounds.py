"""Background kind "folder": photographs from a directory (e.g. a dataset's unlabeled real frames)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dsc_pose_core.data.backgrounds import FOLDER_KIND, folder_bank, random_background


def _write_images(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    colours = []
    for i in range(n):
        colour = rng.integers(0, 255, 3).astype(np.uint8)
        colours.append(colour)
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.full((120, 160, 3), colour[::-1], np.uint8))  # BGR on disk
    (folder / "notes.txt").write_text("not an image")
    return colours


def test_folder_backgrounds_come_from_the_folder_images(tmp_path):
    colours = _write_images(tmp_path / "bg")
    folder_bank.cache_clear()
    assert len(folder_bank(str(tmp_path / "bg"))) == 3
    seen = set()
    for seed in range(20):
        image, kind = random_background(np.random.default_rng(seed), 64, 48, (FOLDER_KIND,), folder=str(tmp_path / "bg"))
        assert kind == FOLDER_KIND and image.shape == (48, 64, 3) and image.dtype == np.uint8
        pixel = tuple(int(v) for v in image[10, 10])
        assert any(np.array_equal(pixel, c) for c in colours)  # RGB, a crop of one of the files
        seen.add(pixel)
    assert len(seen) > 1
    # half of the images are photographs when mixed with procedural kinds
    kinds = [random_background(np.random.default_rng(s), 32, 32, (FOLDER_KIND, "noise", "checker"),
                               folder=str(tmp_path / "bg"))[1] for s in range(200)]
    assert 0.35 < kinds.count(FOLDER_KIND) / 200 < 0.65


def test_folder_kind_needs_a_folder_with_images(tmp_path):
    with pytest.raises(ValueError):
        random_background(np.random.default_rng(0), 32, 32, (FOLDER_KIND,))
    (tmp_path / "empty").mkdir()
    folder_bank.cache_clear()
    with pytest.raises(FileNotFoundError):
        random_background(np.random.default_rng(0), 32, 32, (FOLDER_KIND,), folder=str(tmp_path / "empty"))
