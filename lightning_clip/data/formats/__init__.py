"""Readers for caption datasets, one module per on-disk format."""
