"""A competent Python consumer, the yardstick of the performance issue.

Reads a topic from the beginning with confluent-kafka, parses each article's JSON,
lower-cases and tokenizes title and body, and looks the tokens (and token pairs, for
two-word phrases) up in a set of keywords. Prints {"articles", "seconds", "rate"} as JSON,
timed from the first record to the last.

    python scripts/bench_consumer.py --brokers H:P --topic T --expect N --keywords FILE
"""

import argparse
import json
import re
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

TOKEN = re.compile(r"\w+")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--keywords", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()

    words = [w.strip().lower() for w in open(args.keywords, encoding="utf-8") if w.strip()]
    singles = {w for w in words if " " not in w}
    pairs = {tuple(w.split()) for w in words if len(w.split()) == 2}

    c = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": "bench-python-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(args.topic, p, 0) for p in range(args.partitions)])
    seen = hits = 0
    first = last = None
    quiet = time.monotonic()
    while seen < args.expect:
        batch = c.consume(num_messages=1000, timeout=0.1)
        if not batch:
            if time.monotonic() - quiet > 20:
                break
            continue
        quiet = time.monotonic()
        if first is None:
            first = time.monotonic()
        for m in batch:
            if m.error():
                raise SystemExit(str(m.error()))
            doc = json.loads(m.value())
            tokens = TOKEN.findall((doc.get("title", "") + " " + doc.get("body", "")).lower())
            hits += sum(1 for t in tokens if t in singles)
            hits += sum(1 for p in zip(tokens, tokens[1:]) if p in pairs)
            seen += 1
        last = time.monotonic()
    c.close()
    if seen < args.expect:
        raise SystemExit(f"read {seen} of {args.expect}")
    secs = last - first
    print(json.dumps({"articles": seen, "seconds": secs, "rate": seen / secs, "hits": hits}))


if __name__ == "__main__":
    main()
