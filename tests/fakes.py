"""Test doubles shared by several test modules."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatCompletions:
    """A TEST DOUBLE of an OpenAI-compatible /chat/completions endpoint on 127.0.0.1, never a real judge.

    Replies are scripted by the text of the judge prompt:
    - "SCORE=n" gets `#thescore: n` (1 otherwise); "GARBAGE" gets an unparsable reply;
    - "FLAKY" fails with HTTP 500 once, "DROP" closes the connection without an answer once, and "RATE" answers
      429 with `Retry-After: 2` once, before succeeding;
    - the key `Bearer sk-bad` gets 401, as a real endpoint answers a wrong key.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.failed_once: set[tuple[str, str]] = set()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def fail_once(self, marker: str, content: str) -> bool:
                if marker in content and (marker, content) not in double.failed_once:
                    double.failed_once.add((marker, content))
                    return True
                return False

            def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append(body)
                double.headers.append(dict(self.headers))
                content = body["messages"][0]["content"]
                if self.headers.get("Authorization") == "Bearer sk-bad":
                    self.reply(401, {"error": {"message": "Incorrect API key provided"}})
                elif self.fail_once("FLAKY", content):
                    self.send_response(500)
                    self.end_headers()
                elif self.fail_once("DROP", content):
                    self.close_connection = True  # no status line at all: the client sees RemoteDisconnected
                elif self.fail_once("RATE", content):
                    self.reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "2"})
                else:
                    score = next((c for c in "12345" if f"SCORE={c}" in content), "1")
                    text = "I refuse to score." if "GARBAGE" in content else f"#thereason: ok\n#thescore: {score}"
                    self.reply(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
