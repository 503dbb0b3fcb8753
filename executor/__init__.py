"""The torch executor: real checkpoint loads and real forward passes that carry out PipeBoost plans.

Modules, one concept each:

* :mod:`executor.hf` - Hugging Face configs and model construction (transformers classes);
* :mod:`executor.checkpoint` - safetensors checkpoints: validation, reading by tensor name, ``make_checkpoint``;
* :mod:`executor.units` - model slices (embedding, decoder layer, head) built on the meta device;
* :mod:`executor.kvcache` - per-request, per-layer KV cache;
* :mod:`executor.devices` - CPU virtual devices and CUDA devices with their weight arenas;
* :mod:`executor.loader` - the per-device loader thread (chunked, optionally paced copies);
* :mod:`executor.pipeline` - stage tasks, routing, replicas (execute-while-load inference);
* :mod:`executor.faults` / :mod:`executor.recovery` - fault injection and recovery;
* :mod:`executor.engine` - :func:`run_executor`, the entry point used for replaying scenarios.

Importing this package has no side effects.
"""
