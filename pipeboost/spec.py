"""Hardware and model specifications: frozen dataclasses in SI units.

Conventions used everywhere in PipeBoost:

* bandwidths are stored in bytes per second (``*_bytes_per_s``); YAML and presets write them in
  ``*_gbps`` meaning **gigabytes** per second (1e9 bytes/s), the unit PCIe and memory datasheets use;
* latencies and durations are seconds (``*_s``); YAML writes small latencies in ``*_us``;
* sizes are bytes (``*_bytes``).

A model is loaded in *units*: unit ``-1`` is the input embedding (token and, for OPT, learned position
embeddings), units ``0..L-1`` are the decoder layers and unit ``L`` is the head (final norm + LM head).
Integer units keep trace records compact and sort in execution order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

GB = 1e9
GIB = 1024**3

EMBED_UNIT = -1
"""Unit index of the input embedding; the head is unit ``num_layers``."""

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

HOST_MEM_LINK = "host_mem"
"""Each node's host-memory link, which every load from host memory crosses (named ``n<node>.host_mem``;
this is its key in ``CostParams.link_bandwidth_overrides_bytes_per_s``)."""


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator.

    ``peak_flops`` is dense half-precision (or the model dtype's) throughput in FLOP/s and
    ``memory_bandwidth_bytes_per_s`` the device-memory bandwidth; the cost model scales both by
    calibrated efficiencies (:class:`pipeboost.costs.CostParams`).
    """

    name: str
    memory_bytes: int
    peak_flops: float
    memory_bandwidth_bytes_per_s: float


@dataclass(frozen=True)
class LinkSpec:
    """A shared upstream path (root complex, PCIe switch uplink) with its own bandwidth and latency.

    ``upstream`` names the next link towards the host (``None``: this link attaches to the host sources).
    """

    name: str
    bandwidth_bytes_per_s: float
    latency_s: float
    upstream: str | None = None


@dataclass(frozen=True)
class GPULinkSpec:
    """The PCIe link of one GPU (index local to its node) and the shared path it hangs from."""

    gpu: int
    bandwidth_bytes_per_s: float
    latency_s: float
    upstream: str | None = None


@dataclass(frozen=True)
class HostSpec:
    """Sources of weights on one node.

    ``memory_bandwidth_bytes_per_s`` caps all host-to-device copies of the node together (DRAM read side).
    ``nvme_bandwidth_bytes_per_s`` is ``None`` when the node has no NVMe source. ``pinned_pool`` says
    whether checkpoints sit in a pinned host pool (ServerlessLLM-style) rather than the page cache.
    """

    memory_bandwidth_bytes_per_s: float
    nvme_bandwidth_bytes_per_s: float | None = None
    pinned_pool: bool = True


