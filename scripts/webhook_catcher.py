#!/usr/bin/env python3
"""A tiny webhook receiver for the demo: verifies vigie's signature and prints each alert.

usage: webhook_catcher.py PORT SECRET OUTPUT.jsonl
"""
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, SECRET, OUT = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]


def verify(header, body):
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    mac = hmac.new(SECRET, parts.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts.get("v1", ""))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        ok = verify(self.headers.get("x-vigie-signature", ""), body)
        event = json.loads(body)
        with open(OUT, "a") as f:
            f.write(json.dumps({"signature_ok": ok, "idempotency_key": self.headers.get("idempotency-key"), "event": event}) + "\n")
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
