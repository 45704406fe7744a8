"""The structured random rotation of the rotated optimizer: ``BlockRotation``.

Large dimensions use a ``BlockRotation``: a fixed random permutation then one
Haar-random rotation of size ``block_size`` applied block-diagonally (plus a
residual block when ``block_size`` does not divide the size), O(b^2 + n)
memory and one batched matmul: Zhang, Maes et al. (NeurIPS 2025) App. A.1 (eq. 1, one R_n
shared by the blocks of a random partition), A.3 (the residual block from SO(p)), B.1
(n = 768, drawn once at the start of training, shared across blocks). Haar matrices come
from the QR trick (App. A.2; reflections are kept, as Adam is reflection-equivariant).
"""

from __future__ import annotations

import torch
from torch import Tensor


def haar_rotation(
    n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """A Haar-distributed orthogonal (n, n) matrix: QR of a Gaussian matrix, each column of Q
    multiplied by the sign of R's diagonal entry (without it Q is not Haar)."""
    gaussian = torch.randn(n, n, generator=generator, dtype=torch.float64, device=generator.device)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


class BlockRotation:
    """The orthogonal map M = blockdiag(B, ..., B, C) P on the last dimension of a tensor.

    P permutes coordinates (``x[..., perm]``), B (b, b) rotates each full block of
    b coordinates and C (r, r) the residual r = n mod b coordinates. ``apply`` is
    ``x -> M x`` and ``apply_transpose`` is ``y -> M^T y`` for vectors along the last axis.
    """

    def __init__(self, perm: Tensor, block: Tensor, residual: Tensor | None = None) -> None:
        n, b = perm.numel(), block.shape[0]
        r = 0 if residual is None else residual.shape[0]
        if block.shape != (b, b) or (residual is not None and residual.shape != (r, r)):
            raise ValueError("rotation blocks must be square")
        if b == 0 or (n - r) % b != 0:
            raise ValueError(f"{n} coordinates do not split into blocks of {b} plus {r}")
        self.perm = perm
        self.inverse_perm = torch.argsort(perm)
        self.block = block
        self.residual = residual
        self.n_blocks = (n - r) // b

    @classmethod
    def haar(
        cls,
        n: int,
        block_size: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> BlockRotation:
        """A random permutation then Haar rotations of size min(block_size, n) (and residual)."""
        if n < 1 or block_size < 1:
            raise ValueError(f"need n >= 1 and block_size >= 1, got {n} and {block_size}")
        b = min(block_size, n)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        block = haar_rotation(b, generator)
        residual = haar_rotation(n % b, generator) if n % b else None
        return cls(perm, block, residual).to(dtype=dtype, device=device)

    @classmethod
    def dense(cls, matrix: Tensor) -> BlockRotation:
        """A single dense orthogonal matrix, no permutation."""
        return cls(torch.arange(matrix.shape[0], device=matrix.device), matrix)

    @property
    def n(self) -> int:
        return self.perm.numel()

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> BlockRotation:
        """The same rotation with its matrices cast/moved."""
        residual = None if self.residual is None else self.residual.to(device, dtype)
        return BlockRotation(self.perm.to(device), self.block.to(device, dtype), residual)

    def apply(self, x: Tensor) -> Tensor:
        """M x along the last dimension."""
        return self._blocks(x[..., self.perm], transpose=False)

    def apply_transpose(self, y: Tensor) -> Tensor:
        """M^T y along the last dimension (the inverse of ``apply``)."""
        return self._blocks(y, transpose=True)[..., self.inverse_perm]

    def matrix(self) -> Tensor:
        """M as a dense (n, n) matrix (for tests and small probes)."""
        eye = torch.eye(self.n, dtype=self.block.dtype, device=self.block.device)
        return self.apply(eye).mT

    def _blocks(self, x: Tensor, transpose: bool) -> Tensor:
        split = self.n_blocks * self.block.shape[0]
        block = self.block if transpose else self.block.mT
        head = (x[..., :split].unflatten(-1, (self.n_blocks, -1)) @ block).flatten(-2)
        if self.residual is None:
            return head
        residual = self.residual if transpose else self.residual.mT
        return torch.cat([head, x[..., split:] @ residual], dim=-1)
