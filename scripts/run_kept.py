#!/usr/bin/env python3
"""Runs one build of vigie over a topic the benchmark harness kept, and prints its figures.

How docs/BENCHMARKS.md measures a change by hand: keep a harness topic and its configs
(`VIGIE_BENCH_KEEP=1 scripts/bench.sh` prints where), then alternate two builds:

    scripts/run_kept.py OLD_BIN /tmp/.tmpXXXX/vigie-10000-1
    scripts/run_kept.py NEW_BIN /tmp/.tmpXXXX/vigie-10000-1

Each run gets a fresh state file, consumer group and HTTP port, reads the kept topic from
the earliest offset until N articles (default 100,000) are processed, and prints:
  * `whole`: articles/s and cores from the first batch taken in to the last article (the
    harness's basis);
  * `steady`: the same from vigie's first processed report (later: the first state write),
    with CPU per article, peak RSS and bytes the process wrote;
  * the pipeline's stage seconds (`vigie_pipeline_stage_seconds_sum`).
With VIGIE_RUN_KEEP=1 the run's directory (its state file and log) is kept and printed.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, kept = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    work = tempfile.mkdtemp(prefix="vigie-run-")
    for sub in ("rules", "entities"):
        shutil.copytree(os.path.join(kept, sub), os.path.join(work, sub))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(kept, "vigie.toml")) as f:
        toml = f.read()
    toml = re.sub(r'group_id = ".*"', f'group_id = "run-{uuid.uuid4().hex[:8]}"', toml)
    toml = re.sub(r'listen = ".*"', f'listen = "127.0.0.1:{port}"', toml)
    toml = re.sub(r'path = ".*vigie.db"', f'path = "{work}/state/vigie.db"', toml)
    with open(os.path.join(work, "vigie.toml"), "w") as f:
        f.write(toml)
    log = open(os.path.join(work, "log"), "w")
    proc = subprocess.Popen([binary, "run", "--config", work], stdout=subprocess.DEVNULL,
                            stderr=log, env=dict(os.environ, VIGIE_LOG="warn"))
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu():
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    def metrics():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
        except OSError:
            return ""

    def value(text, name):
        for line in text.splitlines():
            if line.startswith(name):
                return float(line.split()[-1])
        return 0.0

    first_batch = first_report = None
    started = time.time()
    try:
        while True:
            text = metrics()
            done = value(text, "vigie_articles_processed_total")
            if first_batch is None and value(text, "vigie_batches_total") > 0:
                first_batch = (time.time(), cpu())
            if first_report is None and done > 0:
                first_report = (time.time(), done, cpu())
            if done >= n:
                break
            if proc.poll() is not None:
                sys.exit("vigie exited:\n" + open(os.path.join(work, "log")).read()[-2000:])
            if time.time() - started > 900:
                sys.exit("vigie did not finish in 15 minutes")
            time.sleep(0.005 if first_batch is None else 0.02)
        end, cpu_end = time.time(), cpu()
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) // 1024
        with open(f"/proc/{proc.pid}/io") as f:
            written = next(int(l.split()[1]) for l in f if l.startswith("write_bytes"))
        for line in text.splitlines():
            if "stage_seconds_sum" in line:
                stage = re.search(r'stage="([a-z_]+)"', line).group(1)
                print(f"stage {stage}: {float(line.split()[-1]):.2f} s")
        secs = end - first_batch[0]
        print(f"whole: {done / secs:,.0f} articles/s, {(cpu_end - first_batch[1]) / secs:.2f} cores")
        t, k, c = first_report
        print(f"steady: {(done - k) / (end - t):,.0f} articles/s, {(cpu_end - c) / (end - t):.2f} cores, "
              f"{(cpu_end - c) / (done - k) * 1e6:.1f} µs CPU per article, peak RSS {rss} MB, "
              f"wrote {written / 1e6:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if not os.environ.get("VIGIE_RUN_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


if __name__ == "__main__":
    main()
