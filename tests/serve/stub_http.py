"""A base for the small loopback HTTP servers that stand in for the app where a test must script the
server's answers (error bodies, slow replies); tests of the real app use ``serve_url``."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


class ScriptedHandler(BaseHTTPRequestHandler):
    """Quiet request log and one ``reply`` helper; subclasses implement ``do_GET`` / ``do_POST``."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def reply(self, status: int, body: bytes, kind: str = "application/json", retry_after=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
