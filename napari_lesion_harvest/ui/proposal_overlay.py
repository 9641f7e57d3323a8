"""3D proposals drawn as their per-slice boxes, only on the slices they span.

Only the shown slice's boxes are in the Shapes layer at any time (a volume may
have hundreds of proposals spanning thousands of slice boxes); the layer is
rebuilt when the shown slice of the volume changes (read in world coordinates,
:func:`~napari_lesion_harvest.ui.slices.shown_slice`). Few boxes carry a label
(the proposal under review, harvested and accepted lesions), each on a dark
plate so it stays readable over bright organs and bone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store.project import MARK_DECIDED_ROLES
from napari_lesion_harvest.ui.screen_units import ScreenWidths
from napari_lesion_harvest.ui.slices import shown_slice
from napari_lesion_harvest.vocabulary import Role, Verdict

#: Display role -> edge colour. Marks (yellow / cyan line pairs) use none of these.
ROLE_COLOURS: dict[str, str] = {
    "marked lesion": "#3ddc84",
    Verdict.accepted: "#3ddc84",
    "harvested lesion": "#ff9f1c",
    Role.candidate: "#c8c8c8",
    "hard negative": "#b266ff",
    Verdict.rejected: "#ff4040",
}
#: Store role (the paper's sets) -> display role (plain words), before verdicts.
STORE_ROLE_DISPLAY: dict[str, str] = {
    Role.P_RM: "marked lesion",
    Role.P_RH: "marked lesion",
    Role.P_pos_H: "harvested lesion",
    Role.P_neg_H: "hard negative",
    Role.P_neg_M: "hard negative",
    Role.candidate: "candidate",
}
#: Store role -> what it is, with the paper's symbol (tooltips).
ROLE_TOOLTIPS: dict[str, str] = {
    Role.P_RM: "P_RM: a proposal hitting a RECIST mark of a fully annotated volume (V_M)",
    Role.P_RH: "P_RH: a proposal hitting a RECIST mark of a volume to harvest (V_H)",
    Role.P_pos_H: "P_pos_H: harvested; its lesion score s_gc passed the round's threshold",
    Role.P_neg_H: "P_neg_H: hard negative of V_H; high objectness s_g, not harvested",
    Role.P_neg_M: "P_neg_M: hits no mark of a fully annotated volume (V_M): not a lesion",
    Role.candidate: "candidate: scored by the classifier, neither harvested nor a hard negative",
}
#: Display roles whose boxes carry their score even when not under review.
LABELLED_ROLES = frozenset({"harvested lesion", Verdict.accepted})
#: Box edge widths on screen (pixels, at any zoom): the current proposal, the others.
CURRENT_EDGE_SCREEN_PX = 3.0
EDGE_SCREEN_PX = 1.5
#: Label plates on screen (pixels): height, width per character, margin; their colour.
LABEL_HEIGHT_SCREEN_PX = 17.0
LABEL_CHAR_SCREEN_PX = 8.5
LABEL_MARGIN_SCREEN_PX = 10.0
LABEL_PLATE_COLOUR = "#000000c0"


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
        """The role shown: the verdict when there is one, else the store role's plain name."""
        if self.verdict is not None:
            return self.verdict
        return STORE_ROLE_DISPLAY.get(self.role, self.role)

    @property
    def decided_by_mark(self) -> str | None:
        """Why a mark decides this proposal (it takes no verdict), or None."""
        return MARK_DECIDED_ROLES.get(self.role)


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
    """A Shapes layer with the shown slice's proposal boxes, coloured by role.

    The proposal under review has a thicker edge and its role and score as a
    label; harvested and accepted lesions show their score; other boxes have
    no label. Labels sit on dark plates above their box. Edge widths and
    plates are constant on screen (:class:`ScreenWidths`).

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image
        The CT volume (data ``(Z, Y, X)``; its scale is reused).
    """

    def __init__(self, viewer, image_layer):
        self.viewer = viewer
        self.image_layer = image_layer
        self.items: list[ProposalItem] = []
        self.current_id: int | None = None
        self._by_slice: dict[int, list[tuple[int, np.ndarray]]] = {}
        self._drawn_slice: int | None = None
        self.layer = viewer.add_shapes(
            ndim=3,
            scale=tuple(image_layer.scale),
            translate=tuple(image_layer.translate),
            name="Proposals",
            face_color="transparent",
            features={"label": np.array([], dtype=str), "colour": np.array([], dtype=str)},
            text={"string": "{label}", "color": {"feature": "colour"}, "size": 9},
        )
        self.layer.feature_defaults = {"label": "", "colour": "#808080"}  # until set per box
        self.layer.editable = False
        self.widths = ScreenWidths(viewer, image_layer.scale[-1], self.redraw)
        viewer.dims.events.point.connect(self._on_point)

    def set_items(self, items: list[ProposalItem]) -> None:
        """Replace the proposals shown and redraw the shown slice."""
        self.items = list(items)
        self._by_slice = {}
        for index, item in enumerate(self.items):
            for z, box in zip(item.proposal.slices, item.proposal.boxes, strict=True):
                self._by_slice.setdefault(int(z), []).append((index, box))
        self.redraw()

    def set_current(self, proposal_id: int | None) -> None:
        """Highlight one proposal (thicker edge, role and score spelled out)."""
        self.current_id = proposal_id
        self.redraw()

    def close(self) -> None:
        """Disconnect and remove the layer."""
        self.widths.close()
        self.viewer.dims.events.point.disconnect(self._on_point)
        if self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)

    def _on_point(self, event=None) -> None:
        if self.current_slice != self._drawn_slice:
            self.redraw()

    @property
    def current_slice(self) -> int:
        """The slice of the volume that the viewer shows."""
        return shown_slice(self.viewer, self.image_layer)

    def label_of(self, item: ProposalItem) -> str:
        """The label drawn with ``item``'s box ('' for none)."""
        score = f"{item.lesion_score:.2f}"
        if item.proposal_id == self.current_id:
            return f"{item.display_role} {score}"
        return score if item.display_role in LABELLED_ROLES else ""

    def redraw(self) -> None:
        """Put the shown slice's boxes and label plates (and only those) in the layer."""
        z = self.current_slice
        self._drawn_slice = z
        data, edges, faces, widths, labels, label_colours = [], [], [], [], [], []
        edge = self.widths.image_px(EDGE_SCREEN_PX)
        current_edge = self.widths.image_px(CURRENT_EDGE_SCREEN_PX)
        plate_height = self.widths.image_px(LABEL_HEIGHT_SCREEN_PX)
        for index, box in self._by_slice.get(z, []):
            item = self.items[index]
            colour = ROLE_COLOURS.get(item.display_role, "#808080")
            x1, y1, x2, y2 = box
            data.append(_rectangle(z, x1, y1, x2, y2))
            edges.append(colour)
            faces.append("transparent")
            widths.append(current_edge if item.proposal_id == self.current_id else edge)
            labels.append("")
            label_colours.append(colour)
            label = self.label_of(item)
            if label:
                plate_width = self.widths.image_px(
                    LABEL_CHAR_SCREEN_PX * len(label) + LABEL_MARGIN_SCREEN_PX
                )
                data.append(_rectangle(z, x1, y1 - plate_height, x1 + plate_width, y1))
                edges.append(LABEL_PLATE_COLOUR)
                faces.append(LABEL_PLATE_COLOUR)
                widths.append(0.0)
                labels.append(label)
                label_colours.append(colour)
        layer = self.layer
        layer.selected_data = set()
        layer.data = []
        if data:
            layer.add_rectangles(data, edge_color=edges, face_color=faces, edge_width=widths)
        layer.features = {
            "label": np.array(labels, dtype=str),
            "colour": np.array(label_colours, dtype=str),
        }


def _rectangle(z: int, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """napari rectangle ``(4, 3)`` in ``(z, y, x)`` data coordinates."""
    return np.array([[z, y1, x1], [z, y1, x2], [z, y2, x2], [z, y2, x1]], dtype=float)
