"""Whether a project holds self-supervised pretrained LPG weights, in one line for the dock.

``lesion-harvest pretrain`` saves them in :data:`PRETRAINED_PATH` of the
project folder; round 1 starts from them when present.
"""

from __future__ import annotations

import time
from pathlib import Path

#: The pretrained LPG weights, relative to the project folder.
PRETRAINED_PATH = "models/pretrained/lpg.pt"


def pretrained_weights_info(project) -> dict | None:
    """The project's pretrained LPG weights, or None when it has none.

    Parameters
    ----------
    project : HarvestProject

    Returns
    -------
    dict or None
        ``path`` (str, relative to the project folder) and ``description``
        (str, one line: the file, its size and when it was saved).
    """
    path = Path(project.folder) / PRETRAINED_PATH
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(found.st_mtime))
    return {
        "path": PRETRAINED_PATH,
        "description": f"{PRETRAINED_PATH}, {found.st_size / 1e6:.1f} MB, saved {saved}",
    }
