"""Readers for the dataset layouts people have. Each lists records; none decodes images."""
from pipeline.data.sources.listing import Listing, cap_per_class, list_source

__all__ = ["Listing", "cap_per_class", "list_source"]
