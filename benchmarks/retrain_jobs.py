"""What the search-quality benchmarks share: seeded data in worker processes, one retraining recipe, statistics.

Every architecture a benchmark compares is trained from scratch by :func:`retrain`
(SGD, Nesterov, cosine per step; the seed sets init and batch order) in worker
processes of one torch thread each, on the :class:`Data` handed to
:func:`init_worker`, and scored on the test split.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.data import ImageDataset
from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.modules import ChildNet
from spaces.space import SearchSpace
from spaces.supernet import resize_input
from spaces.training import evaluate, train_epoch

__all__ = ["Data", "bootstrap_median_se", "init_worker", "madds", "matched_rivals", "retrain", "se", "worker_data"]


@dataclass(frozen=True)
class Data:
    """The seeded subsets every process works on."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def subsets(cls, dataset: ImageDataset, train: int, val: int, test: int, seed: int) -> Data:
        """Seeded subsets of ``dataset``'s train, val and test splits (the first ``train``, ... of a shuffle)."""
        return cls(*dataset.split("train", limit=train, seed=seed), *dataset.split("val", limit=val, seed=seed),
                   *dataset.split("test", limit=test, seed=seed))


_DATA: Data | None = None


def init_worker(data: Data) -> None:
    global _DATA
    torch.set_num_threads(1)
    _DATA = data


def retrain(job: tuple[str, int, int, float, int]) -> float:
    """Test accuracy of ``arch`` trained from scratch: same recipe for every arch; the seed sets init and batches."""
    encoded, epochs, batch_size, lr, seed = job
    data, arch = worker_data(), Arch.parse(encoded)
    torch.manual_seed(seed)
    net = ChildNet(arch)
    params = list(net.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * (len(data.x_train) // batch_size))
    order = torch.Generator().manual_seed(seed)
    x = resize_input(data.x_train, arch.input_size)
    net.train()
    for _ in range(epochs):
        train_epoch(net, params, optimizer, x, data.y_train, batch_size, order, before_step=schedule.step)
    net.eval()
    return evaluate(net, resize_input(data.x_test, arch.input_size), data.y_test)


def madds(arch: Arch) -> float:
    return float(arch_cost(arch).madds)


def matched_rivals(space: SearchSpace, searched: str, count: int, match: float, rng: random.Random,
                   exclude: set[str], cost: Callable[[Arch], float] = madds, attempts: int = 200_000) -> list[str]:
    """``count`` distinct random members whose ``cost`` (MAdds unless told) lies within ``match`` of the searched
    arch's."""
    target = cost(Arch.parse(searched))
    found: list[str] = []
    for _ in range(attempts):
        arch = space.sample(rng)
        key = arch.encode()
        if abs(cost(arch) / target - 1) <= match and key not in exclude:
            exclude.add(key)
            found.append(key)
            if len(found) == count:
                break
    return found


def bootstrap_median_se(values: list[float], rounds: int = 4000, seed: int = 0) -> float:
    rng = random.Random(seed)
    medians = [statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds)]
    return statistics.stdev(medians)


def se(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def worker_data() -> Data:
    """The data :func:`init_worker` gave this process."""
    assert _DATA is not None, "init_worker was not called in this process"
    return _DATA
