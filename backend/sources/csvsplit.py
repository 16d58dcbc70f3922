"""Byte-exact CSV record boundaries (quote-aware, vectorised), so chunks can carry rows exactly as in the file."""

from __future__ import annotations

import numpy as np

_QUOTE, _LF = ord('"'), ord("\n")
_BLOCK = 32 * 1024 * 1024


def record_ends(data: bytes) -> np.ndarray:
    """End offsets (exclusive, after the newline) of every CSV record in `data`.

    A newline ends a record only outside quotes: quoted fields may hold commas, newlines and doubled
    quotes ("" toggles the quote state twice, so parity still works). Works block by block so a
    500 MB file never needs a 4 GB cumulative-sum array. A last record without a newline ends at len(data)."""
    view = np.frombuffer(data, dtype=np.uint8)
    ends: list[np.ndarray] = []
    parity = 0
    for offset in range(0, len(view), _BLOCK):
        block = view[offset : offset + _BLOCK]
        quotes = np.cumsum(block == _QUOTE, dtype=np.int64) + parity
        newline = np.flatnonzero((block == _LF) & ((quotes & 1) == 0))
        ends.append(newline + offset + 1)
        parity = int(quotes[-1] & 1) if len(quotes) else parity
    out = np.concatenate(ends) if ends else np.array([], dtype=np.int64)
    if len(data) and (not len(out) or out[-1] != len(data)):
        out = np.append(out, len(data))
    return out
