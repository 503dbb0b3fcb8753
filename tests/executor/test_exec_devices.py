"""Arenas and loaders: loads are real copies into one preallocated buffer, paced to the link cap."""

from __future__ import annotations

import threading

import torch

from executor.checkpoint import CheckpointReader
from executor.devices import Arena, Device, parse_devices
from executor.engine import checkpoint_dtype, validate_checkpoint
from executor.loader import Loader
from executor.tracer import Tracer
from executor.units import unit_tensor_names
from pipeboost.trace import TraceKind


def _load_all(model_dir, units, bandwidth=None):
    reader = CheckpointReader(model_dir)
    sizes = validate_checkpoint(reader, units, checkpoint_dtype(reader))
    device = Device(0, torch.device("cpu"), Arena(sum(sizes.values()) + 4096, torch.device("cpu"), 0))
    tracer, stop = Tracer(), threading.Event()
    loader = Loader(device, reader, reader.config, tuple(units), tracer, stop, bandwidth)
    loader.start()
    for u in units:
        assert device.ready_event(u).wait(30)
    stop.set()
    loader.join()
    return reader, device, tracer, sizes


def test_units_are_copies_inside_the_arena(model_dirs):
    reader, device, tracer, sizes = _load_all(model_dirs("opt-tiny"), (-1, 0, 1, 2, 3, 4))
    base = device.arena._segments[0]
    lo, hi = base.data_ptr(), base.data_ptr() + base.numel()
    for unit, module in device.units.items():
        for local, name in unit_tensor_names(reader.config, unit, module).items():
            param = module.state_dict()[local]
            assert lo <= param.data_ptr() < hi, "weights live in the arena"
            source = reader.get(name)
            assert param.data_ptr() != source.data_ptr() and torch.equal(param, source)
    assert len(device.arena._segments) == 1, "no overflow allocation"
    loads = [r for r in tracer.records() if r.kind == TraceKind.LOAD]
    assert [r.layer for r in loads] == [-1, 0, 1, 2, 3, 4]
    assert all(r.nbytes == sizes[r.layer] for r in loads)


def test_link_cap_paces_the_copy(model_dirs):
    bandwidth = 5e6
    _, _, tracer, sizes = _load_all(model_dirs("opt-tiny"), (0, 1), bandwidth)
    for rec in tracer.records():
        assert rec.duration_s >= 0.95 * sizes[rec.layer] / bandwidth


def test_parse_devices():
    assert len(parse_devices("cpu:3")) == 3
    assert parse_devices("cpu") == [torch.device("cpu")]
