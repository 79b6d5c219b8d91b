"""Accuracy and speed of numerics emulation on a small Hugging Face Llama (random weights).

Targets (issue 17): bf16 logits within 5 % of fp32 eager, fp8 (e4m3, per-channel weights,
per-tensor activations) within 25 %; the emulated bf16 forward within 3x the fp32 eager time.
Run: `OMP_NUM_THREADS=1 python benchmarks/bench_numerics.py [--json]`. Reports the relative error
of the logits per format and medians of repeated timings; nothing is asserted (shared machines
are noisy).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)

import torch  # noqa: E402, TID251  (a benchmark of the compiler)
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from tapeout.compiler.numerics import Emulator, FormatPolicy, calibrate, emulate  # noqa: E402
from tapeout.compiler.operands import relative_error  # noqa: E402


class Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def median_ms(fn: Callable[[], Any], calls: int = 10, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return 1e3 * statistics.median(times)


def main() -> dict[str, Any]:
    torch.set_num_threads(1)
    config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=128,
                         attn_implementation="sdpa")  # fmt: skip
    torch.manual_seed(0)
    model = Logits(LlamaForCausalLM(config)).eval()
    ids = torch.randint(0, 1000, (2, 32))
    table = torch.export.default_decompositions()
    for op in (torch.ops.aten.linear.default, torch.ops.aten.scaled_dot_product_attention.default):
        table.pop(op, None)
    out: dict[str, Any] = {"model": "llama hidden 256, 4 layers, vocab 1000, batch 2 x seq 32"}
    with torch.no_grad():
        expected = model(ids)
        out["eager_fp32_ms"] = median_ms(lambda: model(ids))
        for name, decomp in (
            ("core_aten", torch.export.default_decompositions()),
            ("linear_sdpa_whole", table),
        ):
            gm = torch.export.export(model, (ids,)).run_decompositions(decomp).module()
            for precision in ("bf16", "fp8", "int8"):
                policy = FormatPolicy.of(precision)
                got = emulate(gm, (ids,), policy, calibrate(gm, (ids,), policy))
                out[f"{name}_{precision}_logits_error"] = relative_error(got, expected)
            e5m2 = FormatPolicy(precision="fp8", fp8_format="e5m2")
            out[f"{name}_fp8_e5m2_logits_error"] = relative_error(emulate(gm, (ids,), e5m2), expected)
            block = FormatPolicy(precision="fp8", weight_scaling="block", activation_scaling="block")
            out[f"{name}_fp8_block_logits_error"] = relative_error(emulate(gm, (ids,), block), expected)
            emulator = Emulator(gm, FormatPolicy.of("bf16"))
            out[f"{name}_bf16_emulated_ms"] = median_ms(lambda gm=gm, em=emulator: em.run(ids))
            out[f"{name}_bf16_emulate_call_ms"] = median_ms(
                lambda gm=gm: emulate(gm, (ids,), FormatPolicy.of("bf16"))
            )
            out[f"{name}_bf16_time_ratio"] = out[f"{name}_bf16_emulated_ms"] / out["eager_fp32_ms"]
    return out


if __name__ == "__main__":
    result = main()
    if "--json" in sys.argv:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:<40} {value:.4f}" if isinstance(value, float) else f"{key:<40} {value}")
