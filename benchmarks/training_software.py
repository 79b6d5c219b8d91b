"""Training cases under the software their runs used but the case schema cannot state.

`tapeout validate` predicts every `llm_training` case with the plan the case states and the
tool's defaults for the rest: no tensor-parallel overlap, FlashAttention. Some runs are known
to have differed, from their own published configurations:

- NVIDIA's MLPerf GPT-3 submissions set `TP_COMM_OVERLAP=True` and `USE_DIST_OPTIMIZER=True`
  (`mlcommons/training_results_v4.x`, `NVIDIA/benchmarks/gpt3/implementations/*/config_*.sh`):
  `tp_overlap` and ZeRO-1 here;
- Megatron-LM's 2021 and 2022 papers (Narayanan et al. SC21, Korthikanti et al. 2022) ran
  before its FlashAttention path: `attention: unfused` (Korthikanti's activation count and its
  selective recomputation are built around the stored score matrix);
- MegaScale-MoE overlaps its expert communication with computation (arXiv:2505.11432, abstract:
  "a holistic approach to overlap communication with computation"): `ep_overlap` on its own
  runs, not on the Megatron-LM baseline's;
- Google's MLPerf v3.1 GPT-3 run on 16 TPU v5e slices (PAX `C4SpmdGpt3AdamDataParallel16x16x16Int8`)
  shards its activations over the model axis of a slice as sequence parallelism does; the case
  states the rest of its layout (tp 16, ZeRO-3 within each slice, full recompute):
  `sequence_parallel` here.

This prints each such case's error as validated and under those settings. It is a what-if,
not validation: the settings come from outside the case file.

    OMP_NUM_THREADS=1 python benchmarks/training_software.py [cases.yaml]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from tapeout.validate import PUBLIC_CASES, Case, load_cases, training_prediction, training_setup

MLPERF_NVIDIA = ("train-mlperf40-gpt3-h100", "train-mlperf41-gpt3-h100", "train-mlperf41-gpt3-b200")
MEGATRON_2021_22 = ("train-megatron-sc21-", "train-korthikanti-", "op-layer-22b-")
MEGASCALE_MOE = ("train-megascale-moe-352b-",)
PAX_V5E = ("train-mlperf31-gpt3-tpuv5e-",)


def _error(case: Case, **changes: object) -> float:
    plan = dataclasses.replace(training_setup(case)[1], **changes)  # type: ignore[arg-type]
    return training_prediction(case, case.system(), plan) / case.value - 1


def main(path: Path) -> None:
    print(f"{'case':55s} {'validated':>10s} {'what-if':>10s}  settings")
    for case in load_cases(path):
        if case.kind != "llm_training":
            continue
        if case.id.startswith(MLPERF_NVIDIA):
            changes: dict[str, object] = {"tp_overlap": True, "zero": 1}
        elif case.id.startswith(MEGATRON_2021_22):
            changes = {"attention": "unfused"}
        elif case.id.startswith(MEGASCALE_MOE):
            changes = {"ep_overlap": True}
        elif case.id.startswith(PAX_V5E):
            changes = {"sequence_parallel": True}
        else:
            continue
        setting = ", ".join(f"{k} {v}" for k, v in changes.items())
        print(f"{case.id:55s} {_error(case):>+10.1%} {_error(case, **changes):>+10.1%}  {setting}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else PUBLIC_CASES)
