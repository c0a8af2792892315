"""Test doubles shared by several test modules."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatCompletions:
    """A TEST DOUBLE of an OpenAI-compatible /chat/completions endpoint on 127.0.0.1, never a real judge.

    Replies are scripted by the harmful prompt's text: a response containing "SCORE=n" gets `#thescore: n`,
    "GARBAGE" gets an unparsable reply, and "FLAKY" fails with HTTP 500 once before succeeding.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.failed_once: set[str] = set()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append(body)
                double.headers.append(dict(self.headers))
                content = body["messages"][0]["content"]
                if "FLAKY" in content and content not in double.failed_once:
                    double.failed_once.add(content)
                    self.send_response(500)
                    self.end_headers()
                    return
                score = next((c for c in "12345" if f"SCORE={c}" in content), "1")
                text = "I refuse to score." if "GARBAGE" in content else f"#thereason: ok\n#thescore: {score}"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
