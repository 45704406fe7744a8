"""BlockRotation and haar_rotation: orthogonal, reproducible, Haar-distributed signs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftbench.training.block_rotation import BlockRotation, haar_rotation


def test_haar_rotation_is_orthogonal_and_reproducible() -> None:
    for n in (1, 2, 7):
        q = haar_rotation(n, torch.Generator().manual_seed(3))
        torch.testing.assert_close(q @ q.T, torch.eye(n, dtype=q.dtype))
        torch.testing.assert_close(q, haar_rotation(n, torch.Generator().manual_seed(3)))


def test_haar_rotation_has_unbiased_signs() -> None:
    """Under Haar measure Q[0, 0] is symmetric about 0; plain QR makes it one-signed."""
    generator = torch.Generator().manual_seed(0)
    corners = torch.tensor([haar_rotation(3, generator)[0, 0].item() for _ in range(500)])
    assert corners.mean().abs() < 0.1
    assert (corners > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_block_rotation_matches_explicit_matrix() -> None:
    rotation = BlockRotation.haar(10, 4, torch.Generator().manual_seed(1))
    m = rotation.matrix()
    torch.testing.assert_close(m @ m.T, torch.eye(10, dtype=m.dtype))
    b, c = rotation.block.numpy(), rotation.residual.numpy()
    blocks = np.zeros((10, 10))
    blocks[:4, :4], blocks[4:8, 4:8], blocks[8:, 8:] = b, b, c
    permutation = np.eye(10)[rotation.perm.numpy()]
    np.testing.assert_allclose(m.numpy(), blocks @ permutation, atol=1e-12)
    x = torch.randn(3, 10, dtype=torch.float64)
    torch.testing.assert_close(rotation.apply(x), x @ m.T)
    torch.testing.assert_close(rotation.apply_transpose(rotation.apply(x)), x)


def test_block_size_one_is_a_signed_permutation() -> None:
    m = BlockRotation.haar(6, 1, torch.Generator().manual_seed(2)).matrix()
    torch.testing.assert_close(m.abs().sum(0), torch.ones(6, dtype=m.dtype))
    torch.testing.assert_close(m.abs().sum(1), torch.ones(6, dtype=m.dtype))
    assert set(m.abs().unique().tolist()) == {0.0, 1.0}
