"""Rules that check and normalise the fields of a round configuration.

A rule is a function ``rule(name, value) -> value``: the value as the configuration
holds it (a float for a number, a tuple for a list), or :class:`RoundConfigError`
naming the field ``name``. Each section of
:class:`~napari_lesion_harvest.harvest.config.RoundConfig` tables its fields' rules.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from napari_lesion_harvest.harvest.errors import RoundConfigError
from napari_lesion_harvest.lpg.preprocess import checked_hu_window


def whole(minimum: int, *, optional: bool = False):
    """Rule: a whole number (not a boolean) >= ``minimum``; None too when ``optional``."""

    def check(name: str, value):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            allowed = ("null or " if optional else "") + f"a whole number >= {minimum}"
            raise RoundConfigError(f"config field {name!r} must be {allowed}, got {value!r}")
        return int(value)

    return check


def real(low: float, high: float = math.inf, *, low_open: bool = False, optional=False):
    """Rule: a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``),
    as a float; None too when ``optional``."""
    if math.isinf(high):
        interval = f"> {low:g}" if low_open else f">= {low:g}"
    else:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}]"

    def check(name: str, value):
        if value is None and optional:
            return None
        if not (
            _is_number(value)
            and math.isfinite(value)
            and (low < value if low_open else low <= value)
            and value <= high
        ):
            allowed = ("null or " if optional else "") + f"a number {interval}"
            raise RoundConfigError(f"config field {name!r} must be {allowed}, got {value!r}")
        return float(value)

    return check


def flag(name: str, value):
    """Rule: true or false."""
    if not isinstance(value, bool):
        raise RoundConfigError(f"config field {name!r} must be true or false, got {value!r}")
    return value


def choice(*allowed: str):
    """Rule: one of ``allowed``."""

    def check(name: str, value):
        if not isinstance(value, str) or value not in allowed:
            raise RoundConfigError(
                f"config field {name!r} must be one of {', '.join(allowed)}, got {value!r}"
            )
        return value

    return check


def _pair(name: str, value) -> tuple:
    """Two numbers as a tuple of floats (JSON gives a list)."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_number(v) for v in pair):
        raise RoundConfigError(f"config field {name!r} must be [low, high], got {value!r}")
    return tuple(float(v) for v in pair)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def hu_window(name: str, value):
    """Rule: null or a ``[low, high]`` HU window with low < high."""
    if value is None:
        return None
    try:
        return checked_hu_window(_pair(name, value), f"config field {name!r}")
    except ValueError as error:
        raise RoundConfigError(str(error)) from error


def zoom(name: str, value):
    """Rule: ``[low, high]`` with 0 < low <= high."""
    low, high = _pair(name, value)
    if not 0 < low <= high or not math.isfinite(high):
        raise RoundConfigError(
            f"config field {name!r} must be [low, high] with 0 < low <= high, got {value!r}"
        )
    return (low, high)


def names(*allowed: str):
    """Rule: null, or a non-empty list of distinct names from ``allowed`` (as a tuple)."""

    def check(name: str, value):
        if value is None:
            return None
        names = tuple(value) if isinstance(value, list | tuple) else ()
        if not names or len(set(names)) != len(names) or any(n not in allowed for n in names):
            raise RoundConfigError(
                f"config field {name!r} must be null or a list of distinct names from "
                f"{', '.join(allowed)}, got {value!r}"
            )
        return names

    return check


#: Rule: a fraction in (0, 1].
FRACTION = real(0.0, 1.0, low_open=True)


def check_fields(settings, prefix: str = "") -> None:
    """Check and normalise, in place, each field of the frozen dataclass ``settings``
    by its rule in ``settings.RULES``; errors name the field ``prefix + name``."""
    for name, rule in settings.RULES.items():
        object.__setattr__(settings, name, rule(prefix + name, getattr(settings, name)))
