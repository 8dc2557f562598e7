import numpy as np
import pytest
import torch

from dsc_pose_core.models.segmentation import RoiSegmenter
from dsc_pose_core.segmentation import roi


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
def test_model_outputs_one_channel_per_object(encoder):
    torch.set_num_threads(1)
    model = RoiSegmenter(n_objects=8, encoder=encoder, decoder_channels=32).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 8, 64, 64)
        assert model(torch.randn(1, 3, 72, 56)).shape == (1, 8, 72, 56)  # padded to /16 and cropped back


def test_unknown_encoder_rejected():
    with pytest.raises(ValueError):
        RoiSegmenter(2, "vgg11")


def test_output_stride_8_keeps_the_aspp_on_a_small_roi():
    """At output stride 8 the encoder's last map of a 96 px ROI is 12x12 (6x6 at 16), and the ASPP's
    dilated branches use the configured rates (sized to that map)."""
    torch.manual_seed(0)
    model = RoiSegmenter(3, "resnet18", decoder_channels=16, output_stride=8, atrous_rates=(2, 4, 6)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 3, 96, 96)
        features = model.net.encoder(torch.randn(1, 3, 96, 96))
    assert features[-1].shape[-2:] == (12, 12)
    aspp = model.net.decoder.aspp[0]
    dilations = [m.dilation[0] for m in aspp.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sorted(set(dilations)) == [2, 4, 6]
    with pytest.raises(ValueError, match="output_stride"):
        RoiSegmenter(2, "resnet18", output_stride=4)
    with pytest.raises(ValueError, match="atrous_rates"):
        RoiSegmenter(2, "resnet18", atrous_rates=(2, 4))


@pytest.mark.parametrize("box,size", [((200, 150, 120, 90), 96), ((10, 300, 60, 140), 128), ((590, 20, 50, 40), 64)])
def test_crop_paste_round_trip_within_one_pixel(box, size):
    """A mask cropped into the ROI and pasted back equals the original within 1 px at the edges."""
    width, height = 640, 480
    mask = np.zeros((height, width), np.float32)
    x, y, w, h = box
    mask[y + 5:y + h - 5, x + 5:x + w - 5] = 1.0  # a rectangle inside the box, partly outside the image
    window = roi.roi_window(box, context=1.25)
    back = roi.paste(roi.crop(mask, window, size), window, width, height) >= 0.5
    diff = back != (mask > 0.5)
    # every disagreeing pixel is within 1 px of the original's boundary
    import cv2

    original = (mask > 0.5).astype(np.uint8)
    band = cv2.dilate(original, np.ones((3, 3), np.uint8)) - cv2.erode(original, np.ones((3, 3), np.uint8))
    assert not (diff & (band == 0)).any()
    assert diff.sum() <= 0.05 * original.sum()


def test_paste_is_exact_inverse_at_native_scale():
    """Window of exactly `size` pixels: crop then paste returns the same pixels."""
    rng = np.random.default_rng(0)
    image = rng.random((100, 120)).astype(np.float32)
    box = (30, 20, 40, 40)
    window = roi.roi_window(box, context=1.0)  # 40 px edges -> 40 px crop: identity resampling
    crop = roi.crop(image, window, 40)
    np.testing.assert_allclose(crop, image[20:60, 30:70], atol=1e-5)
    back = roi.paste(crop, window, 120, 100)
    np.testing.assert_allclose(back[20:60, 30:70], image[20:60, 30:70], atol=1e-5)
    assert roi.window_mask(window, 120, 100).sum() == 40 * 40


def test_window_as_box_covers_the_window_mask():
    from dsc_pose_core.data.boxes import box_mask, box_xyxy_edges

    for window in (roi.roi_window((40, 30, 20, 10), context=1.5), np.array([-3.2, 5.0, 20.7, 31.0])):
        box = roi.window_box_xywh(window)
        assert np.array_equal(box_mask(box_xyxy_edges(box), 100, 80), roi.window_mask(window, 100, 80))
    assert roi.window_box_xywh([34.5, 19.5, 64.5, 49.5]).tolist() == [35, 20, 30, 30]


def test_unet_decoder_returns_full_resolution_logits_for_any_size():
    torch.manual_seed(0)
    model = RoiSegmenter(3, "efficientnet_lite0", decoder_channels=32, decoder="unet").eval()
    assert model.size_multiple == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 100, 90)).shape == (1, 3, 100, 90)  # padded to /32, cropped back
    with pytest.raises(ValueError, match="decoder"):
        RoiSegmenter(2, "efficientnet_lite0", decoder="fpn")
