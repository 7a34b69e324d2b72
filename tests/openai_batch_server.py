"""A small, real HTTP server on 127.0.0.1 speaking the OpenAI Files + Batch API (and chat completions).

vLLM's OpenAI-compatible server has no ``/v1/files`` or ``/v1/batches``, so the Batch API tests run
against this one: uploads are parsed from real multipart bodies, batches are created, listed,
polled and finalized, and every request line is answered by ``responder`` — a deterministic
function in the fast tests, or a POST of the line's body to a real vLLM server's chat endpoint.

What it does not prove: OpenAI's own validation of the input file (it checks only that each line
is JSON with a custom_id and a body), its queueing and 24 h expiry on the clock (expiry is
scripted: ``expire`` names requests left unanswered in the first round), rate limits on batch
tokens, and the exact error-file format of every failure.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict], tuple[int, dict]]


class BatchAPI:
    """The server's state, what it saw, and how it answers."""

    def __init__(self, responder: Responder, polls_before_done: int = 1) -> None:
        self.responder = responder
        self.polls_before_done = polls_before_done
        self.release = threading.Event()  # batches stay in_progress until set
        self.release.set()
        self.expire: set[str] = set()  # custom_ids left unanswered by the first batch that holds them
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.uploads = 0
        self.creates = 0
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API ------------------------------------------------------------------------------
    def _file(self, data: bytes, name: str, purpose: str) -> dict:
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": name,
                "purpose": purpose, "status": "processed"}

    def upload(self, content_type: str, body: bytes) -> tuple[int, dict]:
        head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
            return 400, {"error": {"message": "expected a file with purpose=batch"}}
        for line in fields["file"][1].decode().splitlines():
            rec = json.loads(line)
            if not rec.get("custom_id") or not isinstance(rec.get("body"), dict):
                return 400, {"error": {"message": f"bad line {line[:60]}"}}
        with self.lock:
            self.uploads += 1
            return 200, self._file(fields["file"][1], fields["file"][0] or "input.jsonl", "batch")

    def create(self, req: dict) -> tuple[int, dict]:
        if req.get("input_file_id") not in self.files or req.get("completion_window") != "24h":
            return 400, {"error": {"message": "unknown input_file_id or completion_window"}}
        with self.lock:
            self.creates += 1
            bid = f"batch-{len(self.batches) + 1}"
            n = len(self.files[req["input_file_id"]].decode().splitlines())
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": req["endpoint"], "input_file_id": req["input_file_id"],
                "completion_window": "24h", "status": "validating", "created_at": int(time.time()),
                "metadata": req.get("metadata"), "request_counts": {"total": n, "completed": 0, "failed": 0},
                "output_file_id": None, "error_file_id": None}
            self.polls[bid] = 0
            return 200, self.batches[bid]

    def retrieve(self, bid: str) -> tuple[int, dict]:
        with self.lock:
            batch = self.batches.get(bid)
            if batch is None:
                return 404, {"error": {"message": f"no batch {bid}"}}
            self.polls[bid] += 1
            if batch["status"] in ("validating", "in_progress"):
                batch["status"] = "in_progress"
                if self.release.is_set() and self.polls[bid] > self.polls_before_done:
                    self._finish(batch)
            return 200, batch

    def _finish(self, batch: dict) -> None:
        out, err = [], []
        expired = False
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            rec = json.loads(line)
            cid = rec["custom_id"]
            if cid in self.expire:
                self.expire.discard(cid)
                expired = True
                continue
            status, body = self.responder(rec["body"])
            row = {"id": f"resp-{cid}", "custom_id": cid, "error": None,
                   "response": {"status_code": status, "request_id": f"r-{cid}", "body": body}}
            (out if status == 200 else err).append(json.dumps(row))
        counts = batch["request_counts"]
        counts["completed"], counts["failed"] = len(out), len(err)
        if out:
            batch["output_file_id"] = self._file(("\n".join(out) + "\n").encode(), "out.jsonl", "batch_output")["id"]
        if err:
            batch["error_file_id"] = self._file(("\n".join(err) + "\n").encode(), "err.jsonl", "batch_output")["id"]
        batch["status"] = "expired" if expired else "completed"

    def listing(self) -> tuple[int, dict]:
        with self.lock:
            data = list(reversed(self.batches.values()))  # newest first, as OpenAI lists them
        return 200, {"object": "list", "data": data, "has_more": False,
                     "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    # -- HTTP ---------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: dict | bytes, kind: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                api.auth.append(self.headers.get("Authorization"))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/files":
                    self._send(*api.upload(self.headers["Content-Type"], body))
                elif self.path == "/v1/batches":
                    self._send(*api.create(json.loads(body)))
                elif self.path == "/v1/chat/completions":
                    self._send(*api.responder(json.loads(body)))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_GET(self) -> None:  # noqa: N802
                api.auth.append(self.headers.get("Authorization"))
                path = self.path.split("?", 1)[0]
                parts = path.strip("/").split("/")
                if path == "/v1/batches":
                    self._send(*api.listing())
                elif len(parts) == 3 and parts[1] == "batches":
                    self._send(*api.retrieve(parts[2]))
                elif len(parts) == 4 and parts[1] == "files" and parts[3] == "content" and parts[2] in api.files:
                    self._send(200, api.files[parts[2]], "application/octet-stream")
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

        return Handler


def echo_responder(body: dict) -> tuple[int, dict]:
    """Answer a chat-completions body with ``echo:<its text>`` and fixed usage (100 prompt, 5 completion)."""
    text = next(c["text"] for c in body["messages"][0]["content"] if c["type"] == "text")
    return 200, {"id": "chatcmpl-x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo:{text}"},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}}


def delegate_to(base_url: str) -> Responder:
    """Answer each request line by POSTing its body to a real chat-completions endpoint (e.g. vLLM)."""
    import urllib.error
    import urllib.request

    def respond(body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    return respond
