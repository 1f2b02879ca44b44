#!/usr/bin/env python3
"""Mock Anthropic Messages API upstream that records every request it gets.

Stdlib only.  Binds 127.0.0.1 and prints the port it listens on as the first
line of stdout, so a test can start it with port 0 and read the port back.

Usage:
    capture_upstream.py [PORT] [LOG_JSONL] [--scenario NAME]

    PORT       port to bind on 127.0.0.1 (default 0 = pick a free one)
    LOG_JSONL  file that gets one JSON object per request (default: env
               CAPTURE_LOG, else no log file)
    --scenario one of (default: env MOCK_SCENARIO, else "text"):
        text          every /v1/messages call answers the text "Hello from the mock"
        tool          a request that carries tools[] and whose last message holds
                      no tool_result is answered with a tool_use block
                      (tool MOCK_TOOL_NAME, default "Bash", input from
                      MOCK_TOOL_INPUT, default {"command": "echo hi"});
                      every other request gets the text answer
        stream_drop   streamed calls: send message_start and a partial
                      text delta, then close the connection without
                      message_stop; non-stream calls answer normally
        stream_eof    streamed calls: message_start, content_block_start, one
                      text delta, then a clean end of the HTTP body with no
                      content_block_stop/message_delta/message_stop
        stream_error  streamed calls: send message_start then an SSE
                      "error" event (overloaded_error); non-stream normal
        http529       every /v1/messages call answers HTTP 529 overloaded_error

Routes:
    POST /v1/messages               (query string ignored, e.g. ?beta=true)
    POST /v1/messages/count_tokens  -> {"input_tokens": 10}
    anything else                   -> 404 JSON error (still logged)

Each log line: {"ts", "seq", "method", "path", "headers": [[name, value], ...],
"body": <raw body text>, "body_size": <bytes>, "response": <what was answered>}.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MOCK_TEXT = "Hello from the mock"


class State:
    lock = threading.Lock()
    seq = 0
    log_path = None
    scenario = "text"
    tool_name = "Bash"
    tool_input = {"command": "echo hi"}


def _next_seq():
    with State.lock:
        State.seq += 1
        return State.seq


def _write_log(entry):
    if not State.log_path:
        return
    line = json.dumps(entry, ensure_ascii=False)
    with State.lock:
        with open(State.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _usage(input_tokens=12, output_tokens=6):
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _wants_tool(req):
    """In the 'tool' scenario: answer with tool_use unless the conversation
    already carries a tool_result in its last message (the follow-up)."""
    if State.scenario != "tool":
        return False
    if not req.get("tools"):
        return False
    msgs = req.get("messages") or []
    if not msgs:
        return False
    content = msgs[-1].get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "capture-upstream/1"

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    # ---- helpers -------------------------------------------------------
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = b""
            while True:
                size_line = self.rfile.readline().strip()
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return data
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send_json(self, status, obj, extra_headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_mock_" + uuid.uuid4().hex[:20])
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, event, obj):
        self._chunk(("event: %s\ndata: %s\n\n" % (event, json.dumps(obj))).encode())

    def _handle(self, method):
        seq = _next_seq()
        body = self._read_body() if method not in ("GET", "HEAD") else b""
        if method in ("GET", "HEAD") and self.headers.get("Content-Length"):
            body = self._read_body()
        entry = {
            "ts": time.time(),
            "seq": seq,
            "method": method,
            "path": self.path,
            "http_version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", errors="replace"),
            "body_size": len(body),
        }
        path_only = self.path.split("?", 1)[0]
        try:
            if method == "POST" and path_only == "/v1/messages":
                entry["response"] = self._messages(body)
            elif method == "POST" and path_only == "/v1/messages/count_tokens":
                self._send_json(200, {"input_tokens": 10})
                entry["response"] = "count_tokens"
            else:
                self._send_json(404, {
                    "type": "error",
                    "error": {"type": "not_found_error",
                              "message": "mock: no route for %s %s" % (method, path_only)},
                })
                entry["response"] = "404"
        finally:
            _write_log(entry)

    # ---- /v1/messages --------------------------------------------------
    def _messages(self, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            self._send_json(400, {"type": "error", "error": {
                "type": "invalid_request_error", "message": "mock: body is not JSON"}})
            return "400"
        model = req.get("model", "mock-model")
        stream = bool(req.get("stream"))
        msg_id = "msg_mock_" + uuid.uuid4().hex[:24]

        if State.scenario == "http529":
            self._send_json(529, {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
            return "529"

        use_tool = _wants_tool(req)
        if use_tool:
            tool_id = "toolu_mock_" + uuid.uuid4().hex[:20]
            block = {"type": "tool_use", "id": tool_id, "name": State.tool_name,
                     "input": State.tool_input}
            stop_reason = "tool_use"
        else:
            block = {"type": "text", "text": MOCK_TEXT}
            stop_reason = "end_turn"

        if not stream:
            self._send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [block], "stop_reason": stop_reason, "stop_sequence": None,
                "usage": _usage(),
            })
            return "json:" + block["type"]

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_mock_" + uuid.uuid4().hex[:20])
        self.end_headers()
        self._sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": _usage(output_tokens=1)}})

        if State.scenario == "stream_error":
            self._sse("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
            self._chunk(b"")
            return "sse:error_event"

        if use_tool:
            self._sse("content_block_start", {"type": "content_block_start", "index": 0,
                      "content_block": {"type": "tool_use", "id": block["id"],
                                        "name": block["name"], "input": {}}})
            self._sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                      "delta": {"type": "input_json_delta",
                                "partial_json": json.dumps(block["input"])}})
        else:
            self._sse("content_block_start", {"type": "content_block_start", "index": 0,
                      "content_block": {"type": "text", "text": ""}})
            self._sse("ping", {"type": "ping"})
            if State.scenario == "stream_eof":
                self._sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                          "delta": {"type": "text_delta", "text": "Hello"}})
                self._chunk(b"")  # clean end of body, but no message_stop
                return "sse:eof_without_message_stop"
            if State.scenario == "stream_drop":
                self._sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                          "delta": {"type": "text_delta", "text": "Hello"}})
                # abort: no terminating chunk, close the socket
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return "sse:dropped"
            for piece in ("Hello ", "from the mock"):
                self._sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                          "delta": {"type": "text_delta", "text": piece}})
        self._sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        self._sse("message_delta", {"type": "message_delta",
                  "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                  "usage": {"output_tokens": 6}})
        self._sse("message_stop", {"type": "message_stop"})
        self._chunk(b"")
        return "sse:" + block["type"]

    def do_POST(self):
        self._handle("POST")

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_OPTIONS(self):
        self._handle("OPTIONS")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("port", nargs="?", type=int, default=0)
    ap.add_argument("log", nargs="?", default=os.environ.get("CAPTURE_LOG"))
    ap.add_argument("--scenario", default=os.environ.get("MOCK_SCENARIO", "text"),
                    choices=["text", "tool", "stream_drop", "stream_eof",
                             "stream_error", "http529"])
    args = ap.parse_args(argv)
    State.log_path = args.log
    State.scenario = args.scenario
    State.tool_name = os.environ.get("MOCK_TOOL_NAME", "Bash")
    if os.environ.get("MOCK_TOOL_INPUT"):
        State.tool_input = json.loads(os.environ["MOCK_TOOL_INPUT"])

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
