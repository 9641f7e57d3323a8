"""Which slice of a volume the viewer shows, and going to one, in world coordinates.

napari slices every layer at the viewer's world point; the slider's steps
follow the finest z scale of all open layers. With another layer open (the
sample at 2 mm, an image of another origin), a step index is not a slice of
the volume: these functions go through the layer's own transform instead.
"""

from __future__ import annotations

import numpy as np


def shown_slice(viewer, image_layer) -> int:
    """The slice of ``image_layer`` (data ``(Z, Y, X)``) that the viewer shows.

    The layer's data coordinate of the viewer's world point, rounded as napari
    rounds it when it slices the layer (it may be outside ``[0, Z)`` when the
    viewer shows a slice of another, longer layer).
    """
    world = np.asarray(viewer.dims.point, dtype=np.float64)[-3:]
    return int(np.round(image_layer.world_to_data(world)[-3]))


def show_slice(viewer, image_layer, z: int) -> None:
    """Move the viewer to slice ``z`` of ``image_layer`` (its world z, not a slider step)."""
    world_z = float(image_layer.data_to_world([z, 0.0, 0.0])[0])
    viewer.dims.set_point(viewer.dims.ndim - 3, world_z)
