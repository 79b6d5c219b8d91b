import math
import random

import pytest

from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.perf import MissingRuleError, System, graph_cost, op_cost
from tapeout.perf.attention import BLOCK_KV, _block_q, _kv_block_counts
from tapeout.workloads.ops import (
    AllGather,
    AllReduce,
    AllToAll,
    Attention,
    Copy,
    Elementwise,
    Gather,
    Matmul,
    Op,
    ReduceScatter,
    SendRecv,
)

H100 = get_chip("h100-sxm")


def sys1(chip_id="h100-sxm", chips=1, **kw):
    return System.of(get_chip(chip_id), chips, **kw)


def roofline_floor(op: Op, system: System) -> float:
    """The naive reference: no op can beat peak compute or minimum traffic at full bandwidth."""
    chip = system.chip
    return max(op.flops / chip.peak_flops(getattr(op, "precision", "bf16")), op.bytes / chip.memory_bandwidth)


@pytest.mark.parametrize("chip_id", ["h100-sxm", "a100-sxm-80gb", "mi300x", "tpu-v5e", "gaudi3", "mtia-v2"])
@pytest.mark.parametrize(
    ("m", "n", "k"), [(1, 4096, 4096), (64, 8192, 1024), (4096, 4096, 4096), (100, 333, 777)]
)
def test_matmul_never_beats_the_roofline_and_counts_flops_exactly(chip_id, m, n, k):
    s = sys1(chip_id)
    op = Matmul(m=m, n=n, k=k)
    cost = op_cost(op, s)
    assert cost.flops == 2 * m * n * k
    assert cost.time_s >= roofline_floor(op, s)
    assert cost.dram_bytes >= op.bytes
    if s.chip.sram_shared_bytes > 0:  # operands reach the cores through the shared SRAM
        assert cost.sram_bytes >= (m * k + k * n) * 2
    assert cost.compute_s + cost.memory_s + cost.network_s + cost.latency_s == pytest.approx(cost.time_s)


def test_matmul_bounds_and_precision():
    s = sys1()
    assert op_cost(Matmul(m=8192, n=8192, k=8192), s).bound == "compute"
    assert op_cost(Matmul(m=1, n=8192, k=8192), s).bound == "memory"
    bf16 = op_cost(Matmul(m=8192, n=8192, k=8192), s).time_s
    fp8 = op_cost(Matmul(m=8192, n=8192, k=8192, precision="fp8"), s).time_s
    assert 1.6 < bf16 / fp8 < 2.1


def test_wave_quantization_penalises_a_spilled_wave():
    # 132 tiles of 128x256 fill the 132 SMs once; one more row spills into a partial wave that
    # even the best other tile shape cannot hide.
    s = sys1()
    one = op_cost(Matmul(m=128 * 12, n=256 * 11, k=8192), s)
    spilled = op_cost(Matmul(m=128 * 12 + 1, n=256 * 11, k=8192), s)
    assert spilled.time_s > 1.05 * one.time_s
    assert spilled.achieved_flops < 0.95 * one.achieved_flops


def test_grouped_matmul_is_groups_times_the_work():
    s = sys1()
    one = op_cost(Matmul(m=4096, n=4096, k=4096), s)
    eight = op_cost(Matmul(m=4096, n=4096, k=4096, groups=8), s)
    assert eight.flops == 8 * one.flops
    assert eight.time_s == pytest.approx(8 * one.time_s, rel=0.1)


def test_attention_causal_halves_long_prefill_and_decode_is_memory_bound():
    s = sys1()
    kw = {"batch": 1, "q_len": 16384, "kv_len": 16384, "heads": 32, "kv_heads": 8, "head_dim": 128}
    full = op_cost(Attention(**kw), s).time_s
    causal = op_cost(Attention(**kw, causal=True), s).time_s
    assert causal / full == pytest.approx(0.5, abs=0.05)
    decode = Attention(batch=32, q_len=1, kv_len=8192, heads=64, kv_heads=8, head_dim=128)
    cost = op_cost(decode, s)
    assert cost.bound == "memory"
    assert cost.time_s >= roofline_floor(decode, s)
    fp8_kv = op_cost(
        Attention(batch=32, q_len=1, kv_len=8192, heads=64, kv_heads=8, head_dim=128, kv_precision="fp8"), s
    )
    assert fp8_kv.time_s < 0.6 * cost.time_s


