"""Training throughput: a plain eager loop vs the project's training loop, same architecture and batch.

Variants, timed interleaved in every round on the same real training images:

- ``eager``: what a user writes first: an NCHW ``ChildNet``, ``F.cross_entropy``,
  an SGD step, torch's default thread count;
- ``eager channels-last``: that loop with only the memory layout changed;
- ``project``: one epoch of :class:`deploy.recipe.Training` over the round's
  batches: channels-last, with the whole recipe's extra work (shift / flip /
  erasing, label smoothing, per-step learning rate, EMA update);
- ``project 1 thread``: the same on one thread (what a tuning trial gets).

Images/s are medians over rounds; ``ratio`` is over ``eager``. Then the claim
"same accuracy": for each of ``--accuracy-seeds`` seeds, ``eager`` and ``eager
channels-last`` train the same batches from the same initial weights for
``--accuracy-steps`` steps; their validation accuracies are printed side by
side with the paired mean difference and its standard error (the layout changes
the order of float operations, not the maths).

    PYTHONPATH=. python benchmarks/bench_train_throughput.py [--arch ARCH|RUN_DIR:N] [--rounds 7] [--batch 128]
        [--accuracy-steps 150] [--accuracy-seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from deploy.recipe import Hyperparameters, Training
from pipeline.config import load_config
from pipeline.data import load_dataset
from pipeline.search_job import resolve_dataset
from pipeline.train_cli import resolve_arch
from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.modules import ChildNet
from spaces.supernet import resize_input
from spaces.training import evaluate

# About 9.5M MAdds / 289K params in the Fashion-MNIST preset's space (configs/fashion-mnist_space.yaml).
DEFAULT_ARCH = ("input=1x28 stem=cn_k3_c16_relu6 stages=ds_k3_c16_relu6_nores|ir_r2_k3_s2_e3_c32_relu6|"
                "ir_r3_k5_s2_e3_c48_relu6|ir_r3_k3_s2_e6_c80_relu6 head=cn_k1_c256_relu6 classes=10")
HPARAMS = Hyperparameters(lr=0.1, weight_decay=5e-5, label_smoothing=0.1, augmentation=0.1)
BATCHES_PER_ROUND = 6


def eager_step(net: torch.nn.Module, channels_last: bool) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """A plain SGD step of ``net`` (converted to channels-last when asked); returns the loss."""
    if channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=HPARAMS.lr, momentum=0.9, nesterov=True,
                                weight_decay=HPARAMS.weight_decay)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="arch string, FILE[:N] or RUN_DIR:N (a run's front)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--accuracy-steps", type=int, default=150)
    parser.add_argument("--accuracy-seeds", type=int, default=5, help="paired seeds of the same-accuracy check")
    args = parser.parse_args()
    arch, _ = resolve_arch(args.arch)
    config = load_config(None, [f"retrain.batch_size={args.batch}", "retrain.flip_probability=0.5",
                                "retrain.erasing_probability=0.3", "retrain.warmup_epochs=1",
                                "retrain.ema_decay=0.999"])
    dataset = load_dataset(resolve_dataset(config))
    x, y = (resize_input(t, arch.input_size) if t.is_floating_point() else t for t in dataset.split("train"))
    x_val, y_val = (resize_input(t, arch.input_size) if t.is_floating_point() else t
                    for t in dataset.split("val", limit=2000))
    threads = torch.get_num_threads()
    cost = arch_cost(arch)
    print(f"{arch.encode()}\n{cost.madds / 1e6:.2f}M MAdds, {cost.params / 1e3:.0f}K params; batch {args.batch}, "
          f"torch {torch.__version__}, {threads} threads by default; median of {args.rounds} interleaved rounds of "
          f"{BATCHES_PER_ROUND} batches")
    chunk = BATCHES_PER_ROUND * args.batch
    rounds = [(x[i * chunk:(i + 1) * chunk], y[i * chunk:(i + 1) * chunk]) for i in range(args.rounds + 1)]

    def project(n_threads: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
        torch.manual_seed(0)
        training = Training(arch, HPARAMS, config.retrain, epochs=100, steps_per_epoch=BATCHES_PER_ROUND)

        def epoch(xs: torch.Tensor, ys: torch.Tensor) -> None:
            torch.set_num_threads(n_threads)
            training.run_epoch(xs, ys)
            torch.set_num_threads(threads)

        return epoch

    def eager(channels_last: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
        torch.manual_seed(0)
        step = eager_step(ChildNet(arch).train(), channels_last)

        def epoch(xs: torch.Tensor, ys: torch.Tensor) -> None:
            for i in range(0, len(xs), args.batch):
                step(xs[i:i + args.batch], ys[i:i + args.batch])

        return epoch

    variants = {"eager": eager(False), "eager channels-last": eager(True), "project": project(threads),
                "project 1 thread": project(1)}
    for run in variants.values():  # warm-up round: allocator, oneDNN primitive caches
        run(*rounds[0])
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for xs, ys in rounds[1:]:
        for name, run in variants.items():
            start = time.perf_counter()
            run(xs, ys)
            rates[name].append(len(xs) / (time.perf_counter() - start))
    base = statistics.median(rates["eager"])
    print(f"\n  {'loop':<22} {'images/s':>9} {'ratio':>6}")
    for name, r in rates.items():
        print(f"  {name:<22} {statistics.median(r):>9.0f} {statistics.median(r) / base:>6.2f}")
    print(f"  ratio project / eager: {statistics.median(rates['project']) / base:.2f}")
    accuracy_check(arch, x, y, x_val, y_val, args.batch, args.accuracy_steps, args.accuracy_seeds)


def accuracy_check(arch: Arch, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                   batch: int, steps: int, seeds: int) -> None:
    """Val accuracy of the eager loop in both layouts, per seed: same init and batches within a seed, paired.

    One seed cannot tell a layout effect from chaos: early in training a change of float order
    alone sends two runs apart by a few points, either way. The paired mean difference and its
    standard error over seeds can.
    """
    print(f"\nsame steps ({steps} x {batch} images), same init and batches per seed: val accuracy")
    print(f"  {'seed':>4} {'NCHW':>7} {'channels-last':>13} {'diff':>7}")
    rows = []
    for seed in range(seeds):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:steps * batch]
        accuracy = {}
        for channels_last in (False, True):
            torch.manual_seed(seed)
            net = ChildNet(arch).train()
            step = eager_step(net, channels_last)
            for i in range(steps):
                picked = order[i * batch:(i + 1) * batch]
                step(x[picked], y[picked])
            net.eval()
            accuracy[channels_last] = evaluate(net, x_val, y_val)
        rows.append((accuracy[False], accuracy[True]))
        print(f"  {seed:>4} {accuracy[False]:>7.4f} {accuracy[True]:>13.4f} {accuracy[True] - accuracy[False]:>+7.4f}")
    diffs = [cl - nchw for nchw, cl in rows]
    error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    print(f"  mean NCHW {statistics.mean(r[0] for r in rows):.4f}, channels-last "
          f"{statistics.mean(r[1] for r in rows):.4f}; paired difference {statistics.mean(diffs):+.4f} "
          f"± {error:.4f} (s.e., {len(diffs)} seeds)")


if __name__ == "__main__":
    main()
