"""Continuity across searches: the weight pool round-trips bit-exactly, logits start from a prior, warm starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spaces.search import SearchSettings, WarmStart, search
from spaces.space import SearchSpace
from spaces.supernet import ArchChoice, DenseNASSupernet, DMaskingSupernet, Supernet
from tests.spaces.tiny_space import TINY_SPACE, quadrant_data, tiny_space

SUPERNETS = [DMaskingSupernet, DenseNASSupernet]


def _other_space() -> SearchSpace:
    """The tiny space with another cell beside layer (0, 0)'s second one, and a wider last stage."""
    data = {**TINY_SPACE, "stages": [dict(st) for st in TINY_SPACE["stages"]]}
    data["stages"][0]["layers"] = [["ir_k5_e6_relu", "ir_k3_e3_se0.25_hswish"], *data["stages"][0]["layers"][1:]]
    data["stages"][1]["widths"] = [12, 16, 24, 32]
    return SearchSpace.from_dict(data)


def _trained(cls: type[Supernet]) -> Supernet:
    net = cls(tiny_space())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh net has
    return net


@pytest.mark.parametrize("cls", SUPERNETS)
def test_a_cell_offered_again_starts_from_its_learned_weights_bit_exact(cls: type[Supernet]) -> None:
    source = _trained(cls)
    pool = source.cell_weights()
    target = cls(_other_space())
    loaded = target.load_cell_weights(pool)
    assert loaded >= 3  # stem, head, classifier, and the cells both spaces offer at the same place
    # the shared cell (stage 0, layer 0, index 1 in both spaces) computes what it computed in the source
    choice = ArchChoice(cells=((1, 0), (0, 0)), widths=(1, 1), resolution=1)
    x = torch.randn(4, 1, 12, 12)
    source.eval(), target.eval()
    assert torch.equal(source.child(choice)(x), target.child(choice)(x))


@pytest.mark.parametrize("cls", SUPERNETS)
def test_cells_the_pool_lacks_keep_their_initialisation_and_wider_tensors_keep_their_tail(cls) -> None:
    torch.manual_seed(1)
    fresh = cls(_other_space())
    torch.manual_seed(1)
    target = cls(_other_space())
    target.load_cell_weights(_trained(cls).cell_weights())
    new_cell = [k for k in fresh.cell_weights() if k.endswith("/ir_k5_e6_relu")]
    assert new_cell
    for key in new_cell:  # offered only by the new space: untouched
        for name, tensor in fresh.cell_weights()[key].items():
            assert torch.equal(tensor, target.cell_weights()[key][name])
    head_in = target.cell_weights()["head"]  # wider input (32 > 24): the extra channels keep their init
    fresh_head = fresh.cell_weights()["head"]
    weight = next(k for k in head_in if k.endswith("weight") and head_in[k].dim() == 4)
    assert torch.equal(head_in[weight][:, 24:], fresh_head[weight][:, 24:])
    assert not torch.equal(head_in[weight][:, :24], fresh_head[weight][:, :24])


def test_prior_logits_are_set_and_a_wrong_shape_is_refused() -> None:
    net = DMaskingSupernet(tiny_space())
    logits = [[[0.5 * k for k in range(len(p))] for p in stage] for stage in net.stage_op_logits()]
    net.set_cell_logits(logits)
    assert [[p.tolist() for p in stage] for stage in net.stage_op_logits()] == logits
    with pytest.raises(ValueError, match="2 prior logits for a layer of 3 choices"):
        net.set_cell_logits([[[0.0, 0.0], [0.0, 0.0]]])


def test_a_warm_started_search_begins_where_the_last_one_ended(tmp_path: Path) -> None:
    data = quadrant_data(n_train=128)
    settings = SearchSettings(epochs=2, warmup_epochs=1, batch_size=32, lr=0.1, arch_lr=0.05, finetune_epochs=0,
                              target=2e5, derive_ranked=2, derive_samples=16, seed=0)
    first = search(tiny_space(), data, replace(settings, epochs=8), weights_out=tmp_path / "cells.pt")
    pool = torch.load(tmp_path / "cells.pt", weights_only=True)
    assert first.warm_started == 0 and "0/0/ds_k3_relu" in pool
    cold = search(tiny_space(), data, replace(settings, epochs=2, seed=1))
    warm = search(tiny_space(), data, replace(settings, epochs=2, seed=1), warm_start=WarmStart(weights=pool))
    assert warm.warm_started == len(pool)
    # starting from trained weights, the first epoch's loss is far below a fresh start's
    assert warm.history[0]["train_loss"] < 0.8 * cold.history[0]["train_loss"]


def test_a_kernel_mutant_keeps_its_parents_centre_taps() -> None:
    from spaces.modules import build_op
    from spaces.space import cell_op
    from spaces.supernet.layers import copy_overlap

    parent = build_op(cell_op("ir_k3_e3_relu", 8, 8, 1))
    mutant = build_op(cell_op("ir_k5_e3_relu", 8, 8, 1))
    before = mutant.dw[0].weight.detach().clone()
    copy_overlap(parent.state_dict(), mutant)
    assert torch.equal(mutant.dw[0].weight[:, :, 1:4, 1:4], parent.dw[0].weight)
    assert torch.equal(mutant.dw[0].weight[:, :, 0], before[:, :, 0])  # the new outer ring keeps its init
    assert torch.equal(mutant.pw[0].weight, parent.pw[0].weight)  # 1x1 convs and BN: the same shapes
