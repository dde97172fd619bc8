"""Patron imports: properties files, CSV decoding, the import engine and the converter."""
