"""The open volume in the viewer: CT image in HU, RECIST marks, proposal overlay, windows."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.ui.hu_windows import DEFAULT_WINDOW, WINDOW_KEYS, apply_window
from napari_lesion_harvest.ui.proposal_overlay import ProposalItem, ProposalOverlay
from napari_lesion_harvest.ui.recist_tool import RecistTool
from napari_lesion_harvest.ui.slices import show_slice


class VolumeView:
    """Layers of one open volume: image, proposals, RECIST marks (top).

    Parameters
    ----------
    viewer : napari.Viewer
    volume_id : str
    hu : ndarray, shape (Z, Y, X)
        The CT in Hounsfield units.
    spacing : tuple of float
        ``(sz, sy, sx)`` in mm (the layers' scale).
    display_window : tuple of float or None
        The volume's own DICOM window.
    sink : ~napari_lesion_harvest.annotation.recist_editor.MarkSink or None
        Where marks are saved.
    marks : dict of int -> RecistMark
        Marks already saved.
    notify, suggest, on_suggestion
        As :class:`RecistTool`.
    """

    def __init__(
        self,
        viewer,
        volume_id: str,
        hu: np.ndarray,
        spacing,
        *,
        display_window=None,
        sink=None,
        marks=None,
        notify=print,
        suggest=None,
        on_suggestion=lambda suggestion: None,
    ):
        self.viewer = viewer
        self.volume_id = volume_id
        self.display_window = display_window
        self.image_layer = viewer.add_image(
            hu, name=volume_id, scale=tuple(spacing), colormap="gray", interpolation2d="linear"
        )
        self.window = DEFAULT_WINDOW
        apply_window(self.image_layer, DEFAULT_WINDOW)
        self.proposals = ProposalOverlay(viewer, self.image_layer)
        self.recist = RecistTool(
            viewer,
            self.image_layer,
            sink=sink,
            marks=marks,
            notify=notify,
            volume_id=volume_id,
            suggest=suggest,
            on_suggestion=on_suggestion,
        )
        viewer.dims.ndisplay = 2
        viewer.dims.order = (0, 1, 2)
        viewer.dims.axis_labels = ("z", "y", "x")  # the slider reads "z", not "-3"
        viewer.reset_view()
        for key, name in WINDOW_KEYS.items():
            for layer in (self.image_layer, self.recist.marks_layer, self.proposals.layer):
                layer.bind_key(key, lambda _layer, n=name: self.set_window(n), overwrite=True)

    def set_window(self, name: str) -> None:
        """Switch to a window preset (``soft tissue``, ``lung``, ``bone``, ``DICOM``)."""
        apply_window(self.image_layer, name, self.display_window)
        self.window = name

    def set_proposals(self, items: list[ProposalItem]) -> None:
        """Replace the proposals drawn over the volume."""
        self.proposals.set_items(items)

    def show_proposal(self, item: ProposalItem) -> None:
        """Jump to the proposal's best slice, centre it and highlight it (world coordinates:
        right whatever other layers are open)."""
        proposal = item.proposal
        z = proposal.best_slice
        x1, y1, x2, y2 = proposal.best_box
        show_slice(self.viewer, self.image_layer, z)
        centre = self.image_layer.data_to_world([z, (y1 + y2) / 2.0, (x1 + x2) / 2.0])
        self.viewer.scene.camera.center = tuple(centre[1:])
        self.proposals.set_current(item.proposal_id)

    def close(self) -> None:
        """Remove the volume's layers from the viewer."""
        self.recist.remove_layers()
        self.proposals.close()
        if self.image_layer in self.viewer.layers:
            self.viewer.layers.remove(self.image_layer)
