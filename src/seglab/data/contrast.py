"""Contrast enhancement of an image as it is prepared: CLAHE on its luminance.

Applied by ``preprocess`` to every cached image and by ``seglab predict`` to each new one
(from the fingerprint), so training, evaluation and prediction see the same pixels.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def equalise_contrast(image: np.ndarray, clahe: dict[str, Any] | None) -> np.ndarray:
    """``image`` (uint8, H x W, H x W x 1 or H x W x 3 RGB) after CLAHE; unchanged when ``clahe`` is None.

    Colour images are equalised on the L channel of CIE Lab only, so hues stay what they
    were; grey images directly. The shape and dtype are kept.
    """
    if clahe is None:
        return image
    equaliser = cv2.createCLAHE(clipLimit=float(clahe["clip_limit"]), tileGridSize=(int(clahe["tiles"]),) * 2)
    if image.ndim == 2 or image.shape[2] == 1:
        return equaliser.apply(np.ascontiguousarray(image.reshape(image.shape[:2]))).reshape(image.shape)
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
