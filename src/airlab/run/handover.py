"""What a training process that ran generated code hands to the process that measures it.

A run whose config uses a generated technique trains in a sandbox (:mod:`airlab.run.child`)
and is measured by a trusted process that never imports generated code
(:mod:`airlab.run.harness`). Between them travel only data, never code or pickles:

- **frames** on a pipe: a JSON header and a byte payload made of named parts
  (:func:`write_frame`, :class:`FrameReader`), sizes bounded on the reading side;
- **weights** as safetensors (:func:`pack_weights`, :func:`unpack_weights`): a format that
  holds tensors and nothing else;
- **the model's forward pass as a graph** (:func:`export_graph`, child side): the model is
  traced with ``torch.export`` and decomposed to core ATen operators, then written as JSON
  nodes (operator name, arguments as literals or references). The trusted side rebuilds it
  with :func:`load_graph`, which accepts only ATen operators tagged *core* (no I/O such as
  ``aten.from_file``, no custom or Python operators), argument names from each operator's
  schema and literals of a few plain types, so evaluating it runs no generated Python.

``torch.export.load`` is not used on purpose: it unpickles (``weights_only=False``) and
parses symbolic expressions with sympy, either of which would run code from the file.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import select
import struct
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

HEADER = struct.Struct("!IQ")  # JSON length, payload length
MAX_JSON = 1 << 20  # a header is small; anything larger is refused
MAX_GRAPH_NODES = 200_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,200}$")
_SHORT_STR = re.compile(r"^[A-Za-z0-9_]{0,32}$")

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64)}
_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format,
                   "preserve_format": torch.preserve_format,
                   "channels_last": torch.channels_last}


class HandoverError(Exception):
    """What the other side sent breaks the protocol or the format (one line)."""


# --------------------------------------------------------------------------- frames


def encode_frame(header: Mapping[str, Any], parts: Mapping[str, bytes] | None = None) -> bytes:
    """One frame: the header (JSON, with the lengths of ``parts``), then the parts."""
    parts = dict(parts or {})
    head = json.dumps({**header, "parts": {k: len(v) for k, v in parts.items()}},
                      allow_nan=False).encode()
    return b"".join([HEADER.pack(len(head), sum(len(v) for v in parts.values())), head,
                     *parts.values()])


def write_frame(fd: int, header: Mapping[str, Any], parts: Mapping[str, bytes] | None = None
                ) -> None:
    """Write one frame (blocking: the child's side, writing to the trusted parent)."""
    view = memoryview(encode_frame(header, parts))
    while view:
        view = view[os.write(fd, view):]


def read_frame(fd: int, max_payload: int = 1 << 34) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Blocking read of one frame (the child's side, reading the trusted parent)."""
    reader = FrameReader(fd, max_payload)
    while True:
        frame = reader.poll(None)
        if frame is not None:
            return frame


class FrameReader:
    """Reads frames from an untrusted writer without ever blocking past a timeout: partial
    frames are buffered, oversized ones refused (HandoverError), EOF is EOFError."""

    def __init__(self, fd: int, max_payload: int) -> None:
        self.fd, self.max_payload = fd, max_payload
        self.buf = bytearray()

    def _frame(self) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        if len(self.buf) < HEADER.size:
            return None
        n_json, n_payload = HEADER.unpack_from(self.buf)
        if n_json > MAX_JSON:
            raise HandoverError(f"a frame header of {n_json:,} bytes (at most {MAX_JSON:,})")
        if n_payload > self.max_payload:
            raise HandoverError(f"a frame of {n_payload:,} bytes (at most "
                                f"{self.max_payload:,})")
        end = HEADER.size + n_json + n_payload
        if len(self.buf) < end:
            return None
        try:
            header = json.loads(bytes(self.buf[HEADER.size:HEADER.size + n_json]))
        except ValueError as e:
            raise HandoverError(f"a frame header that is not JSON: {e}") from None
        if not isinstance(header, dict) or not isinstance(header.get("t"), str):
            raise HandoverError("a frame header without a type")
        sizes = header.get("parts") or {}
        if (not isinstance(sizes, dict)
                or not all(isinstance(v, int) and v >= 0 for v in sizes.values())
                or sum(sizes.values()) != n_payload):
            raise HandoverError("a frame whose parts do not add up to its payload")
        parts, at = {}, HEADER.size + n_json
        for k, n in sizes.items():
            parts[str(k)] = bytes(self.buf[at:at + n])
            at += n
        del self.buf[:end]
        return header, parts

    def poll(self, timeout: float | None) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """A complete frame, or None when none came within ``timeout`` seconds."""
        frame = self._frame()
        if frame is not None:
            return frame
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        chunk = os.read(self.fd, 1 << 22)
        if not chunk:
            raise EOFError("the other side closed the pipe")
        self.buf += chunk
        return self._frame()


# --------------------------------------------------------------------------- weights


def pack_weights(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """safetensors bytes of ``tensors`` (copied to contiguous CPU memory; shared storage
    such as tied embeddings is written once per name)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})


def unpack_weights(data: bytes) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes; HandoverError for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise HandoverError(f"weights that are not safetensors: {str(e)[:200]}") from None


def batch_parts(x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A training batch as a frame (raw bytes with shape and dtype): what the parent serves."""
    head = {"t": "batch", "x": [list(x.shape), str(x.dtype).removeprefix("torch.")],
            "y": [list(y.shape), str(y.dtype).removeprefix("torch.")]}
    return head, {"x": x.contiguous().numpy().tobytes(), "y": y.contiguous().numpy().tobytes()}


def batch_of(header: Mapping[str, Any], parts: Mapping[str, bytes]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch a :func:`batch_parts` frame carries."""
    out = []
    for key in ("x", "y"):
        shape, dtype = header[key]
        t = torch.frombuffer(bytearray(parts[key]), dtype=_DTYPES[dtype])
        out.append(t.reshape(shape))
    return out[0], out[1]


# --------------------------------------------------------------------------- graphs (child side)


class _Logits(nn.Module):
    """The model's forward pass from input to logits (a GPT returns (logits, loss))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


def _encode(value: Any) -> Any:
    from torch.fx import Node

    if isinstance(value, Node):
        return {"n": value.name}
    if isinstance(value, list | tuple):
        return {"l": [_encode(v) for v in value]}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"f": repr(value)}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"mf": str(value).removeprefix("torch.")}
    raise HandoverError(f"cannot hand over an argument of type {type(value).__name__}")


def export_graph(model: nn.Module, example: torch.Tensor
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(graph as plain data, the values of every tensor it reads) of ``model`` in eval mode on
    inputs shaped like ``example``. Raises whatever torch.export raises for an untraceable
    model. Child side: this traces the (possibly generated) model."""
    wrapper = _Logits(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch's own pytree code warns about its own deprecated call; not ours to act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            ep = torch.export.export(wrapper, (example,)).run_decompositions()
    finally:
        model.train(was_training)
    values: dict[str, torch.Tensor] = {}
    inputs = []
    for spec in ep.graph_signature.input_specs:
        kind = spec.kind.name
        name = getattr(spec.arg, "name", None)
        if kind == "USER_INPUT":
            inputs.append({"name": name, "kind": "input"})
            continue
        if kind not in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR") or spec.target is None:
            raise HandoverError(f"the traced model reads a {kind} input, which cannot be "
                                "handed over as data")
        target = str(spec.target)
        value = ep.state_dict.get(target)
        if value is None:
            value = ep.constants[target]
        values[target] = value
        # Trained values arrive with each checkpoint (the model's state dict); the rest (a
        # non-persistent buffer, a constant) keep the values handed over with the graph.
        trained = kind == "PARAMETER" or (kind == "BUFFER" and spec.persistent is not False)
        inputs.append({"name": name, "kind": kind.lower(), "target": target,
                       "trained": trained})
    nodes, output = [], None
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output = _encode(list(node.args[0]))
            continue
        if node.op != "call_function":
            raise HandoverError(f"the traced model has a '{node.op}' node")
        if node.target is operator.getitem:
            target = "getitem"
        elif isinstance(node.target, torch._ops.OpOverload):
            target = str(node.target)
        else:
            raise HandoverError(f"the traced model calls {node.target!r}, not an ATen operator")
        nodes.append({"name": node.name, "target": target, "args": _encode(list(node.args)),
                      "kwargs": {k: _encode(v) for k, v in node.kwargs.items()}})
    outputs = [s for s in ep.graph_signature.output_specs]
    if len(outputs) != 1 or outputs[0].kind.name != "USER_OUTPUT":
        raise HandoverError("the traced model must return one tensor of logits and change "
                            "no state")
    graph = {"inputs": inputs, "nodes": nodes, "output": output,
             "example": [list(example.shape), str(example.dtype).removeprefix("torch.")]}
    return graph, values


def model_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint: the model's state dict under the names the exported graph reads."""
    return {f"model.{k}": v for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- graphs (trusted side)


_ALLOWED: dict[str, Any] = {}


def _operator(name: Any) -> Any:
    """The ATen operator ``name`` (e.g. "aten.mm.default") if it is tagged core; else refused."""
    if name == "getitem":
        return operator.getitem
    if not isinstance(name, str) or not _NAME.match(name):
        raise HandoverError(f"operator name {str(name)[:60]!r} is not allowed")
    if name in _ALLOWED:
        return _ALLOWED[name]
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        raise HandoverError(f"operator {name} is not an ATen operator")
    try:
        op = getattr(getattr(torch.ops.aten, parts[1]), parts[2])
    except (AttributeError, RuntimeError):
        raise HandoverError(f"operator {name} does not exist") from None
    if not isinstance(op, torch._ops.OpOverload) or torch.Tag.core not in op.tags:
        raise HandoverError(f"operator {name} is not a core ATen operator")
    _ALLOWED[name] = op
    return op


class TrustedModel(nn.Module):
    """A handed-over model rebuilt from data: graphs (one per input batch size) over the
    tensors they read. Calling it runs ATen operators only; inputs with fewer rows than a
    graph was traced for are padded (extra rows dropped), more rows are split."""

    def __init__(self, graphs: dict[int, Any], inputs: list[dict[str, Any]],
                 values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.graphs = graphs
        self.inputs = inputs
        self.values = values
        self.rows = max(graphs)

    @property
    def trained_targets(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {i["target"]: (tuple(self.values[i["target"]].shape),
                              self.values[i["target"]].dtype)
                for i in self.inputs if i["kind"] != "input" and i["trained"]}

    def load(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Load a checkpoint: every trained tensor the graph reads, same shape and dtype."""
        for target, (shape, dtype) in self.trained_targets.items():
            w = weights.get(target)
            if w is None:
                raise HandoverError(f"the checkpoint lacks '{target}'")
            if tuple(w.shape) != shape or w.dtype != dtype:
                raise HandoverError(f"the checkpoint's '{target}' is {w.dtype} "
                                    f"{tuple(w.shape)}, the traced model's {dtype} {shape}")
        for target in self.trained_targets:
            self.values[target] = weights[target]

    def _run(self, gm: Any, x: torch.Tensor) -> torch.Tensor:
        args = [x if i["kind"] == "input" else self.values[i["target"]] for i in self.inputs]
        out = gm(*args)
        return out[0] if isinstance(out, list | tuple) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n in self.graphs:
            return self._run(self.graphs[n], x)
        rows = self.rows
        outs = []
        for i in range(0, n, rows):
            chunk = x[i:i + rows]
            k = chunk.shape[0]
            if k < rows:  # pad with copies of the first row; their outputs are dropped
                chunk = torch.cat([chunk, chunk[:1].expand(rows - k, *chunk.shape[1:])])
            outs.append(self._run(self.graphs[rows], chunk)[:k])
        return torch.cat(outs)

    def _distinct(self, keep: Callable[[dict[str, Any]], bool]) -> list[torch.Tensor]:
        """The tensors of the inputs ``keep`` selects, each distinct one once: a tensor read
        under two names (tied embeddings) arrives twice and is counted once, judged by its
        contents, which no claim of the sender can change."""
        out: list[torch.Tensor] = []
        for i in self.inputs:
            if i["kind"] == "input" or not keep(i):
                continue
            t = self.values[i["target"]]
            if not any(u.shape == t.shape and u.dtype == t.dtype and torch.equal(u, t)
                       for u in out):
                out.append(t)
        return out

    def count_params(self) -> int:
        return sum(t.numel() for t in self._distinct(lambda i: i["kind"] == "parameter"))

    def model_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._distinct(lambda i: i["trained"]))


def _decoder(env: dict[str, Any], device: torch.device) -> Callable[[Any], Any]:
    def dec(v: Any) -> Any:
        if v is None or isinstance(v, bool | int | float):
            return v
        if isinstance(v, str):
            if not _SHORT_STR.match(v):
                raise HandoverError("a text argument that is not a short plain word")
            return v
        if isinstance(v, dict) and len(v) == 1:
            (k, x), = v.items()
            if k == "n":
                if x not in env:
                    raise HandoverError(f"a reference to an unknown node {str(x)[:60]!r}")
                return env[x]
            if k == "l" and isinstance(x, list):
                return [dec(e) for e in x]
            if k == "f" and x in ("inf", "-inf", "nan"):
                return float(x)
            if k == "dtype" and x in _DTYPES:
                return _DTYPES[x]
            if k == "device":
                return device  # wherever the trusted side evaluates
            if k == "layout" and x == "strided":
                return torch.strided
            if k == "mf" and x in _MEMORY_FORMATS:
                return _MEMORY_FORMATS[x]
        raise HandoverError(f"an argument that is not plain data: {str(v)[:60]}")

    return dec


def _graph_module(data: Mapping[str, Any], device: torch.device) -> Any:
    """An FX GraphModule built from checked data: placeholders we name, core ATen calls with
    keyword names from the operator's schema, one output."""
    import torch.fx

    inputs, nodes = data.get("inputs"), data.get("nodes")
    if not isinstance(inputs, list) or not isinstance(nodes, list):
        raise HandoverError("a graph without inputs or nodes")
    if len(nodes) > MAX_GRAPH_NODES:
        raise HandoverError(f"a graph of {len(nodes):,} nodes (at most {MAX_GRAPH_NODES:,})")
    g = torch.fx.Graph()
    env: dict[str, Any] = {}
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
            raise HandoverError("a malformed graph input")
        env[inp["name"]] = g.placeholder(f"arg{i}")
    dec = _decoder(env, device)
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise HandoverError("a malformed graph node")
        op = _operator(node.get("target"))
        args = dec(node.get("args"))
        kwargs = node.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise HandoverError("a graph node whose arguments are not a list and a mapping")
        if kwargs:
            allowed = {a.name for a in op._schema.arguments} if op is not operator.getitem \
                else set()
            bad = [k for k in kwargs if k not in allowed]
            if bad:
                raise HandoverError(f"operator {node['target']} has no argument "
                                    f"{str(bad[0])[:40]!r}")
        env[node["name"]] = g.call_function(op, tuple(args),
                                            {k: dec(v) for k, v in kwargs.items()})
    out = dec(data.get("output"))
    if not isinstance(out, list) or len(out) != 1:
        raise HandoverError("a graph that does not return one tensor")
    g.output(out[0])
    return torch.fx.GraphModule(nn.Module(), g)


def load_graphs(graphs: list[Mapping[str, Any]], values: Mapping[str, torch.Tensor],
                device: torch.device) -> TrustedModel:
    """Rebuild a handed-over model: the graphs (the same model traced at several batch
    sizes, same inputs) over ``values``. HandoverError for anything not plain, allowed data."""
    if not graphs:
        raise HandoverError("no graph was handed over")
    inputs = graphs[0].get("inputs")
    if not isinstance(inputs, list) or sum(
            isinstance(i, dict) and i.get("kind") == "input" for i in inputs) != 1:
        raise HandoverError("a graph must read exactly one input batch")
    tensors: dict[str, torch.Tensor] = {}
    for i in inputs:
        if i["kind"] == "input":
            continue
        if i.get("kind") not in ("parameter", "buffer", "constant_tensor"):
            raise HandoverError("a graph input of an unknown kind")
        t = values.get(str(i.get("target")))
        if t is None:
            raise HandoverError(f"no value for the graph's input '{str(i.get('target'))[:80]}'")
        tensors[str(i["target"])] = t.to(device)
    built: dict[int, Any] = {}
    for data in graphs:
        if data.get("inputs") != inputs:
            raise HandoverError("graphs of one model must read the same inputs")
        example = data.get("example")
        if (not isinstance(example, list) or len(example) != 2
                or not isinstance(example[0], list) or not example[0]
                or not all(isinstance(n, int) and n > 0 for n in example[0])):
            raise HandoverError("a graph without its example input's shape")
        built[int(example[0][0])] = _graph_module(data, device)
    return TrustedModel(built, list(inputs), tensors)


__all__ = ["HandoverError", "FrameReader", "TrustedModel", "batch_of", "batch_parts",
           "encode_frame", "export_graph", "load_graphs", "model_weights", "pack_weights",
           "read_frame", "unpack_weights", "write_frame"]
