"""Replacing a network's layers of one type, in place (used by the batch-norm and pooling swaps).

This module imports torch: import it from the model modules only.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_layers(
    module: nn.Module, source: type, build: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """``module`` with every layer of exactly type ``source`` replaced by ``build(layer)``.

    Children are replaced in place; returns ``module``, or ``build(module)`` when
    ``module`` itself is a ``source``.
    """
    if type(module) is source:
        return build(module)
    for name, child in module.named_children():
        replaced = replace_layers(child, source, build)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
