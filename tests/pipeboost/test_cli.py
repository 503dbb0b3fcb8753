"""The pipeboost command line: plans, validation, one-line errors, plots."""

from pathlib import Path

import pytest

from pipeboost.cli import main
from pipeboost.trace import TraceKind, TraceRecord, instant, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["opt-1.3b-4xa100.yaml", "llama-2-13b-8xh100-fault.yaml", "opt-125m-2xcpu.yaml"]


def test_plan_prints_partition_and_load_orders_of_the_three_examples(capsys):
    assert main(["plan", *(str(ROOT / "scenarios" / n) for n in EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "partition balanced_bytes: s0[E+0-4] s1[5-11] s2[12-18] s3[19-23+H]" in out
    assert "0    0,2,3,1     2.837" in out
    assert "llama-2-13b (26.03 GB float16, 40 layers) on 8 x h100-80gb-pcie" in out
    assert "opt-125m (0.50 GB float32, 12 layers) on 2 x cpu-virtual" in out


def test_validate_scenario_reports_ok(capsys):
    assert main(["validate-scenario", str(ROOT / "scenarios" / EXAMPLES[0])]) == 0
    assert "ok (opt-1.3b on 4 x a100-40gb-pcie, mode pipeboost)" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {preset: opt-1.3b}\ncluster: {preset: 4xa100-pcie4}\nserving: {cold_start_gpus: 0}\n")
    assert main(["validate-scenario", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"pipeboost: error: {bad}: serving.cold_start_gpus: must be at least 1 (got 0)\n"


def test_plot_writes_timeline_and_cdf(tmp_path):
    trace = [instant(0.0, TraceKind.ARRIVAL, request=0),
             TraceRecord(0.0, 0.5, TraceKind.LOAD, gpu=0, layer=0, nbytes=10),
             TraceRecord(0.5, 0.6, TraceKind.PREFILL, gpu=0, layer=0, request=0),
             instant(0.6, TraceKind.FIRST_TOKEN, request=0), instant(0.7, TraceKind.FAILURE, gpu=1)]
    write_jsonl(trace, tmp_path / "trace.jsonl")
    assert main(["plot", str(tmp_path)]) == 0
    for name in ("timeline.png", "ttft_cdf.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_folder_without_trace_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "trace.jsonl does not exist; give a folder written by pipeboost run" in capsys.readouterr().err


def test_make_checkpoint_delegates_to_the_executor(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["make-checkpoint", "--preset", "opt-tiny", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "model.safetensors").exists()


def test_make_checkpoint_lora_writes_a_peft_adapter(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "ad"
    assert main(["make-checkpoint", "--preset", "opt-tiny", "--out", str(out), "--lora", "--rank", "4",
                 "--target-modules", "q_proj,v_proj"]) == 0
    from pipeboost.lora import read_adapter_config

    config = read_adapter_config(out)
    assert config.spec.rank == 4 and tuple(config.spec.target_modules) == ("q_proj", "v_proj")
    assert (out / "adapter_model.safetensors").exists()