def test_attention_backward_costs_more_than_forward():
    s = sys1()
    kw = {"batch": 8, "q_len": 2048, "kv_len": 2048, "heads": 16, "kv_heads": 16, "head_dim": 128}
    fwd, bwd = op_cost(Attention(**kw), s), op_cost(Attention(**kw, backward=True), s)
    assert bwd.flops == 2.5 * fwd.flops
    assert 2.0 < bwd.time_s / fwd.time_s < 3.0


def test_memory_bound_ops_stream_at_calibrated_bandwidth():
    s = sys1()
    n = 2**28
    cost = op_cost(Elementwise(elements=n, reads=2, writes=1, precision="fp32"), s)
    expected = 3 * 4 * n / (H100.memory_bandwidth * s.cal.memory)
    assert cost.time_s == pytest.approx(expected + s.cal.kernel_overhead_us * 1e-6)
    assert op_cost(Copy(size_bytes=1e9), s).dram_bytes == 2e9


def test_gather_moves_whole_access_granules():
    s = sys1()  # 32-byte sectors on NVIDIA
    narrow = op_cost(Gather(lookups=1e6, dim=4, rows=10**7, outputs=1e4, precision="fp32"), s)
    # 16-byte rows still move 32 bytes each
    assert narrow.dram_bytes == pytest.approx(1e6 * 32 + 1e4 * 16)


def ring_time(s: System, n: int, size: float, factor: float, steps: int) -> float:
    bw = s.chip.link_bandwidth * s.cal.link
    return factor * size / bw + steps * s.chip.scale_up.latency_us * 1e-6


def test_ring_collectives_follow_the_alpha_beta_model():
    s = sys1(chips=8)
    size, n = 2.0**30, 8
    ar = op_cost(AllReduce(ranks=n, bytes_per_rank=size, algorithm="ring"), s)
    assert ar.time_s == pytest.approx(ring_time(s, n, size, 2 * (n - 1) / n, 2 * (n - 1)))
    ag = op_cost(AllGather(ranks=n, bytes_per_rank=size), s)
    assert ag.time_s == pytest.approx(ring_time(s, n, size, (n - 1) / n, n - 1))
    rs = op_cost(ReduceScatter(ranks=n, bytes_per_rank=size), s)
    assert rs.time_s == pytest.approx(ag.time_s)
    assert op_cost(AllToAll(ranks=n, bytes_per_rank=size), s).time_s == pytest.approx(ag.time_s)
    assert op_cost(SendRecv(ranks=2, bytes_per_rank=size), s).time_s == pytest.approx(
        ring_time(s, 2, size, 1, 1)
    )


def test_in_switch_reduction_only_where_the_hardware_has_it():
    size = 2.0**32
    h100 = sys1(chips=8)
    auto = op_cost(AllReduce(ranks=8, bytes_per_rank=size), h100)
    ring = op_cost(AllReduce(ranks=8, bytes_per_rank=size, algorithm="ring"), h100)
    assert auto.time_s < ring.time_s
    with pytest.raises(TapeoutError, match=r"nvls.*not available.*ring, tree"):
        op_cost(AllReduce(ranks=8, bytes_per_rank=size, algorithm="nvls"), sys1("a100-sxm-80gb", chips=8))


