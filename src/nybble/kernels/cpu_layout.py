"""The blocked weight layout of nybble's C++ CPU kernels (``nybble_cpu``), made from and turned back
into the plain layout with pure torch (exact, done once at load/quantize time; never saved).

Columns (output features, N) are grouped in blocks of 16 (``Nb = ceil(N / 16)``; padded columns
have code 0, scale 0, zero point 0), and blocks in tiles of ``TILE_BLOCKS = 4`` (the last tile has
``w = Nb - 4 * (ntiles - 1)`` blocks). Every array stores a tile's blocks interleaved along its
second dimension, so that the GEMV, which runs over whole tiles for all of K, reads each tile of
each array as one sequential stream: a tensor of shape ``(Nb, X, Y)`` below holds, in memory, the
tiles one after the other, each in the order ``(X, w, Y)`` (``tile_interleave``). For K input
features, G groups of ``gl`` features:

* ``qw``: uint8, shape ``(Nb, K/8, 64)`` (interleaved as above). Chunk ``c`` of block ``b`` covers
  ``k = 8c .. 8c+7`` of the block's 16 columns; byte ``4*col + j`` holds ``code[8c+j]`` in its low
  nibble and ``code[8c+4+j]`` in its high nibble (``j = 0..3``). Read as 16 int32 lanes, lane
  ``col`` holds the 4 consecutive activations' partners of a ``vpdpbusd`` in each nibble half.
* ``scale``: shape ``(Nb, G, 16)`` (interleaved) in the plain scale dtype (fp32 / bf16 / fp16).
* ``zero_point``: int8 ``(Nb, G, 16)`` (interleaved; ``int`` domain only).
* ``wcomp``: int32 ``(Nb, G, 16)`` (interleaved) = sum of the group's codes - ``gl`` * zero point
  (8 in the ``none`` domain); the compensation term of A8W4 with asymmetric activations (else absent).

The C++ side addresses these through ``PackedView::codes / code_stride / meta`` (csrc/kernels.h).
"""
from __future__ import annotations

import torch

from .. import primitives as P

BLOCK_N = 16
#: 16-column blocks per tile (csrc/kernels.h PackedView::kTileBlocks)
TILE_BLOCKS = 4


def num_blocks(n: int) -> int:
    return (n + BLOCK_N - 1) // BLOCK_N


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero-pad dim 0 of ``t`` to ``rows``."""
    if t.shape[0] == rows:
        return t
    pad = t.new_zeros((rows - t.shape[0],) + tuple(t.shape[1:]))
    return torch.cat([t, pad], dim=0)


def tile_interleave(t: torch.Tensor) -> torch.Tensor:
    """Block-major ``(Nb, X, Y)`` -> the same shape whose memory holds each tile of ``TILE_BLOCKS``
    blocks (the last possibly narrower) in the order ``(X, w, Y)``."""
    nb = t.shape[0]
    full = nb // TILE_BLOCKS * TILE_BLOCKS
    parts = []
    if full:
        parts.append(t[:full].reshape(full // TILE_BLOCKS, TILE_BLOCKS, *t.shape[1:]).transpose(1, 2).reshape(-1))
    if full < nb:
        parts.append(t[full:].transpose(0, 1).reshape(-1))
    return torch.cat(parts).reshape(t.shape) if parts else t.clone()


def tile_deinterleave(t: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`tile_interleave`: ``(Nb, X, Y)`` in tile order -> block-major."""
    nb, x, y = t.shape
    full = nb // TILE_BLOCKS * TILE_BLOCKS
    flat = t.reshape(-1)
    parts = []
    if full:
        parts.append(flat[:full * x * y].reshape(full // TILE_BLOCKS, x, TILE_BLOCKS, y).transpose(1, 2)
                     .reshape(full, x, y))
    if full < nb:
        parts.append(flat[full * x * y:].reshape(x, nb - full, y).transpose(0, 1))
    return torch.cat(parts).contiguous() if parts else t.clone()


def _to_blocks(t: torch.Tensor) -> torch.Tensor:
    """``(N, G)`` -> ``(Nb, G, 16)`` (padded with zeros, tile-interleaved)."""
    n, g = t.shape
    nb = num_blocks(n)
    return tile_interleave(_pad_rows(t, nb * BLOCK_N).reshape(nb, BLOCK_N, g).transpose(1, 2))


def _from_blocks(t: torch.Tensor, n: int) -> torch.Tensor:
    """``(Nb, G, 16)`` (tile-interleaved) -> ``(N, G)``."""
    t = tile_deinterleave(t)
    nb, g, _ = t.shape
    return t.transpose(1, 2).reshape(nb * BLOCK_N, g)[:n].clone(memory_format=torch.contiguous_format)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """codes uint8 ``(N, K)`` 0..15 -> ``qw`` uint8 ``(Nb, K/8, 64)`` (tile-interleaved)."""
    n, k = codes.shape
    nb = num_blocks(n)
    c = _pad_rows(codes.to(torch.uint8), nb * BLOCK_N).reshape(nb, BLOCK_N, k // 8, 2, 4)
    byte = c[:, :, :, 0, :] | (c[:, :, :, 1, :] << 4)             # (Nb, 16, K/8, 4)
    return tile_interleave(byte.permute(0, 2, 1, 3).reshape(nb, k // 8, 4 * BLOCK_N))


def unpack_codes(qw: torch.Tensor, n: int) -> torch.Tensor:
    """``qw`` uint8 ``(Nb, K/8, 64)`` (tile-interleaved) -> codes uint8 ``(N, K)``."""
    qw = tile_deinterleave(qw)
    nb, k8, _ = qw.shape
    b = qw.reshape(nb, k8, BLOCK_N, 4)
    c = torch.stack([b & 0xF, b >> 4], dim=3)                      # (Nb, K/8, 16, 2, 4)
    return c.permute(0, 2, 1, 3, 4).reshape(nb * BLOCK_N, k8 * 8)[:n].contiguous()


def weight_compensation(codes: torch.Tensor, zero_point: torch.Tensor | None, gl: int) -> torch.Tensor:
    """int32 ``(N, G)``: sum of each group's codes - ``gl`` * zero point."""
    n, k = codes.shape
    sums = codes.to(torch.int32).reshape(n, k // gl, gl).sum(-1, dtype=torch.int32)
    zw = torch.full_like(sums, P.SYMMETRIC_ZERO) if zero_point is None else zero_point.to(torch.int32)
    return sums - gl * zw


def prepack(qdata: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, group_size: int,
            with_wcomp: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Plain (``qdata`` int32 (N, K/8), ``scale`` (N, G), ``zero_point`` int8 (N, G) | None) ->
    ``(qw, scale, zero_point, wcomp)`` in the blocked layout (absent parts are None)."""
    codes = P.unpack_int32(qdata)
    n, k = codes.shape
    gl = P.group_len(group_size, k)
    qw = pack_codes(codes)
    sp = _to_blocks(scale)
    zp = None if zero_point is None else _to_blocks(zero_point.to(torch.int8))
    wc = _to_blocks(weight_compensation(codes, zero_point, gl)) if with_wcomp else None
    return qw, sp, zp, wc


def unpack(qw: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, n: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Exact inverse of :func:`prepack`: ``(qdata int32 (N, K/8), scale (N, G), zero_point (N, G) | None)``."""
    qdata = P.pack_int32(unpack_codes(qw, n))
    zp = None if zero_point is None else _from_blocks(zero_point, n)
    return qdata, _from_blocks(scale, n), zp
