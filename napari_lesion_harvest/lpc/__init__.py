"""Lesion proposal classifier (LPC): multi-view ResNet-18 and its alternatives.

Modules, in the order data flows through them:

``patches``     axial / coronal / sagittal planes or a sub-volume around a proposal
``models``      the ``multiview``, ``axial`` and ``3d`` classifiers (imports torch)
``augment``     training-time flips, rotation and jitter
``train``       training on P_RM, P_RH (positives) and P_neg_M (negatives)
``checkpoint``  atomic saving, weights-only loading
``score``       s_c, the lesion score s_gc = s_g * s_c, out-of-fold V_M scores
``metrics``     proposal-level ROC AUC and precision-recall
``report``      the PR plot comparing scores and variants (paper Fig. 5b)

Importing this package imports neither torch nor any of these modules.
"""
