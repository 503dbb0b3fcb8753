"""Steady-state decode throughput on a replica vs ``transformers`` ``generate`` on one device.

OPT-125M-sized fp32 checkpoint on one CPU virtual device holding the full model (a replica), one request
(16 prompt tokens, N output tokens) arriving after the load; throughput = tokens after the first / time from
the first to the last token. Reference: ``generate`` with the same weights, threads and token counts,
decode time = time(N new tokens) - time(1 new token). Goal: executor within 10% of ``generate``.

Run: ``.venv/bin/python benchmarks/bench_executor_decode.py [--tokens 64] [--threads 1]``
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
    args = parser.parse_args()
    model_dir = checkpoint("opt-125m", "float32", args.model_dir)
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = statistics.median(generate_tokens_per_s(model, args.tokens) for _ in range(args.repeats))
    ours = statistics.median(executor_tokens_per_s(model_dir, args.tokens, args.threads)
                             for _ in range(args.repeats))
    rows = [["executor replica", f"{ours:.1f}", f"{ours / ref:.0%}", ">= 90%"],
            ["transformers generate", f"{ref:.1f}", "100%", ""]]
    print(table(f"steady-state decode, OPT-125M-sized fp32, batch 1, {args.threads} thread(s), "
                f"{args.tokens} tokens, median of {args.repeats}", ["engine", "tokens/s", "vs generate", "goal"],
                rows))


if __name__ == "__main__":
    main()
