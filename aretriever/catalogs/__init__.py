"""Catalogs: reading catalog files and archives into streamed rows of named sources."""
