"""Data-parallel search (2 gloo processes) derives what the 1-process search derives.

Each rank takes half of every global batch and gradients are averaged, so the
weight and architecture updates match a single process up to BatchNorm, whose
statistics are per rank (16 images instead of 32). The space and data are made
so that the choices are clear: a bright-quadrant task the smallest net learns,
and a MAdds target below the cheapest member, so the cost term decides every
logit's direction. The ranks themselves must agree exactly: all-reduced
gradients and identically seeded Gumbel noise keep their logits in sync.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spaces.search import SearchData, SearchSettings, search
from spaces.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "format": "autospace-space/1", "name": "tiny", "in_channels": 1, "num_classes": 4, "resolutions": [8, 12],
    "stem": ["cn_k3_c8_relu"],
    "stages": [
        {"widths": [8, 16], "stride": 1, "min_depth": 1,
         "layers": [["ds_k3_relu", "ir_k3_e3_relu"], ["ds_k3_relu", "ir_k5_e3_relu", "ir_k3_e6_relu"]]},
        {"widths": [8, 16], "stride": 2, "min_depth": 1,
         "layers": [["ds_k3_relu", "ir_k3_e3_relu", "ir_k5_e3_relu"], ["ds_k5_relu", "ir_k3_e3_relu"]]},
    ],
    "head": ["cn_k1_c32_relu"],
})
SETTINGS = SearchSettings(epochs=3, warmup_epochs=1, batch_size=32, lr=0.05, arch_lr=0.05, finetune_epochs=1,
                          seed=7, target=5e4)


def quadrant_data(n_train: int = 256, n_val: int = 128, size: int = 12, seed: int = 0) -> SearchData:
    """Noise images, one quadrant brightened; the label is the quadrant."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 4, (n,), generator=generator)
        x = torch.randn(n, 1, size, size, generator=generator)
        half = size // 2
        for i, label in enumerate(labels.tolist()):
            r, c = divmod(label, 2)
            x[i, 0, r * half:(r + 1) * half, c * half:(c + 1) * half] += 2.0
        return x, labels

    return SearchData(*split(n_train), *split(n_val))


def summary(space: SearchSpace, settings: SearchSettings) -> dict:
    """The search's outcome as plain data: derived arch, choice, probabilities, validation accuracy."""
    result = search(space, quadrant_data(), settings)
    return {"arch": result.arch.encode(), "choice": json.loads(json.dumps(asdict(result.choice))),
            "probabilities": result.probabilities, "val_accuracy": result.val_accuracy}


def _rank(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # two ranks on a small shared machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(summary(SPACE, SETTINGS)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(probabilities: dict) -> torch.Tensor:
    values = [v for stage in probabilities["cells"] for layer in stage for v in layer]
    values += [v for stage in probabilities["widths"] for v in stage] + probabilities["resolution"]
    return torch.tensor(values)


def test_two_process_search_derives_the_single_process_arch(tmp_path: Path) -> None:
    start = time.perf_counter()
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in range(2)]
    single = summary(SPACE, SETTINGS)
    print(f"\n{time.perf_counter() - start:.1f}s", single, ranks, sep="\n")

    assert ranks[0]["probabilities"] == ranks[1]["probabilities"]  # in sync, bit for bit
    assert ranks[0]["choice"] == ranks[1]["choice"] == single["choice"]
    assert ranks[0]["arch"] == ranks[1]["arch"] == single["arch"]
    torch.testing.assert_close(_flat(ranks[0]["probabilities"]), _flat(single["probabilities"]), atol=0.02, rtol=0)
