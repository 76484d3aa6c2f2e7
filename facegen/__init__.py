"""facegen: face attribute analysis, generation and editing, trained and served on Ray."""

__version__ = "0.1.0"
