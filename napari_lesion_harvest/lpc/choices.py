"""The names a round's configuration gives the LPC (this module imports nothing heavy).

See :mod:`napari_lesion_harvest.lpc.fitting` for what each one does.
"""

#: Every LPC a round can use, the paper's multi-view CNN first: the CNN variants of
#: :mod:`~napari_lesion_harvest.lpc.models`, the feature model, and ``s_g`` (no
#: classifier: s_c = 1).
CLASSIFIER_NAMES = ("multiview", "axial", "3d", "features", "s_g")
#: How V_M proposals are scored for the harvest threshold.
V_M_SCORE_MODES = ("out_of_fold", "in_sample")
#: How V_H proposals are scored: a final model trained on everything (the paper), or
#: the mean of the out-of-fold models whose V_M scores set the threshold.
V_H_SCORINGS = ("final_model", "fold_mean")
