"""CTVolume: lazy slice access, caching and validation."""

import numpy as np
import pytest

from napari_lesion_harvest.io.volume import CTVolume


def test_lazy_volume_loads_only_requested_slices_and_caches():
    calls = []
    data = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)

    def load(z):
        calls.append(z)
        return data[z]

    volume = CTVolume("v", (5, 4, 3), (2.0, 0.8, 0.8), load_slice=load, cache_slices=2)
    np.testing.assert_array_equal(volume.slice(3), data[3])
    volume.slice(3)
    assert calls == [3]
    volume.slice(0)
    volume.slice(1)
    volume.slice(3)  # evicted by the cache limit of 2
    assert calls == [3, 0, 1, 3]
    np.testing.assert_array_equal(volume.array(), data)
    with pytest.raises(IndexError, match="slice 5"):
        volume.slice(5)


def test_volume_validates_spacing_and_slice_shape():
    with pytest.raises(ValueError, match="spacing"):
        CTVolume.from_array("v", np.zeros((2, 2, 2)), (1.0, -1.0, 1.0))
    bad = CTVolume("v", (2, 4, 4), (1, 1, 1), load_slice=lambda z: np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"expected \(4, 4\)"):
        bad.slice(0)
