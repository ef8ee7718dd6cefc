"""Semantic segmentation scores from a confusion matrix (mmsegmentation's definitions): per-class IoU and
accuracy, their means over the classes that occur (mIoU, mAcc), and pixel accuracy (aAcc); pixels labelled
IGNORE count nowhere."""

from __future__ import annotations

import math

import torch

from dora.evaluation.segsets import IGNORE


def confusion(prediction: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """[classes, classes] pixel counts, rows the true class and columns the predicted one (int64)."""
    keep = truth != IGNORE
    index = truth[keep].long() * classes + prediction[keep].long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def scores(matrix: torch.Tensor) -> dict:
    """mIoU, mAcc, aAcc (percent) and the per-class IoU and accuracy (None for a class with no pixels in the
    truth or the prediction: left out of the means, as mmsegmentation's nanmean)."""
    matrix = matrix.double()
    hits = matrix.diagonal()
    truth, predicted = matrix.sum(dim=1), matrix.sum(dim=0)
    union = truth + predicted - hits
    iou = torch.where(union > 0, hits / union.clamp(min=1), torch.nan)
    acc = torch.where(truth > 0, hits / truth.clamp(min=1), torch.nan)

    def listed(values: torch.Tensor) -> list[float | None]:
        return [None if math.isnan(v) else round(100 * v, 4) for v in values.tolist()]

    return {"mIoU": 100 * float(iou.nanmean()), "mAcc": 100 * float(acc.nanmean()),
            "aAcc": 100 * float(hits.sum() / matrix.sum().clamp(min=1)), "iou": listed(iou), "acc": listed(acc),
            "pixels": [int(v) for v in truth.tolist()]}
