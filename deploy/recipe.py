"""The training recipe of final architectures: hyper-parameters, schedule, augmentation, EMA.

What a practitioner uses on small-image data: SGD with Nesterov momentum, weight
decay on conv and linear weights only (not on BN scales or biases), a linear
learning-rate warm-up then cosine decay per step, label smoothing, random shift /
flip / erasing (:mod:`deploy.augment`), and an EMA of the weights that becomes the
final model. The network trains in channels-last layout, which is 1.5-2x faster on
CPU here (``benchmarks/bench_train_throughput.py``). Tuning trials and the final
training (:mod:`deploy.retrain`) both step a :class:`Training`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from deploy.augment import Augmentation
from pipeline.config import RetrainConfig
from spaces.arch import Arch
from spaces.modules import ChildNet
from spaces.training import average_buffers, train_epoch

__all__ = ["Hyperparameters", "Training", "warm_ema"]

EMA_WARMUP = 10  # the EMA's decay is (1 + n) / (EMA_WARMUP + n) after n updates until that exceeds the set decay


def warm_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """An EMA update for ``AveragedModel`` whose decay ramps up to ``decay`` (TensorFlow's ``num_updates``).

    A fixed 0.999 averages over ~1000 steps, so a short training would ship weights close to
    its random initialisation; with the ramp the average follows the weights early on.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        n = float(count)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (EMA_WARMUP + n)))

    return update


@dataclass(frozen=True)
class Hyperparameters:
    """What tuning chooses and final training uses."""

    lr: float
    weight_decay: float
    label_smoothing: float
    augmentation: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        """From a Tune config or JSON; extra keys are ignored, missing ones are a ValueError."""
        missing = [name for name in cls.__dataclass_fields__ if name not in data]
        if missing:
            raise ValueError(f"hyper-parameters lack {', '.join(missing)}; got {sorted(data)}")
        return cls(**{name: float(data[name]) for name in cls.__dataclass_fields__})


class Training:
    """One network's training state and epoch step (data-parallel under ``torch.distributed``).

    ``epochs`` is the length of the cosine schedule; the final training re-plans it after
    every epoch to fit a time budget. The state dict holds everything a resume needs.
    """

    def __init__(self, arch: Arch, hparams: Hyperparameters, recipe: RetrainConfig, epochs: int,
                 steps_per_epoch: int, rank: int = 0) -> None:
        torch.manual_seed(recipe.seed)
        self.net = ChildNet(arch).to(memory_format=torch.channels_last)
        self.hparams, self.recipe, self.rank = hparams, recipe, rank
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.augment = Augmentation(hparams.augmentation, recipe.flip_probability, recipe.erasing_probability)
        decayed = [p for p in self.net.parameters() if p.ndim > 1]
        plain = [p for p in self.net.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": hparams.weight_decay},
                                          {"params": plain, "weight_decay": 0.0}],
                                         lr=hparams.lr, momentum=0.9, nesterov=True)
        self.ema = AveragedModel(self.net, multi_avg_fn=warm_ema(recipe.ema_decay)) if recipe.ema_decay else None
        self.order = torch.Generator().manual_seed(recipe.seed)  # the same on every rank: one global batch order
        self.history: list[dict[str, float]] = []

    @property
    def epoch(self) -> int:
        return len(self.history)

    @property
    def steps(self) -> int:
        """Optimizer steps taken, at an epoch boundary (every epoch runs ``steps_per_epoch``)."""
        return self.epoch * self.steps_per_epoch

    def learning_rate(self, step: int) -> float:
        """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 at the end of ``epochs``."""
        total = self.epochs * self.steps_per_epoch
        warmup = self.recipe.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return self.hparams.lr * (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return self.hparams.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def run_epoch(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One epoch; returns and records rank 0's mean (label-smoothed) loss, the first learning rate and the time."""
        start = time.perf_counter()
        # Per (seed, epoch, rank): no augmentation state to checkpoint, and resuming reproduces it.
        draws = torch.Generator().manual_seed(int(np.random.SeedSequence([self.recipe.seed, self.epoch, self.rank])
                                                  .generate_state(1)[0]))

        def forward(batch: torch.Tensor) -> torch.Tensor:
            return self.net(self.augment(batch, draws).contiguous(memory_format=torch.channels_last))

        step = self.steps

        def after_step() -> None:
            nonlocal step
            step += 1
            self._set_lr(step)
            if self.ema is not None:
                self.ema.update_parameters(self.net)

        lr = self._set_lr(step)
        self.net.train()
        loss = train_epoch(forward, list(self.net.parameters()), self.optimizer, x, y, self.recipe.batch_size,
                           self.order, before_step=after_step, label_smoothing=self.hparams.label_smoothing)
        average_buffers(self.net)  # BN statistics agree on every rank, so rank 0's checkpoint holds them all
        self.net.eval()
        self.history.append({"epoch": self.epoch + 1, "train_loss": loss, "lr": lr,
                             "seconds": time.perf_counter() - start})
        return self.history[-1]

    def final_net(self) -> torch.nn.Module:
        """The model to evaluate and ship: the EMA weights when there is an EMA, else the trained ones.

        Either way its BN statistics are then re-estimated on its own weights (precise BN).
        """
        return self.net if self.ema is None else self.ema.module

    def _set_lr(self, step: int) -> float:
        lr = self.learning_rate(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "epochs": self.epochs,
                "ema": None if self.ema is None else self.ema.state_dict(),
                "order": self.order.get_state(), "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.order.set_state(state["order"])
        self.history, self.epochs = state["history"], state["epochs"]
