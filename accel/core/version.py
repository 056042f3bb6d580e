"""The library version, recorded in every artifact and report."""

__version__ = "0.3.0"
