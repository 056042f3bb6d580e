import torch

from accel.data import DIGITS_SHAPE, digits_images


def test_digits_are_16x16_in_unit_range_with_all_classes():
    images, labels = digits_images()
    assert images.shape == (1797, *DIGITS_SHAPE) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert images.min() == -1 and images.max() > 0.9  # background black, strokes near white
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
