"""Sandstorm: an offline Stable Diffusion desktop studio."""

__version__ = "0.1.0"
