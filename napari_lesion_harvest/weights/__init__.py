"""Pretrained weight files from outside the project: fetched only on the user's command.

:mod:`~napari_lesion_harvest.weights.fetch` downloads torchvision's ImageNet
files into torch's hub cache (``lesion-harvest weights fetch imagenet``) and
verifies them; nothing else in the package downloads.
"""
