#!/usr/bin/env python3
"""Prints what the demo produced: vigie's alert events, the emails and the webhooks.

usage: demo_report.py API_URL DEMO_DIR
"""
import email
import email.policy
import glob
import json
import os
import sys
import urllib.request

api, demo = sys.argv[1], sys.argv[2]


def title(t):
    print(f"\n\033[1m== {t}\033[0m")


title("alert events (GET /api/alerts)")
data = json.load(urllib.request.urlopen(api + "/api/alerts"))
for a in data["alerts"]:
    print(f"{a['at']}  {a['kind']:8} {a['rule_name']:20} observed {a['observed']:3} vs expected {a['expected']:6.2f}  ratio {a['ratio']:6.1f}")
print(f"outbox: {data['outbox']}")

title("emails received by the mail catcher")
for path in sorted(glob.glob(os.path.join(demo, "mail", "new", "*"))):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    print(f"To: {msg['To']}  Subject: {msg['Subject']}")

title("webhooks received")
hooks = os.path.join(demo, "webhooks.jsonl")
if os.path.exists(hooks):
    for line in open(hooks):
        r = json.loads(line)
        e = r["event"]
        print(("signature ok   " if r["signature_ok"] else "BAD SIGNATURE  ") + e["summary"])
        if e["kind"] == "started":
            for art in e["top_articles"][:3]:
                print(f"      - {art['title']} ({art.get('source') or ''})")
