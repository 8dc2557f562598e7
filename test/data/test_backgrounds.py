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


def _textured_frame_with_object():
    rng = np.random.default_rng(1)
    frame = np.clip(rng.normal(120, 10, (120, 160, 3)), 0, 255).astype(np.uint8)  # grey clutter
    frame[40:80, 60:100] = (250, 20, 20)  # a red "object"
    return frame


def test_hide_boxes_fills_only_the_boxes_from_their_surroundings():
    from dsc_pose_core.data.backgrounds import hide_boxes

    frame = _textured_frame_with_object()
    hidden = hide_boxes(frame, [np.array([55, 35, 50, 50])])  # loose box around the object
    outside = np.ones(frame.shape[:2], bool)
    outside[35:85, 55:105] = False
    np.testing.assert_array_equal(hidden[outside], frame[outside])
    inside = hidden[35:85, 55:105].reshape(-1, 3).astype(float)
    # no trace of the red object: the fill looks like the grey surroundings
    assert np.abs(inside.mean(0) - 120).max() < 20
    assert (np.abs(inside[:, 0] - inside[:, 1]) < 40).all()
    np.testing.assert_array_equal(hide_boxes(frame, []), frame)


def test_real_background_frames_are_written_with_the_boxes_hidden(tmp_path):
    from dsc_pose_core.training.common import write_box_free_backgrounds

    scene_rgb = tmp_path / "test" / "000002" / "rgb"
    scene_rgb.mkdir(parents=True)
    frame = _textured_frame_with_object()
    cv2.imwrite(str(scene_rgb / "000007.png"), frame[..., ::-1])
    out = tmp_path / "backgrounds"
    (written,) = write_box_free_backgrounds(out, [(scene_rgb / "000007.png", [np.array([55, 35, 50, 50])])])
    assert written == out / "000002_000007.png"
    image = cv2.imread(str(written))[..., ::-1]
    assert image[60, 80, 0] < 180 and image[5, 5].tolist() == frame[5, 5].tolist()
    folder_bank.cache_clear()
    assert len(folder_bank(str(out))) == 1  # usable as background kind "folder"
