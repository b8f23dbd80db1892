"""trsp_lib: a small, tested reimplementation of TRSP layer pruning and the tools to study it."""
__version__ = "0.2.0"
