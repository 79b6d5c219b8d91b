import pytest

from tapeout.perf.cost import Cost
from tapeout.workloads.ops import AllGather, AllReduce, Attention, Elementwise, Gather, Matmul, SendRecv


def test_matmul_flops_and_bytes():
    op = Matmul(m=3, n=5, k=7, groups=2, precision="fp8", out_precision="bf16")
    assert op.flops == 2 * 3 * 5 * 7 * 2
    assert op.bytes == 2 * ((3 * 7 + 7 * 5) * 1 + 3 * 5 * 2)


def test_attention_flops_match_flash_attention_counting():
    b, s, h, d = 2, 1024, 8, 64
    full = Attention(batch=b, q_len=s, kv_len=s, heads=h, kv_heads=h, head_dim=d)
    assert full.flops == 4 * b * s * s * h * d
    causal = Attention(batch=b, q_len=s, kv_len=s, heads=h, kv_heads=h, head_dim=d, causal=True)
    assert causal.flops == pytest.approx(full.flops / 2, rel=2 / s)
    bwd = Attention(batch=b, q_len=s, kv_len=s, heads=h, kv_heads=h, head_dim=d, backward=True)
    assert bwd.flops == 2.5 * full.flops


def test_decode_attention_reads_the_kv_cache_once_per_kv_head():
    op = Attention(batch=4, q_len=1, kv_len=1000, heads=64, kv_heads=8, head_dim=128, kv_precision="fp8")
    kv = 4 * 1000 * 8 * 256 * 1
    q_and_o = 2 * 4 * 64 * 128 * 2
    assert op.bytes == kv + q_and_o
    with pytest.raises(ValueError, match="kv_heads"):
        Attention(batch=1, q_len=1, kv_len=1, heads=6, kv_heads=4, head_dim=8)


def test_memory_ops_bytes():
    triad = Elementwise(elements=100, reads=2, writes=1, flops_per_element=2, precision="fp32")
    assert (triad.bytes, triad.flops) == (1200, 200)
    g = Gather(lookups=10, dim=4, rows=100, outputs=2, precision="fp32")
    assert g.bytes == (10 + 2) * 16


def test_collective_wire_bytes_follow_the_ring():
    s, n = 1000.0, 8
    assert AllReduce(ranks=n, bytes_per_rank=s).bytes == 2 * (n - 1) / n * s
    assert AllGather(ranks=n, bytes_per_rank=s).bytes == (n - 1) / n * s
    assert SendRecv(ranks=2, bytes_per_rank=s).bytes == s
    assert AllReduce(ranks=n, bytes_per_rank=s).bus_factor == 2 * (n - 1) / n


def test_cost_is_additive_and_scales():
    a = Cost.of(2.0, "compute", flops=10.0)
    b = Cost.of(1.0, "memory", dram_bytes=8.0)
    total = a + b
    assert (total.time_s, total.flops, total.dram_bytes) == (3.0, 10.0, 8.0)
    assert total.compute_s + total.memory_s + total.network_s + total.latency_s == total.time_s
    assert total.bound == "compute"
    assert (3 * b).time_s == 3.0
    assert (b * 3).bound == "memory"
    with pytest.raises(AttributeError):
        a.time_s = 1.0  # type: ignore[misc]
