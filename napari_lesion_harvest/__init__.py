"""napari-lesion-harvest: iterative lesion harvesting for incompletely labelled CT datasets.

Importing the package is cheap: torch, torchvision and Qt are imported only
inside the functions that need them.
"""

__version__ = "0.1.0"
