"""The rendernet version: pyproject.toml reads it from here, model.json records the one that wrote it."""

__version__ = "0.2.0"
