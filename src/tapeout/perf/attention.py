"""Fused (flash-style) attention cost, forward or backward, causal or not, MHA, GQA or MLA,
prefill or decode.

The kernel is modelled as FlashAttention-2 runs it: one CTA per (sequence, kv head, block of
BLOCK_Q query rows), where the query heads that share a kv head are packed into the rows (as
FlashDecoding and FlashInfer do for GQA); each CTA walks the key blocks of BLOCK_KV it may see
(all of them, or up to the diagonal when causal) and pays a prologue and epilogue worth
`attention_overhead_blocks` key blocks. CTAs fill the cores in waves; when there are fewer CTAs
than cores the key range is split across CTAs (split-KV). A key block costs its matmul FLOPs at
one core's share of the peak times the stack's attention efficiency; the backward pass costs
2.5 times the forward per block (FlashAttention-2, section 3.1). Memory traffic is each operand
once (Q, K, V, O; dO, dQ, dK, dV backward); compute and traffic overlap.
"""

from __future__ import annotations

import math
from functools import lru_cache

from tapeout.perf.common import finish
from tapeout.perf.cost import Cost
from tapeout.perf.rules import cost_rule
from tapeout.perf.system import System
from tapeout.workloads.ops import Attention, OpKind

BLOCK_Q = 128  # query rows per CTA; fewer when there are fewer rows (decode), down to
MIN_BLOCK_Q = 16  # the smallest mma tile height, as FlashDecoding-style kernels use
BLOCK_KV = 128


def _block_q(rows: int) -> int:
    """Query rows per CTA: 128, or the next power of two of fewer rows (at least 16)."""
    return min(BLOCK_Q, max(MIN_BLOCK_Q, 1 << max(0, (rows - 1).bit_length())))


def _kv_block_counts(q_len: int, kv_len: int, group: int, causal: bool) -> tuple[int, int, int]:
    """(query-row blocks, key blocks they visit in all, the most one visits). Rows are (query
    position, head in group) pairs, position-major; the queries are the last q_len of kv_len
    positions, so under a causal mask a block sees the keys up to its last row's position.

    The visits are non-decreasing along the blocks, so the total is counted per key block
    (how many query blocks reach past it) when there are fewer key blocks than query blocks.
    """
    rows = q_len * group
    block_q = _block_q(rows)
    n_q = -(-rows // block_q)
    full = -(-kv_len // BLOCK_KV)
    if not causal:
        return n_q, n_q * full, full
    offset = kv_len - q_len
    longest = min(full, -(-(offset + q_len) // BLOCK_KV))  # the last block sees every query's keys
    if n_q <= full:
        total = 0
        for i in range(n_q):
            last_pos = min(rows, (i + 1) * block_q) - 1
            total += min(full, -(-(offset + last_pos // group + 1) // BLOCK_KV))
        return n_q, total, longest
    # Query blocks i < n_q - 1 see at most v keys when (i + 1) x block_q <= (v - offset) x group.
    total = 0
    for c in range(full):
        v = c * BLOCK_KV
        within = min(n_q - 1, max(0, (v - offset) * group // block_q)) + (offset + q_len <= v)
        total += n_q - within
    return n_q, total, longest


@cost_rule(OpKind.ATTENTION)
def attention_cost(op: Attention, system: System) -> Cost:
    """Cost of one fused attention call.

    >>> from tapeout.hardware import get_chip
    >>> sys = System.of(get_chip("h100-sxm"))
    >>> decode = Attention(batch=64, q_len=1, kv_len=4096, heads=64, kv_heads=8, head_dim=128)
    >>> attention_cost(decode, sys).bound
    'memory'
    """
    return _attention_cost(op, system)


@lru_cache(maxsize=16384)
def _attention_cost(op: Attention, system: System) -> Cost:
    chip = system.chip
    cal = system.cal
    group = op.heads // op.kv_heads
    n_q, visits, longest = _kv_block_counts(op.q_len, op.kv_len, group, op.causal)
    ctas = op.batch * op.kv_heads * n_q
    cores = chip.num_cores
    splits = max(1, min(cores // ctas, longest)) if ctas < cores else 1
    work = op.batch * op.kv_heads * visits + ctas * splits * cal.attention_overhead_blocks
    critical = math.ceil(longest / splits) + cal.attention_overhead_blocks
    block_flops = (
        2.0 * _block_q(op.q_len * group) * BLOCK_KV * (op.head_dim + op.dv) * (2.5 if op.backward else 1.0)
    )
    peak = chip.peak_flops(op.precision)
    block_s = block_flops / (peak * cal.attention * system.efficiency / cores)
    compute = max(work / cores, critical) * block_s
    # Split-KV writes partial outputs with their softmax statistics, merged once.
    extra = 2 * splits * op.batch * op.q_len * op.heads * (op.dv + 2) * 4 if splits > 1 else 0
    dram = op.bytes + extra
    memory = dram / (chip.memory_bandwidth * cal.memory)
    return finish(
        system,
        compute_s=compute,
        memory_s=memory,
        overhead_s=cal.kernel_overhead_us * 1e-6 * (3 if op.backward else 1),
        flops=op.flops,
        precision=op.precision,
        dram_bytes=dram,
    )


def schema_attention_flops(
    batch: int, seq_len: int, heads: int, head_dim: int, causal: bool, fwd_bwd: bool
) -> float:
    """FLOPs as FlashAttention's benchmarks count them (the validation schema's convention):
    forward 4 * b * s^2 * h * d, halved when causal; forward plus backward 3.5x that."""
    fwd = 4.0 * batch * seq_len**2 * heads * head_dim / (2 if causal else 1)
    return 3.5 * fwd if fwd_bwd else fwd
