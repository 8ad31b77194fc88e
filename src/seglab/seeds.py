"""Seeds of repeated runs: one rule, so that the split and training stages agree.

Repeat 0 keeps the configured seed (a study with one repeat gives the numbers it always
gave); repeat r > 0 gets a seed drawn from numpy's SeedSequence of (seed, r), so repeats
are unrelated streams rather than neighbouring integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def derived_seed(seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` of a stream configured with ``seed``."""
    if repeat == 0:
        return seed
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0] % 2**31)


def training_seed(variant: dict[str, Any], repeat: int, fold: int) -> int:
    """Seed of one training job: the variant's own seed (``seed``, else ``study.seed``), of its
    repeat, plus the fold."""
    base = variant["seed"] if variant["seed"] is not None else variant["study"]["seed"]
    return derived_seed(base, repeat) + fold
