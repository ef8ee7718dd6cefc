"""Linear probe on frozen features ([CLS] of the last 4 blocks), DINO's optimiser: SGD with momentum
0.9, cosine schedule, no weight decay. Features are computed once (centre crops) and cached, so an
epoch is a pass over tensors; the probe is checkpointed every epoch and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from dora.evaluation.config import LinearConfig
from dora.evaluation.encoder import read_torch_file
from dora.evaluation.knn import topk_accuracy
from wtours_base.files import atomic_path


def train_linear(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 num_classes: int, cfg: LinearConfig, out: Path, progress: bool = False) -> dict:
    """Train (or resume) the probe; returns final top-1 / top-5 on the validation features. `progress`: a bar
    over the epochs on a terminal."""
    from wtours_base.report import progress_bar

    torch.manual_seed(cfg.seed)
    probe = nn.Linear(train_x.shape[1], num_classes)
    probe.weight.data.normal_(0, 0.01)
    probe.bias.data.zero_()
    lr = cfg.lr * cfg.batch_size / 256
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs, eta_min=0)
    state_path = out / "linear.pt"
    start = 0
    if state_path.is_file():
        state = read_torch_file(state_path, "linear-probe state")
        probe.load_state_dict(state["probe"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"]
    loss_fn = nn.CrossEntropyLoss()
    with open(out / "linear_log.jsonl", "a", encoding="utf-8") as log:
        for epoch in progress_bar(range(start, cfg.epochs), progress, desc="linear probe", unit="epoch", initial=start,
                                  total=cfg.epochs):
            order = torch.randperm(len(train_x))
            total = 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                loss = loss_fn(probe(train_x[idx]), train_y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            scheduler.step()
            with atomic_path(state_path) as tmp:
                torch.save({"probe": probe.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1}, tmp)
            log.write(json.dumps({"epoch": epoch + 1, "loss": total / len(order)}) + "\n")
    with torch.no_grad():
        scores = probe(val_x)
    return {"top1": topk_accuracy(scores, val_y, 1), "top5": topk_accuracy(scores, val_y, 5), "epochs": cfg.epochs}
