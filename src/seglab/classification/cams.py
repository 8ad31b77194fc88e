"""Class activation maps of sample test images, for the report and MLflow.

The evaluate stage picks the fold ensemble's most confident correct and most confident wrong
test images, computes the Grad-CAM of the predicted class with every fold model
(:mod:`seglab.cam`) and averages them (the ensemble's map), and draws them with their true and
predicted classes (:func:`seglab.report.class_figures.cam_grid_figure`) into
``cam_overlays.png`` (:data:`seglab.layout.CAM_OVERLAYS`) beside the evaluation files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..engine import Execution
from .data import ClassificationDataset


def pick_samples(ensemble: pd.DataFrame, count: int) -> pd.DataFrame:
    """Up to ``count`` correct and ``count`` misclassified rows, the most confident first."""
    ranked = ensemble.sort_values(["probability", "id"], ascending=[False, True])
    return pd.concat([ranked[ranked["correct"] == 1].head(count), ranked[ranked["correct"] == 0].head(count)])


def ensemble_cams(models: list[torch.nn.Module], images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """(N, H, W) mean over the fold models of each image's Grad-CAM for ``classes``."""
    from ..cam import find_target_layer, grad_cam

    maps = [grad_cam(m, images, find_target_layer(m, images[:1]), classes).detach().cpu() for m in models]
    return torch.stack(maps).mean(0).numpy()


def write_cam_grid(models: list[torch.nn.Module], dataset: ClassificationDataset, ensemble: pd.DataFrame,
                   execution: Execution, path: Path, title: str, count: int = 4) -> Path | None:
    """Draw the sample CAMs of one variant's test ensemble; None when there is nothing to draw."""
    from ..report.class_figures import CamSample, cam_grid_figure

    chosen = pick_samples(ensemble, count)
    if chosen.empty:
        return None
    position = {image_id: k for k, image_id in enumerate(dataset.ids)}
    rows = [position[i] for i in chosen["id"]]
    images = torch.stack([dataset[r][0] for r in rows]).to(execution.device)
    predicted = torch.tensor(chosen["predicted"].to_numpy(), device=execution.device)
    cams = ensemble_cams(models, images, predicted)
    samples = []
    for k, (_, row) in enumerate(chosen.iterrows()):
        pixels = np.asarray(dataset.data.images[dataset.rows[rows[k]]])
        samples.append(CamSample(image=pixels[..., 0] if pixels.shape[2] == 1 else pixels, cam=cams[k],
                                 true=str(row["true_class"]), predicted=str(row["predicted_class"]),
                                 probability=float(row["probability"])))
    return cam_grid_figure(samples, path, title)
