"""Capture and compile time of a Llama with 1B-parameter dimensions (Llama 3.2 1B: hidden 2048,
16 layers, 32 heads, 8 key/value heads, vocabulary 128,256) built on the meta device.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_compile.py
"""

import time

import tapeout
from tapeout.compiler.hf import causal_lm, token_ids
from tapeout.workloads.llm import LLMConfig

CONFIG = LLMConfig(architecture="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)  # fmt: skip


def main() -> None:
    start = time.perf_counter()
    model = causal_lm(CONFIG)
    compiled = tapeout.compile(model, (token_ids(CONFIG, 1, 2048),), target="tapeout-i1")
    elapsed = time.perf_counter() - start
    est = compiled.estimate()
    print(f"build + capture + compile: {elapsed:.2f} s; {est.kernels} kernels, {est.flops / 1e12:.2f} TFLOP, "
          f"{est.time_s * 1e3:.2f} ms on tapeout-i1, {est.fallbacks} fallbacks")  # fmt: skip


if __name__ == "__main__":
    main()
