"""Lesion proposal classifier (LPC): multi-view ResNet-18 and its alternatives.

Modules, in the order data flows through them:

``choices``        the names a round's configuration gives the LPC (no heavy import)
``patches``        axial / coronal / sagittal planes or a sub-volume around a proposal
``features``       a few numbers per proposal: track shape, HU contrast, place, s_g
``models``         the ``multiview``, ``axial`` and ``3d`` classifiers (imports torch)
``feature_model``  logistic regression on the features, for about a hundred positives
``augment``        training-time flips, rotation and jitter
``train``          training on P_RM, P_RH (positives) and P_neg_M (negatives)
``checkpoint``     atomic saving, weights-only loading
``score``          s_c, the lesion score s_gc = s_g * s_c, folds of V_M volumes
``fitting``        a round's LPC: out-of-fold V_M scores, the choice among candidates,
                   the scorer of V_H (final model or mean of the fold models)
``metrics``        proposal-level ROC AUC, precision-recall and AP
``report``         the PR plot comparing scores and variants (paper Fig. 5b)

Importing this package imports neither torch nor any of these modules.
"""
