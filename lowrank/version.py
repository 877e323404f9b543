"""The package version (also in pyproject.toml): what a stored run records it was made with."""
__version__ = "0.1.0"