def test_crossing_nodes_is_bound_by_the_nics():
    size = 2.0**32
    one_node = op_cost(AllReduce(ranks=8, bytes_per_rank=size), sys1(chips=8))
    four_nodes = op_cost(AllReduce(ranks=32, bytes_per_rank=size), sys1(chips=32))
    assert four_nodes.time_s > one_node.time_s
    assert four_nodes.network_bytes > 0
    # the inter-node ring carries 1/8 of the data per NIC; the phases overlap, latencies add
    nic = H100.nic_bandwidth * sys1().cal.link
    inter = 2 * 3 / 4 * size / 8 / nic
    assert four_nodes.time_s == pytest.approx(max(inter, one_node.time_s), rel=0.01)
    slow = op_cost(AllReduce(ranks=32, bytes_per_rank=size), sys1(chips=32, scale_out_gbit_s_per_chip=100))
    assert slow.time_s == pytest.approx(4 * four_nodes.time_s, rel=0.05)


def test_collectives_reject_impossible_setups():
    with pytest.raises(TapeoutError, match="16 ranks on a system of 8"):
        op_cost(AllReduce(ranks=16, bytes_per_rank=1e6), sys1(chips=8))
    with pytest.raises(TapeoutError, match="scale-out network"):
        op_cost(AllReduce(ranks=4, bytes_per_rank=1e6), sys1("mtia-v2", chips=4))


def test_a_missing_rule_fails_loudly_naming_the_op():
    class Mystery(Op):
        kind = None  # type: ignore[assignment]

    with pytest.raises(MissingRuleError, match="Mystery"):
        op_cost(Mystery(), sys1())


def test_graph_cost_adds():
    s = sys1()
    ops = [Matmul(m=1024, n=1024, k=1024), Elementwise(elements=1e6), Matmul(m=1024, n=1024, k=1024)]
    total = graph_cost(ops, s)
    assert total.time_s == pytest.approx(sum(op_cost(o, s).time_s for o in ops))
    assert total.flops == sum(o.flops for o in ops)
    assert total.energy_j > 0
    assert math.isfinite(total.energy_j)


def test_energy_is_physical_flops_plus_dram_bytes():
    """One energy model: a FLOP at the physical figure of its format (8-bit cheaper than 16-bit),
    a DRAM byte at the chip's memory type; collectives charge nothing."""
    from tapeout.perf.energy import PJ, dram_pj_per_byte, flop_pj

    s = sys1()
    for precision in ("bf16", "fp8"):
        cost = op_cost(Matmul(m=8192, n=8192, k=8192, precision=precision), s)
        expected = cost.flops * flop_pj(H100, precision) * PJ + cost.dram_bytes * dram_pj_per_byte(H100) * PJ
        assert cost.energy_j == pytest.approx(expected)
    assert flop_pj(H100, "fp8") < flop_pj(H100, "bf16")
    assert op_cost(AllReduce(ranks=8, bytes_per_rank=2**30), System.of(H100, 8)).energy_j == 0.0


def test_attention_key_block_counts_match_walking_every_query_block():
    """The per-key-block count equals visiting each query block, causal or not, MHA to GQA."""

    def walk(q_len, kv_len, group, causal):
        rows = q_len * group
        bq = _block_q(rows)
        full = -(-kv_len // BLOCK_KV)
        visits = []
        for i in range(-(-rows // bq)):
            last = min(rows, (i + 1) * bq) - 1
            seen = kv_len - q_len + last // group + 1 if causal else kv_len
            visits.append(min(full, -(-seen // BLOCK_KV)))
        return len(visits), sum(visits), max(visits)

    rng = random.Random(7)
    for _ in range(3000):
        q = rng.choice([1, 3, 16, 127, 128, 129, 1000, 2048, rng.randint(1, 9000)])
        kv = q + rng.choice([0, 1, 128, 129, rng.randint(0, 20000)])
        group = rng.choice([1, 2, 3, 5, 8, 16, 64])
        causal = rng.random() < 0.8
        assert _kv_block_counts(q, kv, group, causal) == walk(q, kv, group, causal)
