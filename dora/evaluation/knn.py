"""Weighted k-NN classification of L2-normalised features (DINO's protocol: votes exp(sim / T))."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of rows whose true label is among the k highest scores."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean() * 100)


def knn_scores(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, k: int, temperature: float,
               num_classes: int, chunk: int = 256) -> torch.Tensor:
    """Class votes [N_test, C]: each of the k nearest training features votes exp(cosine / T)."""
    train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    k = min(k, len(train))
    out = []
    for start in range(0, len(test), chunk):
        sims = test[start:start + chunk] @ train.T
        top, idx = sims.topk(k, dim=1)
        weights = (top / temperature).exp()
        votes = torch.zeros(len(top), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[idx], weights)
        out.append(votes)
    return torch.cat(out)


def knn_eval(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
             ks=(10, 20, 100, 200), temperature: float = 0.07, num_classes: int | None = None) -> dict[int, dict]:
    """Top-1 / top-5 for each k (k larger than the training set is capped, and reported as such)."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    results = {}
    for k in ks:
        scores = knn_scores(train, train_labels, test, k, temperature, num_classes)
        results[k] = {"top1": topk_accuracy(scores, test_labels, 1), "top5": topk_accuracy(scores, test_labels, 5),
                      "k_used": min(k, len(train))}
    return results
