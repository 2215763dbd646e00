"""Symbols under the models of constriction's range coder, and their information in bits.

A model is one of three families: uniform (each symbol's alphabet size), Bernoulli (each symbol's
P(1)) or adaptive, a categorical whose counts start where the caller says and add 1 for every
symbol coded, so the decoder learns them as the encoder did. IEEE floats are coded as their sign
and exponent (adaptive) and mantissa (uniform). Every probability comes from integer counts with +,
x, / and clipping only (no exp or log, which libraries round differently), so it is bit-identical
on every machine. What a .nnc file codes with them is in nncompress.compress.layer_coding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import constriction
import numpy as np

UNIFORM = constriction.stream.model.Uniform()  # parameter: per symbol, its alphabet's size
BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)  # parameter: per symbol, P(1)
ADAPTIVE = constriction.stream.model.Categorical(perfect=False)  # parameter: per symbol, its counts
_CHUNK = 4096  # symbols per encoder call for an adaptive model (bounds the (n, alphabet) array of counts)


@dataclasses.dataclass(frozen=True)
class Op:
    """Symbols coded with one model: "uniform" (params: each symbol's alphabet size), "bernoulli"
    (params: each symbol's P(1)) or "adaptive", a categorical whose counts, one table per context,
    start at `start` and add 1 for every symbol coded (params: each symbol's context)."""

    kind: str
    symbols: np.ndarray
    params: np.ndarray
    start: np.ndarray | None = None

    def _counts(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """An adaptive op in chunks: (symbols, per symbol the counts its context had before it)."""
        assert self.start is not None
        counts = self.start.copy()
        for begin in range(0, len(self.symbols), _CHUNK):
            symbols, contexts = self.symbols[begin : begin + _CHUNK], self.params[begin : begin + _CHUNK]
            onehot = np.zeros((len(symbols), counts.shape[1]))
            onehot[np.arange(len(symbols)), symbols] = 1.0
            before = np.empty_like(onehot)
            for context in np.unique(contexts):
                rows = contexts == context
                seen = np.cumsum(onehot[rows], axis=0)  # integers: the same floats as the decoder's += 1
                before[rows] = counts[context] + (seen - onehot[rows])
                counts[context] += seen[-1]
            yield symbols, before

    def encode(self, encoder: Any) -> None:
        if not len(self.symbols):
            return
        if self.kind == "adaptive":
            for symbols, before in self._counts():
                encoder.encode(symbols.astype(np.int32), ADAPTIVE, before)
        else:
            family = UNIFORM if self.kind == "uniform" else BERNOULLI
            encoder.encode(self.symbols.astype(np.int32), family, self.params)

    def bits(self) -> float:
        """The information of the symbols under the model (the coder comes within a few bytes of it)."""
        if not len(self.symbols):
            return 0.0
        if self.kind == "uniform":
            return float(np.log2(self.params.astype(np.float64)).sum())
        if self.kind == "bernoulli":
            p = np.where(self.symbols.astype(bool), self.params, 1.0 - self.params)
            return float(-np.log2(np.clip(p, 1e-12, 1.0)).sum())
        total = 0.0
        for symbols, before in self._counts():
            total -= float(np.log2(before[np.arange(len(symbols)), symbols] / before.sum(axis=1)).sum())
        return total


def cost(ops: list[Op]) -> float:
    """The information of every op's symbols, in bits."""
    return sum(op.bits() for op in ops)


def adaptive(symbols: np.ndarray, counts: np.ndarray, contexts: np.ndarray | None = None) -> Op:
    """An adaptive op starting from `counts` (contexts x alphabet), which it leaves as the decoder will."""
    contexts = np.zeros(len(symbols), np.int64) if contexts is None else contexts.astype(np.int64)
    op = Op("adaptive", symbols.astype(np.int64), contexts, counts.copy())
    for context in range(counts.shape[0]):
        counts[context] += np.bincount(op.symbols[contexts == context], minlength=counts.shape[1])
    return op


def decode_adaptive(decoder: Any, contexts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The symbols of an adaptive op whose contexts are known in advance; `counts` updated."""
    out = np.empty(len(contexts), np.int64)
    for t, context in enumerate(contexts.tolist()):
        symbol = int(decoder.decode(ADAPTIVE, counts[context : context + 1])[0])
        out[t] = symbol
        counts[context, symbol] += 1
    return out


@dataclasses.dataclass(frozen=True)
class Float:
    """An IEEE float format as the stream codes it: sign and exponent adaptive, mantissa uniform."""

    dtype: str
    uint: str  # the unsigned integer of the same width, for the bit pattern
    exponent: int  # bits
    mantissa: int  # bits
    prior: float  # the count each exponent starts with

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Fresh adaptive counts for the format's signs and exponents."""
        return np.ones((1, 2)), np.full((1, 1 << self.exponent), self.prior)


def float_ops(values: np.ndarray, fmt: Float, counts: tuple[np.ndarray, np.ndarray]) -> list[Op]:
    """Floats of format `fmt`: all signs, all exponents (adaptive, `counts` updated), all mantissas."""
    bits = values.view(fmt.uint).astype(np.int64)
    sign = bits >> (fmt.exponent + fmt.mantissa)
    exponent = (bits >> fmt.mantissa) & ((1 << fmt.exponent) - 1)
    mantissa = bits & ((1 << fmt.mantissa) - 1)
    sizes = np.full(len(bits), 1 << fmt.mantissa, np.int32)
    return [adaptive(sign, counts[0]), adaptive(exponent, counts[1]), Op("uniform", mantissa, sizes)]


def decode_floats(decoder: Any, n: int, fmt: Float, counts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`n` floats coded by float_ops, of format `fmt`; `counts` updated."""
    sign = decode_adaptive(decoder, np.zeros(n, np.int64), counts[0])
    exponent = decode_adaptive(decoder, np.zeros(n, np.int64), counts[1])
    mantissa = decoder.decode(UNIFORM, np.full(n, 1 << fmt.mantissa, np.int32)) if n else np.zeros(0, np.int64)
    bits = (sign << (fmt.exponent + fmt.mantissa)) | (exponent << fmt.mantissa) | mantissa.astype(np.int64)
    return bits.astype(fmt.uint).view(fmt.dtype)


def range_decoder(body: bytes, offset: int) -> Any:
    """A decoder of the range-coded stream that fills `body` from `offset` (32-bit words, little-endian)."""
    if (len(body) - offset) % 4:
        raise ValueError("the coded stream is not whole 32-bit words")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(body, "<u4", offset=offset).astype(np.uint32))
