"""Segment keys shared by Python and DuckDB SQL, and the fingerprint of a set of keys.

A segment's key is the first 16 hex digits of md5(segment_id), read as an unsigned 64-bit
integer. DuckDB computes the same number (`key_sql()`), so the store can ask SQL for the keys a
filter admits, or for the fingerprint of the rows it holds, without a new column. (DuckDB's
md5_number_lower reads bytes 8-15 little-endian, which its name does not suggest; the hex form
reads the same in any engine.) Two of a million ids share a key with odds of about 3e-8.

The fingerprint — count, sum mod 2^64 and xor of the keys — is what an index records of the rows
it holds; `fingerprint_sql` gives the store's side of the comparison in one cheap scan.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

# The key of a segment id in DuckDB SQL; `key_of` computes the same in Python.
KEY_SQL = "('0x' || md5({col})[1:16])::UBIGINT"


def key_of(segment_id: str) -> int:
    # The first 8 bytes big-endian: the first 16 hex digits, without formatting and parsing hex.
    return int.from_bytes(hashlib.md5(segment_id.encode("utf-8")).digest()[:8], "big")


def keys_for(segment_ids: Iterable[str]) -> np.ndarray:
    return np.fromiter((key_of(s) for s in segment_ids), dtype=np.uint64)


def key_sql(col: str = "segment_id") -> str:
    return KEY_SQL.format(col=col)


def fingerprint_sql(relation: str, id_column: str = "segment_id") -> str:
    """SQL giving (count, key_sum, key_xor) of the keys of `relation`'s rows — the same numbers as
    Fingerprint.of(keys). `relation` is a table name or a parenthesised subquery."""
    return (f"SELECT count(*)::UBIGINT, coalesce(sum(k) % {1 << 64}, 0)::UBIGINT, "
            f"coalesce(bit_xor(k), 0)::UBIGINT FROM (SELECT {key_sql(id_column)} AS k "
            f"FROM {relation})")


@dataclass(frozen=True)
class Fingerprint:
    """Which rows an index holds, cheap to compute on both sides: count, sum mod 2^64, xor."""
    count: int
    key_sum: int
    key_xor: int

    @classmethod
    def of(cls, keys: np.ndarray) -> "Fingerprint":
        k = np.asarray(keys, dtype=np.uint64)
        # uint64 addition wraps, which is exactly the sum mod 2^64.
        return cls(int(k.size), int(np.add.reduce(k, dtype=np.uint64)) if k.size else 0,
                   int(np.bitwise_xor.reduce(k)) if k.size else 0)

    @classmethod
    def from_row(cls, row) -> "Fingerprint":
        return cls(*(int(v or 0) for v in row))
