"""Synthetic CT phantom with lesions, full ground truth and DeepLesion-like incomplete marks.

Public entry points (import the modules; nothing heavy is imported here):

* :func:`.phantom.generate_volume` - one sub-volume (:class:`.phantom.SyntheticVolume`);
* :func:`.dataset.generate_dataset` - a whole dataset on disk in DeepLesion's layout;
* :func:`.split.split_volumes` - V_M / V_H / V_H_test / V_D_test;
* :func:`.sample.make_sample_data` - napari sample data;
* ``lesion-harvest synth`` (:mod:`.cli`) and ``python -m napari_lesion_harvest.synthetic.preview``.
"""
