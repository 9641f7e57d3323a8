"""Readers and writers: DeepLesion PNG + DL_info.csv, SimpleITK formats, annotation files."""
