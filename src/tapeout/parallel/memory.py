"""Memory per chip: one model for serving, training, recommendation and the planner, read off the
live tensors of sharded graphs (`workloads.graph.Role`): weights, gradients and optimizer states
(with ZeRO's sharding), activations, the key/value cache, and a runtime reserve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tapeout.errors import DoesNotFit
from tapeout.parallel.training import GRAD_BYTES, OPTIMIZER_BYTES, Holders, TrainingPlan
from tapeout.precision import BYTES_PER_ELEMENT, Precision
from tapeout.units import GB
from tapeout.workloads.dlrm import ADAGRAD_STATE_PRECISION
from tapeout.workloads.graph import Graph, Role

# Memory a runtime keeps for itself on every chip: the CUDA/driver context, library workspaces
# (cuBLAS, attention), communication buffers. An assumption of the order vLLM and TensorRT-LLM
# report at start-up (0.5 to 1.5 GB); not fitted.
RUNTIME_RESERVE_BYTES = 1.0 * GB
# Share of the memory left after weights, activations and the reserve that the KV cache
# takes: TensorRT-LLM's default kv_cache_free_gpu_mem_fraction and vLLM's default
# gpu_memory_utilization are both 0.9.
KV_MEMORY_FRACTION = 0.9
KV_BLOCK_TOKENS = 16  # tokens per page of the paged KV cache (vLLM's default block size)
# Memory per chip kept from a recommendation model's embedding tables: the dense model,
# activations of a batch and the runtime (training adds optimizer state and gradients).
# Assumptions of the order the MLPerf submissions leave free, not fitted.
RESERVE_INFERENCE_BYTES = 4.0 * GB
RESERVE_TRAINING_BYTES = 8.0 * GB


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """Bytes one chip holds, by what holds them; for serving, the key/value cache's pool.

    >>> m = Memory(chip_id="x", capacity_bytes=80e9, weights_bytes=70e9)
    >>> round(m.free_bytes / 1e9, 1)
    9.0
    """

    chip_id: str
    capacity_bytes: float
    weights_bytes: float = 0.0
    gradients_bytes: float = 0.0
    optimizer_bytes: float = 0.0
    activation_bytes: float = 0.0
    reserve_bytes: float = RUNTIME_RESERVE_BYTES
    kv_bytes_per_token: float = 0.0
    kv_pool_bytes: float = 0.0
    kv_block_tokens: int = KV_BLOCK_TOKENS

    @property
    def used_bytes(self) -> float:
        """Everything but the key/value cache's pool."""
        return (
            self.weights_bytes + self.gradients_bytes + self.optimizer_bytes + self.activation_bytes
            + self.reserve_bytes
        )  # fmt: skip

    @property
    def free_bytes(self) -> float:
        return self.capacity_bytes - self.used_bytes

    def parts_gb(self) -> dict[str, float]:
        """GB per chip of each part a training step holds."""
        return {
            "weights": self.weights_bytes / GB, "gradients": self.gradients_bytes / GB,
            "optimizer": self.optimizer_bytes / GB, "activations": self.activation_bytes / GB,
            "runtime": self.reserve_bytes / GB,
        }  # fmt: skip

    def require_fit(self, what: str, detail: str = "") -> None:
        """Raise, naming every part and the overflow, when the parts exceed the chip."""
        if self.free_bytes >= 0:
            return
        parts = ", ".join(f"{k} {v:.1f} GB" for k, v in self.parts_gb().items() if v > 0)
        raise DoesNotFit(
            f"{what} does not fit on {self.chip_id}: per chip {parts} = {self.used_bytes / GB:.1f} GB exceed "
            f"{self.capacity_bytes / GB:g} GB by {-self.free_bytes / GB:.1f} GB"
            + (f" ({detail})" if detail else "")
        )

    @property
    def kv_tokens(self) -> int:
        """KV-cache capacity, in tokens (whole pages)."""
        if self.kv_bytes_per_token <= 0:
            return 0
        pages = int(self.kv_pool_bytes // (self.kv_bytes_per_token * self.kv_block_tokens))
        return pages * self.kv_block_tokens

    def pages(self, tokens: int) -> int:
        return -(-tokens // self.kv_block_tokens)

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "chip": self.chip_id,
            "capacity_gb": self.capacity_bytes / GB,
            "weights_gb": self.weights_bytes / GB,
            "activations_gb": self.activation_bytes / GB,
            "reserve_gb": self.reserve_bytes / GB,
            "kv_cache_gb": self.kv_pool_bytes / GB,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_tokens": self.kv_tokens,
        }


def serving_memory(
    chip_id: str,
    capacity_bytes: float,
    *,
    stage: Graph,
    workspace: Graph,
    tokens: int,
    kv_fraction: float = KV_MEMORY_FRACTION,
    plan: str = "",
) -> Memory:
    """Memory of one chip of a replica's busiest pipeline stage: `stage` holds its sharded layers
    and ends (weights; key/value cache per token); `workspace` one layer and the head per token,
    for a budget of `tokens` tokens in flight. The cache takes `kv_fraction` of what is left."""
    mem = Memory(
        chip_id=chip_id,
        capacity_bytes=capacity_bytes,
        weights_bytes=stage.bytes_of(Role.WEIGHT),
        activation_bytes=tokens * workspace.bytes_of(Role.WORKSPACE),
        kv_bytes_per_token=stage.bytes_of(Role.KV_CACHE),
    )
    if mem.free_bytes <= 0:
        raise DoesNotFit(
            f"the model does not fit on {chip_id}: per chip, weights {mem.weights_bytes / GB:.1f} GB + "
            f"activations {mem.activation_bytes / GB:.1f} GB + runtime {mem.reserve_bytes / GB:.1f} GB "
            f"exceed the {capacity_bytes / GB:g} GB of memory by {-mem.free_bytes / GB:.1f} GB ({plan})"
        )
    return replace(mem, kv_pool_bytes=mem.free_bytes * kv_fraction)


def saved_bytes(graph: Graph, recompute: str) -> float:
    """What the forward keeps for the backward: everything; without the attention scores under
    selective recomputation (Korthikanti et al. 2022); the layer's input alone under full."""
    roles = {"none": (Role.INPUT, Role.ACTIVATION, Role.SCORES), "selective": (Role.INPUT, Role.ACTIVATION),
             "full": (Role.INPUT,)}[recompute]  # fmt: skip
    return sum(graph.bytes_of(r) for r in roles)


def training_memory(
    chip_id: str,
    capacity_bytes: float,
    *,
    plan: TrainingPlan,
    groups: tuple[Holders, ...],
    weight_bytes: float,
    layer_params: float,
    layer_activations: float,
    stage_layers: int,
) -> Memory:
    """Memory of one chip of the first stage (it keeps the most micro-batches in flight): for each
    group of weights the bf16 weights, fp32 gradients and Adam states, ZeRO-sharded over its
    holders; ZeRO-3 also holds the layer being computed and the one prefetched, gathered whole
    (`layer_params` per chip); the activations of `layer_activations` bytes per layer and
    micro-batch for every layer and micro-batch in flight."""
    weights = grads = optimizer = 0.0
    for g in groups:
        shard = plan.zero_group(g.ranks, g.stride)
        weights += g.params * weight_bytes / (shard if plan.zero >= 3 else 1)
        grads += g.params * GRAD_BYTES / (shard if plan.zero >= 2 else 1)
        optimizer += g.params * OPTIMIZER_BYTES / shard
    if plan.zero >= 3:
        weights += 2 * layer_params * weight_bytes
    return Memory(
        chip_id=chip_id, capacity_bytes=capacity_bytes, weights_bytes=weights, gradients_bytes=grads,
        optimizer_bytes=optimizer, activation_bytes=layer_activations * stage_layers * plan.in_flight,
    )  # fmt: skip


def embedding_room(capacity_bytes: float, tables: Precision, *, training: bool) -> float:
    """Bytes a chip has for a recommendation model's embedding tables: its memory less the
    reserve; in training the exact Adagrad accumulator sits beside every table element."""
    room = capacity_bytes - (RESERVE_TRAINING_BYTES if training else RESERVE_INFERENCE_BYTES)
    if training:
        bpe = BYTES_PER_ELEMENT[tables]
        room *= bpe / (bpe + BYTES_PER_ELEMENT[ADAGRAD_STATE_PRECISION])
    return room


def recsys_batch_fits(
    chip_id: str,
    capacity_bytes: float,
    *,
    table_bytes: float,
    pairs: float,
    bytes_per_pair: float,
    training: bool,
) -> None:
    """Refuse a recommendation batch whose activations do not fit on a chip beside its tables
    (`table_bytes`, with their optimizer state) and the runtime reserve."""
    reserve = RESERVE_TRAINING_BYTES if training else RESERVE_INFERENCE_BYTES
    room = capacity_bytes - reserve - table_bytes
    need = pairs * bytes_per_pair
    if need > room:
        raise DoesNotFit(
            f"field 'batch': {pairs:,.0f} user-item pairs per chip keep {need / GB:,.1f} GB of activations "
            f"({bytes_per_pair:,.0f} bytes a pair); {chip_id} has {max(room, 0.0) / GB:,.1f} GB beside its "
            f"{table_bytes / GB:,.1f} GB of tables and the {reserve / GB:g} GB runtime reserve"
        )
