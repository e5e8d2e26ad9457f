"""The tool's version, in a module of its own so that every stage can name it in its output
without importing the package's entry points."""

__version__ = "0.1.0"
