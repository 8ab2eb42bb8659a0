"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for the judge tests.

    with FakeOpenAIServer(respond) as server:
        judge = OpenAIJudge(base_url=server.base_url, ...)

``respond(content, attempt)`` gets the user message and how many times this exact message was
received before (0 on the first), and returns an answer string (HTTP 200), an int status code
(an error response), or a :class:`Reply` (an answer after a delay, or a broken body). Every
request is logged in ``server.log``. The server runs in a daemon thread and stops on exit.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering (to trigger client timeouts)
    raw_body: str | None = None  # sent as-is instead of a well-formed completion


def prefer(marker: str) -> Callable[[str, int], str]:
    """A judge that picks the response containing ``marker``; with neither, it always says "A"."""

    def respond(content: str, attempt: int) -> str:
        sections = re.split(r"\n(?:Reply|Summary) [AB]:\n", content)
        label = "More helpful" if "Reply A:" in content else "Preferred"
        letter = "A"
        if len(sections) == 3:
            in_a = marker in sections[1]
            in_b = marker in sections[2].split("\n\nWhich ")[0]
            letter = "B" if in_b and not in_a else "A"
        return f"Comparison: one reply is better than the other.\n{label}: {letter}"

    return respond


class FakeOpenAIServer:
    def __init__(self, respond: Callable[[str, int], object] | None = None, model: str = "fake-judge") -> None:
        self.respond = respond or prefer("GOOD")
        self.model = model
        self.log: list[dict] = []  # one entry per request: content, status, authorization, model
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def contents(self, status: int | None = 200) -> list[str]:
        """Messages received (only those answered with ``status``; None = all)."""
        with self._lock:
            return [entry["content"] for entry in self.log if status is None or entry["status"] == status]

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _reply_for(self, content: str) -> Reply:
        with self._lock:
            attempt = self._seen.get(content, 0)
            self._seen[content] = attempt + 1
        result = self.respond(content, attempt)
        if isinstance(result, Reply):
            return result
        if isinstance(result, int):
            return Reply(status=result)
        return Reply(text=str(result))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: str, headers: dict | None = None) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                    return
                content = payload["messages"][-1]["content"]
                reply = server._reply_for(content)
                with server._lock:
                    server.log.append({"content": content, "status": reply.status, "model": payload.get("model"),
                                       "temperature": payload.get("temperature"),
                                       "authorization": self.headers.get("Authorization")})
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    if reply.raw_body is not None:
                        self._send(reply.status, reply.raw_body)
                    elif reply.status != 200:
                        message = reply.text or f"scripted error {reply.status}"
                        self._send(reply.status, json.dumps({"error": {"message": message, "type": "scripted"}}),
                                   {"Retry-After": "0"} if reply.status == 429 else None)
                    else:
                        self._send(200, json.dumps({
                            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": server.model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": reply.text}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler
