"""What a training method is: a module that turns a batch of clips into named losses.

A method declares what it needs (global crops per frame, the student's extra parts) and computes, from the
student (DDP-wrapped when there are several ranks), the teacher and a batch, its losses by name, each already
weighted: the step's loss is their sum. What it keeps between steps (e.g. the teacher's output centre) is its
state, saved in the checkpoint. The loop, the checkpoint, the bench and the study never ask which method runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from dora.training.config import TrainConfig
from dora.training.data import normalize
from dora.training.step import autocast


@dataclass
class StepOutput:
    """A step's losses by name (each weighted; the loss is their sum) and scalars to log, all on the device."""

    losses: dict[str, torch.Tensor]
    logs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        return sum(self.losses.values())  # type: ignore[return-value]


class Method(nn.Module):
    """The base of every method. Subclasses set the class attributes and implement `forward`."""

    name: ClassVar[str]  # the --method value
    summary: ClassVar[str]  # one line for --help, export cards and the study's tables
    colour: ClassVar[str] = "tab:gray"  # the study's curves
    global_crops: ClassVar[int] = 1  # global views per frame the data makes (DINO's multi-crop: 2)
    mask_token: ClassVar[bool] = False  # the student needs a learnable mask token (masked image modelling)
    object_masks: ClassVar[bool] = False  # batches carry the clips' true object labels, batch["masks"] [B, T, G, G]
    # (shards made with `wtours shard --object-masks`)

    @dataclass(frozen=True)
    class Options:
        """The method's own options (--method-options), beyond TrainConfig's shared ones: none here."""

    def __init__(self, cfg: TrainConfig, device: torch.device, precision: str, rank: int = 0):
        super().__init__()
        self.device, self.precision, self.rank = device, precision, rank
        self.options = self.read_options(cfg.method_options)

    @classmethod
    def read_options(cls, given: dict):
        """The method's Options from --method-options; ValueError naming an option it does not have."""
        known = set(cls.Options.__dataclass_fields__)
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"--method-options {unknown} are not options of --method {cls.name}"
                             + (f" (it has {', '.join(sorted(known))})" if known else " (it has none)"))
        return cls.Options(**given)

    def check(self, student: nn.Module) -> None:
        """ValueError if the method cannot train this network (before any step)."""

    @classmethod
    def describe(cls, config: dict) -> str:
        """What trained a checkpoint with this config, in a few words (export cards)."""
        return cls.summary

    def autocast(self):
        """The step's mixed precision for the networks' forward passes (losses are computed in fp32 outside it)."""
        return autocast(self.precision, self.device)

    def images(self, batch: dict, key: str) -> torch.Tensor:
        """batch[key] normalised on the device (uint8 in, float out)."""
        return normalize(batch[key].to(self.device, non_blocking=True))

    def forward(self, student: nn.Module, teacher: nn.Module, batch: dict, teacher_temp: float,
                step_gen: torch.Generator) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError
