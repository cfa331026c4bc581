"""The one atomic-write helper: the target is either the old file or the new one, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spaces.atomic import write_atomically, write_text_atomically


def test_writes_creates_the_parent_and_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state.json"
    write_text_atomically(target, '{"generation": 1}')
    write_text_atomically(target, '{"generation": 2}')
    assert target.read_text() == '{"generation": 2}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, target)

    def half_then_fail(temp: Path) -> None:
        temp.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]


def test_the_writer_gets_a_fresh_path_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []

    def save(temp: Path) -> None:
        seen.append(temp)
        assert not temp.exists()
        torch.save({"epoch": 3}, temp)

    write_atomically(tmp_path / "checkpoint.pt", save)
    write_atomically(tmp_path / "checkpoint.pt", save)
    assert seen[0].parent == tmp_path and seen[0] != seen[1]  # unique per call: concurrent writers never collide
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True) == {"epoch": 3}
