"""What a run of generated code hands over is data, and the trusted side accepts only plain,
allowed data: a traced model round-trips exactly, and every crafted graph that would read a
file, call a custom operator, smuggle a keyword or reference an unknown node is refused with
one line; frames are bounded. No sandbox needed: these are the trusted side's parsers."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
import torch

from airlab.models import build_gpt, build_vision
from airlab.run.handover import (
    FrameReader,
    HandoverError,
    encode_frame,
    export_graph,
    load_graphs,
    model_weights,
    pack_weights,
    unpack_weights,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def traced() -> tuple[Any, dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = build_gpt(65, "tiny", n_layer=1, n_embd=32, n_head=2, block_size=16)
    x = torch.randint(0, 65, (4, 16))
    graph, values = export_graph(model, x)
    return model, json.loads(json.dumps(graph)), unpack_weights(pack_weights(values)), x


def test_a_traced_model_round_trips_and_takes_new_weights(traced: Any) -> None:
    model, graph, values, x = traced
    trusted = load_graphs([graph], values, CPU)
    model.eval()
    assert torch.allclose(trusted(x), model(x)[0], atol=1e-5)
    # Fewer rows than traced are padded; more are split: the same logits row for row.
    assert torch.allclose(trusted(x[:3]), model(x[:3])[0], atol=1e-5)
    x9 = torch.randint(0, 65, (9, 16))
    assert torch.allclose(trusted(x9), model(x9)[0], atol=1e-5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trusted.load(unpack_weights(pack_weights(model_weights(model))))
    assert torch.allclose(trusted(x), model(x)[0], atol=1e-5)
    # Tied embeddings arrive under two names and count once.
    assert trusted.count_params() == sum(p.numel() for p in model.parameters())


def test_a_vision_model_round_trips() -> None:
    model = build_vision("cnn", (1, 8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    graph, values = export_graph(model, x)
    trusted = load_graphs([json.loads(json.dumps(graph))], values, CPU)
    assert torch.allclose(trusted(x), model(x), atol=1e-5)


def _node(graph: dict[str, Any], target: str) -> dict[str, Any]:
    return next(n for n in graph["nodes"] if n["target"] == target)


@pytest.mark.parametrize(("edit", "message"), [
    # An I/O operator would let the graph read the held-out file on the trusted side.
    (lambda g: _node(g, "aten.mm.default").update(target="aten.from_file.default"),
     "not a core ATen operator"),
    (lambda g: _node(g, "aten.mm.default").update(target="airlab.leak.default"),
     "not an ATen operator"),
    (lambda g: _node(g, "aten.mm.default").update(target="aten.mm.default; import os"),
     "is not allowed"),
    (lambda g: _node(g, "aten.mm.default").update(target="builtins.eval.default"),
     "not an ATen operator"),
    # Keywords become code in the rebuilt graph: only the operator's own argument names.
    (lambda g: _node(g, "aten.mm.default")["kwargs"].update(
        {"x=__import__('os').system('id'),y": 1}), "has no argument"),
    (lambda g: _node(g, "aten.mm.default").update(args={"l": [{"n": "no_such_node"}, 1]}),
     "unknown node"),
    (lambda g: _node(g, "aten.mm.default").update(args={"l": ["'); import os; ('", 1]}),
     "not a short plain word"),
    (lambda g: _node(g, "aten.mm.default").update(args={"l": [{"pickle": "gASV"}, 1]}),
     "not plain data"),
    (lambda g: g.update(output={"l": [{"n": g["nodes"][0]["name"]}] * 2}), "one tensor"),
    (lambda g: g["inputs"].append({"name": "x2", "kind": "input"}),
     "exactly one input batch"),
])
def test_a_crafted_graph_is_refused(traced: Any, edit: Any, message: str) -> None:
    _, graph, values, _ = traced
    bad = copy.deepcopy(graph)
    edit(bad)
    with pytest.raises(HandoverError, match=message) as e:
        load_graphs([bad], values, CPU)
    assert "\n" not in str(e.value)


def test_weights_that_do_not_fit_the_graph_are_refused(traced: Any) -> None:
    model, graph, values, _ = traced
    trusted = load_graphs([graph], dict(values), CPU)
    weights = model_weights(model)
    name = next(iter(weights))
    with pytest.raises(HandoverError, match="lacks"):
        trusted.load({k: v for k, v in weights.items() if k != name})
    with pytest.raises(HandoverError, match="the traced model's"):
        trusted.load({**weights, name: torch.zeros(3)})
    with pytest.raises(HandoverError, match="not safetensors"):
        unpack_weights(b"\x80\x04\x95 a pickle, not tensors")


def test_frames_are_bounded_and_never_block_on_a_partial_one() -> None:
    r, w = os.pipe()
    try:
        reader = FrameReader(r, max_payload=1000)
        frame = encode_frame({"t": "batch"}, {"x": b"12345"})
        os.write(w, frame[:7])  # half a header: nothing yet, and no blocking
        assert reader.poll(0.05) is None
        os.write(w, frame[7:])
        header, parts = reader.poll(0.5) or ({}, {})
        assert header["t"] == "batch" and parts == {"x": b"12345"}
        os.write(w, encode_frame({"t": "ckpt"}, {"weights": b"x" * 2000}))
        with pytest.raises(HandoverError, match="at most 1,000"):
            reader.poll(0.5)
    finally:
        os.close(r)
        os.close(w)
