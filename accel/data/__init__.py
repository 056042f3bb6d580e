"""Data sets that ship inside installed packages (nothing is downloaded)."""

from accel.data.digits import DIGITS_SHAPE, digits_images, digits_split

__all__ = ["DIGITS_SHAPE", "digits_images", "digits_split"]
