"""napari sample data: one phantom volume with its original marks and its unmarked lesions.

Returns layer-data tuples only; napari is not imported here.
"""

from __future__ import annotations

#: Seed and size of the sample volume (a chest/abdomen slab with several lesions).
SAMPLE_SEED = 7
SAMPLE_SIZE = 256
UNMARKED_COLOR = "magenta"


def make_sample_data() -> list[tuple[object, dict, str]]:
    """A synthetic CT sub-volume with lesions, as napari layer-data tuples.

    Returns
    -------
    list of (data, kwargs, layer_type)
        The CT image (HU, shape ``(Z, Y, X)``, scale = spacing in mm), its
        original (incomplete) RECIST marks as line shapes, and the marks of
        the lesions the original marks missed (the ground truth to harvest).
    """
    from napari_lesion_harvest.io.napari_readers import marks_to_lines, volume_layer_data
    from napari_lesion_harvest.synthetic.dataset import series_identities, volume_rng
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig, generate_volume

    identity = series_identities(1, SAMPLE_SEED)[0]
    sample = generate_volume(
        volume_rng(SAMPLE_SEED, 0), identity, config=PhantomConfig(size=SAMPLE_SIZE)
    )
    layers = volume_layer_data(sample.volume, sample.original_marks)
    layers[0][1]["name"] = f"synthetic CT {sample.volume_id}"
    if len(layers) > 1:
        layers[1][1]["name"] = "original marks"
    unmarked = [lesion.recist for lesion in sample.lesions if not lesion.marked]
    if unmarked:
        kwargs = {
            "name": "unmarked lesions (truth)",
            "shape_type": "line",
            "edge_color": UNMARKED_COLOR,
            "edge_width": 1.0,
            "scale": tuple(sample.volume.spacing),
            "features": {"axis": ["long", "short"] * len(unmarked)},
            "metadata": {"volume_id": sample.volume_id},
        }
        layers.append((marks_to_lines(unmarked), kwargs, "shapes"))
    return layers
