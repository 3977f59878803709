"""The version, in a leaf module: every command says it without importing the package."""

__version__ = "0.1.0"
