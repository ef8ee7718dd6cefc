import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2lab

from wtours.lightness import lightness_map, mean_lightness


def test_lightness_equals_scikit_image_rgb2lab_on_real_photos_and_every_gray():
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for photo in photos:
        assert np.abs(lightness_map(photo) - rgb2lab(photo)[..., 0]).max() < 1e-3
    grays = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
    assert np.abs(lightness_map(grays) - rgb2lab(grays)[..., 0]).max() < 1e-3
    random = np.random.default_rng(0).integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    expected = rgb2lab(random.reshape(-1, 48, 3))[..., 0].reshape(4, -1).mean(axis=1)
    assert mean_lightness(random) == pytest.approx(expected, abs=1e-3)


def test_lightness_rejects_other_shapes():
    with pytest.raises(ValueError, match="N x H x W x 3 uint8"):
        mean_lightness(np.zeros((4, 4, 3), np.uint8))
