"""Steady-state decode throughput on a replica vs ``transformers`` ``generate`` on one device.

OPT-125M-sized fp32 checkpoint on one CPU virtual device holding the full model (a replica), one request
(16 prompt tokens, N output tokens) arriving after the load; throughput = tokens after the first / time from
the first to the last token. Reference: ``generate`` with the same weights, threads and token counts,
decode time = time(N new tokens) - time(1 new token). Goal: executor within 10% of ``generate``.

Batched row: 8 concurrent requests (prompts of 12..19 tokens, N output tokens each) arriving together on
the replica, decoded by continuous batching; throughput = tokens produced after every request has its first
token / the time from then to the last token. Reference: ``generate`` on the same 8 prompts as one
left-padded batch of 8, decode time = time(N) - time(1), tokens = 8 (N - 1). Goal: within 10%.

Run: ``.venv/bin/python benchmarks/bench_executor_decode.py [--tokens 64] [--threads 1] [--batch 8]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_executor_common import Req, checkpoint, plan, table
from executor.engine import run_executor
from pipeboost.trace import TraceKind

PROMPT_TOKENS = 16


def executor_tokens_per_s(model_dir, tokens: int, threads: int) -> float:
    p = plan("pipeboost", 12, (0, 12), ((0,),))
    result = run_executor(p, model_dir, [Req(0, 0.5, PROMPT_TOKENS, tokens)], [], devices="cpu:1",
                          threads_per_device=threads)
    times = sorted(r.t_start_s for r in result.trace if r.kind in (TraceKind.FIRST_TOKEN, TraceKind.TOKEN))
    return (len(times) - 1) / (times[-1] - times[0])


def executor_batched_tokens_per_s(model_dir, tokens: int, threads: int, batch: int) -> float:
    """Decode tokens/s of ``batch`` concurrent requests on one replica, once all are decoding."""
    p = plan("pipeboost", 12, (0, 12), ((0,),))
    requests = [Req(i, 0.5, PROMPT_TOKENS - 4 + i, tokens) for i in range(batch)]
    result = run_executor(p, model_dir, requests, [], devices="cpu:1", threads_per_device=threads,
                          max_batch_size=batch)
    t_all = max(r.t_start_s for r in result.trace if r.kind == TraceKind.FIRST_TOKEN)
    times = sorted(r.t_start_s for r in result.trace if r.kind == TraceKind.TOKEN and r.t_start_s > t_all)
    return len(times) / (times[-1] - t_all)


def generate_batched_tokens_per_s(model, tokens: int, batch: int) -> float:
    """``generate`` decode tokens/s on ``batch`` prompts of 12.. tokens as one left-padded batch."""
    gen = torch.Generator().manual_seed(0)
    lengths = [PROMPT_TOKENS - 4 + i for i in range(batch)]
    width = max(lengths)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n:] = torch.randint(0, 50272, (n,), generator=gen)
        mask[i, width - n:] = 1

    def timed(n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0)
        return time.perf_counter() - t
    timed(2)
    return batch * (tokens - 1) / (timed(tokens) - timed(1))


def generate_tokens_per_s(model, tokens: int) -> float:
    ids = torch.randint(0, 50272, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))

    def timed(n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - t
    timed(2)
    return (tokens - 1) / (timed(tokens) - timed(1))


def main() -> None:
    from transformers import AutoModelForCausalLM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    model_dir = checkpoint("opt-125m", "float32", args.model_dir)
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = statistics.median(generate_tokens_per_s(model, args.tokens) for _ in range(args.repeats))
    ours = statistics.median(executor_tokens_per_s(model_dir, args.tokens, args.threads)
                             for _ in range(args.repeats))
    ref_b = statistics.median(generate_batched_tokens_per_s(model, args.tokens, args.batch)
                              for _ in range(args.repeats))
    ours_b = statistics.median(executor_batched_tokens_per_s(model_dir, args.tokens, args.threads, args.batch)
                               for _ in range(args.repeats))
    rows = [["executor replica", "1", f"{ours:.1f}", f"{ours / ref:.0%}", ">= 90%"],
            ["transformers generate", "1", f"{ref:.1f}", "100%", ""],
            ["executor replica, continuous batching", str(args.batch), f"{ours_b:.1f}", f"{ours_b / ref_b:.0%}",
             ">= 90%"],
            ["transformers generate, padded batch", str(args.batch), f"{ref_b:.1f}", "100%", ""]]
    print(table(f"steady-state decode, OPT-125M-sized fp32, {args.threads} thread(s), {args.tokens} tokens, "
                f"median of {args.repeats}", ["engine", "batch", "tokens/s", "vs generate (same batch)", "goal"],
                rows))


if __name__ == "__main__":
    main()
