"""Annotation models behind the viewer: the state of an expert's editing, Qt- and napari-free."""
