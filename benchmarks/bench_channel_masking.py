"""Channel search by masking vs explicit per-width branches: time and memory as width options grow.

FBNetV2/DMaskingNAS search a layer's width by computing one feature map at the
largest width and multiplying it by a Gumbel-weighted mixture of channel masks
(:func:`spaces.supernet.channel_mask`), so a step should cost about the same for
2 or 32 width options. The FBNet-style alternative runs one conv per width,
zero-pads each output to the largest width and sums them with the same weights,
so its cost grows with the number (and sum) of widths. Both stacks here are the
same 3 conv-BN-ReLU layers; only the width mechanism differs.

Time: median forward+backward step (network and architecture gradients), all
variants interleaved in every round. Memory: bytes autograd saves for backward
(``saved_tensors_hooks``, counted once per storage), which is what a training
step holds at its peak besides parameters and is deterministic on any device.

    PYTHONPATH=. python benchmarks/bench_channel_masking.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.measure import saved_bytes
from spaces.supernet import channel_mask, gumbel_softmax

OPTIONS = (2, 4, 8, 16, 32)


def even_widths(k: int, low: int = 8, high: int = 64) -> list[int]:
    """``k`` distinct integer widths evenly spaced from ``low`` to ``high`` inclusive."""
    widths = torch.linspace(low, high, k).round().int().tolist()
    assert len(set(widths)) == k, widths
    return widths


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class WidthStack(nn.Module):
    """Layers whose output width is searched over ``widths``; subclasses say how one layer mixes them."""

    def __init__(self, widths: list[int], cin: int, layers: int) -> None:
        super().__init__()
        self.widths, self.max = widths, widths[-1]
        self.logits = nn.Parameter(torch.zeros(layers, len(widths)))
        self.cins = [cin] + [self.max] * (layers - 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for i in range(len(self.cins)):
            x = self.layer(i, x, gumbel_softmax(self.logits[i], 1.0, generator))
        return x

    def layer(self, i: int, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MaskedStack(WidthStack):
    """DMaskingNAS: one max-width conv per layer, output times the mixed channel mask."""

    def __init__(self, widths: list[int], cin: int, layers: int) -> None:
        super().__init__(widths, cin, layers)
        self.convs = nn.ModuleList(conv_bn_relu(c, self.max) for c in self.cins)

    def layer(self, i: int, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.convs[i](x) * channel_mask(self.widths, weights, self.max)[None, :, None, None]


class ExplicitStack(WidthStack):
    """FBNet-style: one conv per width option, weighted, zero-padded to max width, summed."""

    def __init__(self, widths: list[int], cin: int, layers: int) -> None:
        super().__init__(widths, cin, layers)
        self.branches = nn.ModuleList(nn.ModuleList(conv_bn_relu(c, w) for w in widths) for c in self.cins)

    def layer(self, i: int, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # Weighting before padding saves only each branch's own channels for backward: the cheaper order.
        return sum(F.pad(g * branch(x), (0, 0, 0, 0, 0, self.max - w))
                   for g, w, branch in zip(weights, self.widths, self.branches[i]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (every variant once per round)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=16, help="input height and width")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--in-channels", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.in_channels, args.size, args.size)
    nets = {(k, kind): cls(even_widths(k), args.in_channels, args.layers)
            for k in OPTIONS for kind, cls in (("masked", MaskedStack), ("explicit", ExplicitStack))}

    def step(net: WidthStack) -> Callable[[], torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        return lambda: net(x, generator).square().mean()

    def timed(net: WidthStack) -> float:
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step(net)().backward()
        return time.perf_counter() - start

    memory = {key: saved_bytes(step(net)) for key, net in nets.items()}  # also the warm-up
    times: dict[tuple[int, str], list[float]] = {key: [] for key in nets}
    for _ in range(args.repeats):
        for key, net in nets.items():
            times[key].append(timed(net))
    ms = {key: 1e3 * statistics.median(t) for key, t in times.items()}

    print(f"{args.layers} conv-BN-ReLU layers, input {args.batch}x{args.in_channels}x{args.size}x{args.size}, "
          f"widths evenly spaced 8..64; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved forward+backward steps")
    print("memory = bytes saved for backward (unique storages)\n")
    print(f"{'k':>3} {'masked ms':>10} {'explicit ms':>12} {'masked MB':>10} {'explicit MB':>12} "
          f"{'masked t/k2':>12} {'explicit t/k2':>14} {'masked m/k2':>12} {'explicit m/k2':>14} {'expl/mask t':>12}")
    for k in OPTIONS:
        row = [ms[k, "masked"], ms[k, "explicit"], memory[k, "masked"] / 1e6, memory[k, "explicit"] / 1e6]
        print(f"{k:>3} {row[0]:>10.2f} {row[1]:>12.2f} {row[2]:>10.2f} {row[3]:>12.2f} "
              f"{row[0] / ms[2, 'masked']:>12.2f} {row[1] / ms[2, 'explicit']:>14.2f} "
              f"{memory[k, 'masked'] / memory[2, 'masked']:>12.2f} "
              f"{memory[k, 'explicit'] / memory[2, 'explicit']:>14.2f} {row[1] / row[0]:>12.2f}")


if __name__ == "__main__":
    main()