@dataclass(frozen=True)
class Topology:
    """The PCIe tree of one node, replicated ``nodes`` times.

    GPUs are numbered globally: GPU ``g`` is local GPU ``g % gpus_per_node`` on node ``g // gpus_per_node``.
    Link names in :meth:`path` are prefixed with ``n{node}.`` so that nodes never share a link.
    """

    gpu: GPUSpec
    host: HostSpec
    switches: tuple[LinkSpec, ...]
    gpu_links: tuple[GPULinkSpec, ...]
    nodes: int = 1

    @property
    def gpus_per_node(self) -> int:
        return len(self.gpu_links)

    @property
    def num_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    def switch(self, name: str) -> LinkSpec:
        for sw in self.switches:
            if sw.name == name:
                return sw
        raise KeyError(name)

    def upstream_chain(self, local_gpu: int) -> tuple[LinkSpec, ...]:
        """Shared paths from the GPU's link up to the host, nearest first."""
        chain: list[LinkSpec] = []
        name = self.gpu_links[local_gpu].upstream
        while name is not None:
            sw = self.switch(name)
            chain.append(sw)
            name = sw.upstream
        return tuple(chain)

    def path(self, gpu: int, source: str = "host") -> tuple[tuple[str, float, float], ...]:
        """Links a transfer from ``source`` ("host" or "nvme") to ``gpu`` crosses, source side first.

        Each element is ``(link_name, bandwidth_bytes_per_s, latency_s)``.
        """
        node, local = divmod(gpu, self.gpus_per_node)
        prefix = f"n{node}."
        hops: list[tuple[str, float, float]] = []
        if source == "nvme":
            if self.host.nvme_bandwidth_bytes_per_s is None:
                raise ValueError("this topology has no NVMe source")
            hops.append((prefix + "nvme", self.host.nvme_bandwidth_bytes_per_s, 0.0))
        hops.append((prefix + HOST_MEM_LINK, self.host.memory_bandwidth_bytes_per_s, 0.0))
        for sw in reversed(self.upstream_chain(local)):
            hops.append((prefix + sw.name, sw.bandwidth_bytes_per_s, sw.latency_s))
        link = self.gpu_links[local]
        hops.append((f"{prefix}gpu{local}", link.bandwidth_bytes_per_s, link.latency_s))
        return tuple(hops)

    def path_latency_s(self, gpu: int, source: str = "host") -> float:
        return sum(lat for _, _, lat in self.path(gpu, source))

    def path_bandwidth_bytes_per_s(self, gpu: int, source: str = "host") -> float:
        """Bottleneck bandwidth of an uncontended transfer to ``gpu``."""
        return min(bw for _, bw, _ in self.path(gpu, source))

    def failure_domain(self, gpu: int) -> str:
        """Name of the first shared path above the GPU (GPUs behind one switch share it)."""
        node, local = divmod(gpu, self.gpus_per_node)
        up = self.gpu_links[local].upstream
        return f"n{node}.{up}" if up else f"n{node}.gpu{local}"

    def distance(self, gpu_a: int, gpu_b: int) -> int:
        """Hop distance in the tree: 0 same GPU, 2 same switch, larger further apart, 100 across nodes."""
        if gpu_a == gpu_b:
            return 0
        node_a, local_a = divmod(gpu_a, self.gpus_per_node)
        node_b, local_b = divmod(gpu_b, self.gpus_per_node)
        if node_a != node_b:
            return 100
        chain_a = [None] + [sw.name for sw in self.upstream_chain(local_a)]
        chain_b = [None] + [sw.name for sw in self.upstream_chain(local_b)]
        if self.gpu_links[local_a].upstream is None or self.gpu_links[local_b].upstream is None:
            return len(chain_a) + len(chain_b)
        for i, name in enumerate(chain_a[1:], start=1):
            if name in chain_b:
                return i + chain_b.index(name)
        return len(chain_a) + len(chain_b)


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts of an OPT or Llama-family decoder, enough for exact parameter byte counts.

    Built from a Hugging Face ``config.json`` by :func:`pipeboost.model_config.model_spec_from_hf_config`.
    ``family`` is ``"opt"`` or ``"llama"`` (Llama, Mistral, Qwen2 share the Llama layer layout;
    ``attention_bias`` covers Qwen2's q/k/v biases).
    """

    name: str
    family: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    dtype: str = "float16"
    tie_word_embeddings: bool = True
    head_dim: int = 0
    attention_bias: bool = False
    mlp_bias: bool = False
    word_embed_proj_dim: int = 0
    o_proj_bias: bool = True
    final_norm: bool = True

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_heads, 1))
        if self.word_embed_proj_dim == 0:
            object.__setattr__(self, "word_embed_proj_dim", self.hidden_size)

    # ---- parameter counts -------------------------------------------------------------------
    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def layer_params(self) -> int:
        """Parameters of one decoder layer."""
        h, ffn = self.hidden_size, self.intermediate_size
        if self.family == "opt":
            attn = 4 * (h * h + h)
            mlp = h * ffn + ffn + ffn * h + h
            norms = 2 * (2 * h)
            return attn + mlp + norms
        q_dim = self.num_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        attn = h * q_dim + 2 * h * kv_dim + q_dim * h
        if self.attention_bias:
            attn += q_dim + 2 * kv_dim + (h if self.o_proj_bias else 0)
        mlp = 3 * h * ffn + ((2 * ffn + h) if self.mlp_bias else 0)
        return attn + mlp + 2 * h

    def embed_params(self) -> int:
        """Parameters of the input embedding unit (token, positions, OPT's projection in)."""
        if self.family == "opt":
            proj = self.word_embed_proj_dim
            params = self.vocab_size * proj + (self.max_position_embeddings + 2) * self.hidden_size
            if proj != self.hidden_size:
                params += proj * self.hidden_size
            return params
        return self.vocab_size * self.hidden_size

    def head_params(self) -> int:
        """Parameters of the head unit: final norm (+ OPT projection out) and the LM head weight.

        The LM head weight is counted even when tied to the input embedding: a GPU that runs the head
        without holding the embedding needs its own copy.
        """
        if self.family == "opt":
            proj = self.word_embed_proj_dim
            params = (2 * self.hidden_size if self.final_norm else 0) + self.vocab_size * proj
            if proj != self.hidden_size:
                params += self.hidden_size * proj
            return params
        return self.hidden_size + self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        """Parameters of the whole model as stored (tied LM head counted once)."""
        tied = self.vocab_size * self.word_embed_proj_dim if self.tie_word_embeddings else 0
        return self.embed_params() + self.num_layers * self.layer_params() + self.head_params() - tied

    # ---- units --------------------------------------------------------------------------------
    @property
    def head_unit(self) -> int:
        return self.num_layers

    def units(self) -> range:
        """All unit indices in execution order: embed (-1), layers, head (L)."""
        return range(EMBED_UNIT, self.num_layers + 1)

    def unit_params(self, unit: int) -> int:
        if unit == EMBED_UNIT:
            return self.embed_params()
        if unit == self.head_unit:
            return self.head_params()
        if 0 <= unit < self.num_layers:
            return self.layer_params()
        raise ValueError(f"unit {unit} out of range -1..{self.num_layers}")

    def unit_bytes(self, unit: int) -> int:
        """Bytes a GPU receives and stores to hold ``unit``."""
        return self.unit_params(unit) * self.dtype_bytes

    @property
    def layer_bytes(self) -> int:
        return self.layer_params() * self.dtype_bytes

    @property
    def total_bytes(self) -> int:
        """Checkpoint size in bytes (tied weights once)."""
        return self.total_params() * self.dtype_bytes

    @property
    def replica_bytes(self) -> int:
        """Bytes one GPU holds as a full replica (sum of all units)."""
        return sum(self.unit_bytes(u) for u in self.units())

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token per layer (keys and values)."""
        return 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def activation_bytes(self, tokens: int) -> int:
        """Bytes of the hidden state handed between pipeline stages for ``tokens`` tokens."""
        return tokens * self.hidden_size * self.dtype_bytes


def iter_stage_units(start_layer: int, end_layer: int, first: bool, last: bool,
                     num_layers: int) -> Iterator[int]:
    """Units of a stage covering decoder layers ``[start_layer, end_layer)`` in execution order."""
    if first:
        yield EMBED_UNIT
    yield from range(start_layer, end_layer)
    if last:
        yield num_layers
