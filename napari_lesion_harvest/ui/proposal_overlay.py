"""3D proposals drawn as their per-slice boxes, only on the slices they span.

Only the current slice's boxes are in the Shapes layer at any time (a volume
may have hundreds of proposals spanning thousands of slice boxes); the layer
is rebuilt when the slice changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.ui.screen_units import ScreenWidths

#: Display role -> edge colour. Marks (yellow / cyan line pairs) use none of these.
ROLE_COLOURS: dict[str, str] = {
    "marked lesion": "#3ddc84",
    "accepted": "#3ddc84",
    "harvested": "#ff9f1c",
    "candidate": "#c8c8c8",
    "hard negative": "#b266ff",
    "rejected": "#ff4040",
}
#: Store role (the paper's sets) -> display role, before verdicts.
STORE_ROLE_DISPLAY: dict[str, str] = {
    "P_RM": "marked lesion",
    "P_RH": "marked lesion",
    "P_pos_H": "harvested",
    "P_neg_H": "hard negative",
    "P_neg_M": "hard negative",
    "candidate": "candidate",
}
#: Box edge widths on screen (pixels, at any zoom): the current proposal, the others.
CURRENT_EDGE_SCREEN_PX = 3.0
EDGE_SCREEN_PX = 1.5


@dataclass(frozen=True)
class ProposalItem:
    """A proposal as the review shows it.

    Attributes
    ----------
    proposal_id : int
        Store id.
    proposal : Proposal3D
        Per-slice ``xyxy`` boxes on slices ``z``.
    role : str
        Store role (``P_RM``, ``P_pos_H``, ...).
    lesion_score : float
        ``s_gc`` when known, else ``s_g``.
    verdict : str or None
        ``accepted``, ``rejected`` or None.
    """

    proposal_id: int
    proposal: Proposal3D
    role: str
    lesion_score: float
    verdict: str | None = None

    @property
    def display_role(self) -> str:
        """The role shown: the verdict when there is one, else the store role's name."""
        if self.verdict is not None:
            return self.verdict
        return STORE_ROLE_DISPLAY.get(self.role, self.role)


def items_from_store(stored_proposals) -> list[ProposalItem]:
    """Review items from the store's proposals, sorted by lesion score (highest first)."""
    items = [
        ProposalItem(
            proposal_id=p.id,
            proposal=p.proposal,
            role=p.role,
            lesion_score=float(p.s_gc if p.s_gc is not None else p.s_g),
            verdict=None if p.verdict is None else p.verdict.verdict,
        )
        for p in stored_proposals
    ]
    items.sort(key=lambda item: (-item.lesion_score, item.proposal_id))
    return items


class ProposalOverlay:
    """A Shapes layer with the current slice's proposal boxes, coloured by role.

    Each box is labelled with its lesion score in the box's colour; the current
    proposal (the one under review) has a thicker edge and its role spelled out.
    Edge widths are constant on screen (:class:`ScreenWidths`).

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image
        The CT volume (data ``(Z, Y, X)``; its scale is reused).
    """

    def __init__(self, viewer, image_layer):
        self.viewer = viewer
        self.items: list[ProposalItem] = []
        self.current_id: int | None = None
        self._by_slice: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.layer = viewer.add_shapes(
            ndim=3,
            scale=tuple(image_layer.scale),
            name="Proposals",
            face_color="transparent",
            features={"label": np.array([], dtype=str), "colour": np.array([], dtype=str)},
            text={
                "string": "{label}",
                "color": {"feature": "colour"},
                "size": 10,
                "anchor": "lower_left",
            },
        )
        self.layer.feature_defaults = {"label": "", "colour": "#808080"}  # until set per box
        self.layer.editable = False
        self.widths = ScreenWidths(viewer, image_layer.scale[-1], self.redraw)
        viewer.dims.events.current_step.connect(self._on_step)

    def set_items(self, items: list[ProposalItem]) -> None:
        """Replace the proposals shown and redraw the current slice."""
        self.items = list(items)
        self._by_slice = {}
        for index, item in enumerate(self.items):
            for z, box in zip(item.proposal.slices, item.proposal.boxes, strict=True):
                self._by_slice.setdefault(int(z), []).append((index, box))
        self.redraw()

    def set_current(self, proposal_id: int | None) -> None:
        """Highlight one proposal (thicker white-edged box)."""
        self.current_id = proposal_id
        self.redraw()

    def close(self) -> None:
        """Disconnect and remove the layer."""
        self.widths.close()
        self.viewer.dims.events.current_step.disconnect(self._on_step)
        if self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)

    def _on_step(self, event=None) -> None:
        self.redraw()

    @property
    def current_slice(self) -> int:
        """The axial slice shown in the viewer."""
        return int(self.viewer.dims.current_step[0])

    def redraw(self) -> None:
        """Put the current slice's boxes (and only those) in the layer."""
        z = self.current_slice
        data, colours, widths, labels = [], [], [], []
        edge = self.widths.image_px(EDGE_SCREEN_PX)
        current_edge = self.widths.image_px(CURRENT_EDGE_SCREEN_PX)
        for index, box in self._by_slice.get(z, []):
            item = self.items[index]
            x1, y1, x2, y2 = box
            data.append(np.array([[z, y1, x1], [z, y1, x2], [z, y2, x2], [z, y2, x1]], float))
            current = item.proposal_id == self.current_id
            colours.append(ROLE_COLOURS.get(item.display_role, "#808080"))
            widths.append(current_edge if current else edge)
            score = f"{item.lesion_score:.2f}"
            labels.append(f"{item.display_role} {score}" if current else score)
        layer = self.layer
        # one layer refresh for the four changes below instead of one each (napari's own
        # batching helper): 36 instead of 61 ms per slice change on a 2-core CPU
        with layer._block_refresh():
            layer.selected_data = set()
            layer.data = []
            if data:
                layer.add_rectangles(data, edge_color=colours, edge_width=widths)
            layer.features = {
                "label": np.array(labels, dtype=str),
                "colour": np.array(colours, dtype=str),
            }
        layer.refresh()
