#!/usr/bin/env python3
"""Load benchmark of `fisdit serve` (docs/SERVE.md): N client threads submit short jobs to one
server on loopback and poll each to completion.

    python3 bench/serve_load.py PATH_TO_FISDIT [--clients 20] [--jobs 100] [--out FILE]

Each client runs closed-loop: submit a job, poll it (every --poll s) until it ends, submit the
next. Checks that every job completes and that jobs start in the order the server accepted them
(FIFO: started_at sorted as created_at). Samples the server's RSS (/proc/PID/status VmRSS)
before, during and after. Writes FILE (JSON) and FILE with .md (a short summary; default
bench/results/serve-load-DATE.json and .md) and prints the summary. Exit 1 when a check fails.
This is a benchmark, not a test: ctest does not run it.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "serve"))
import serve_harness as h  # noqa: E402


def pct(values, p):
    """The p-th percentile (0-100), linear between closest ranks; None if empty."""
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class RssSampler(threading.Thread):
    def __init__(self, pid, period=0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.period = period
        self.samples = []  # (monotonic time, KiB)
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            kib = h.read_rss_kib(self.pid)
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            self.stop_event.wait(self.period)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--out", help="JSON output (a .md beside it); default "
                                  "bench/results/serve-load-DATE.json")
    ap.add_argument("--size", default="64x64")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--poll", type=float, default=0.2, help="poll period per client (s)")
    ap.add_argument("--timeout", type=float, default=900, help="the whole run's limit (s)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.clients < 1 or args.jobs < 1:
        ap.error("--clients and --jobs must be positive")
    binary = os.path.abspath(args.binary)
    date = datetime.date.today().isoformat()
    out = args.out or os.path.join(ROOT, "bench", "results", f"serve-load-{date}.json")
    out_md = (out[:-5] if out.endswith(".json") else out) + ".md"

    tmp = h.TempDir(prefix="fisdit-serve-load-")
    srv = h.start_server(binary, tmp.sub("data"), "--queue-max", str(max(200, args.jobs)),
                         device=args.device)
    sampler = RssSampler(srv.pid)
    lock = threading.Lock()
    records = []  # one per job
    errors = []
    requests = [0]
    deadline = time.monotonic() + args.timeout
    rss_start = h.read_rss_kib(srv.pid)
    try:
        # Warm up (the VAE loads at the first job) so the run measures the steady state.
        warm = srv.submit({"prompt": h.PROMPTS[0], "size": args.size, "frames": args.frames,
                           "steps": args.steps})
        if warm[0] != 202:
            raise SystemExit(f"warm-up submission refused: {warm}")
        h.wait_for_status(srv, warm[2]["id"], "completed", timeout=120, poll=0.1)
        time.sleep(0.5)
        sampler.start()
        time.sleep(0.5)
        rss_before = h.read_rss_kib(srv.pid)

        def client(ci):
            mine = list(range(ci, args.jobs, args.clients))
            for n in mine:
                if time.monotonic() > deadline:
                    with lock:
                        errors.append(f"client {ci}: out of time before job {n}")
                    return
                body = {"prompt": h.PROMPTS[n % len(h.PROMPTS)], "size": args.size,
                        "frames": args.frames, "steps": args.steps, "seed": n}
                t0 = time.monotonic()
                w0 = time.time()
                try:
                    st, _, job = srv.submit(body)
                except Exception as e:  # count it, go on
                    with lock:
                        errors.append(f"client {ci} job {n}: submit failed: {e!r}")
                    continue
                t1 = time.monotonic()
                with lock:
                    requests[0] += 1
                if st != 202:
                    with lock:
                        errors.append(f"client {ci} job {n}: submit answered {st}: {job}")
                    continue
                rec = {"n": n, "client": ci, "id": job["id"], "submit_s": t1 - t0,
                       "submitted_wall": w0, "accepted_mono": t1}
                final = None
                while time.monotonic() < deadline:
                    time.sleep(args.poll)
                    try:
                        st, _, j = srv.json("GET", f"/v1/videos/{job['id']}")
                    except Exception as e:
                        with lock:
                            errors.append(f"client {ci} job {n}: poll failed: {e!r}")
                        continue
                    with lock:
                        requests[0] += 1
                    if st == 200 and j["status"] in h.TERMINAL:
                        final = j
                        break
                rec["observed_s"] = time.monotonic() - t0
                if final is None:
                    with lock:
                        errors.append(f"client {ci} job {n}: not finished in time")
                    rec["status"] = "timeout"
                else:
                    rec.update(status=final["status"], created_at=final["created_at"],
                               started_at=final["started_at"],
                               completed_at=final["completed_at"],
                               seconds=final["seconds"], error=final["error"])
                with lock:
                    records.append(rec)

        t_start = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        wall = time.monotonic() - t_start
        if any(t.is_alive() for t in threads):
            errors.append("clients still running at the deadline")
        time.sleep(1.0)
        rss_after = h.read_rss_kib(srv.pid)
        sampler.stop_event.set()
        sampler.join(5)
        _, _, metrics_text = srv.request("GET", "/metrics")
        alive = srv.alive()
        rc = srv.stop(timeout=60)
    finally:
        sampler.stop_event.set()
        if srv.alive():
            srv.kill()
        tmp.cleanup()

    # ---- checks
    completed = [r for r in records if r.get("status") == "completed"]
    checks = {}
    checks["all_completed"] = len(completed) == args.jobs and not errors
    by_created = sorted(completed, key=lambda r: r["created_at"])
    by_started = sorted(completed, key=lambda r: r["started_at"])
    checks["fifo"] = [r["id"] for r in by_created] == [r["id"] for r in by_started]
    overlap = sum(1 for a, b in zip(by_started, by_started[1:])
                  if b["started_at"] < a["completed_at"] - 1e-3)
    checks["one_at_a_time"] = overlap == 0
    checks["server_alive_and_clean_exit"] = alive and rc == 0

    # ---- numbers
    submit = [r["submit_s"] for r in records]
    e2e = [r["completed_at"] - r["created_at"] for r in completed]
    observed = [r["observed_s"] for r in completed]
    run = [r["completed_at"] - r["started_at"] for r in completed]
    wait = [r["started_at"] - r["created_at"] for r in completed]
    if completed:
        span = max(r["completed_at"] for r in completed) - min(r["created_at"] for r in completed)
    else:
        span = 0
    rss = [k for _, k in sampler.samples]
    mib = lambda k: None if k is None else round(k / 1024.0, 1)  # noqa: E731
    r3 = lambda x: None if x is None else round(x, 4)  # noqa: E731
    result = {
        "benchmark": "fisdit serve load (bench/serve_load.py)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "ok": all(checks.values()),
        "checks": checks,
        "config": {"clients": args.clients, "jobs": args.jobs, "device": args.device,
                   "job": {"size": args.size, "frames": args.frames, "steps": args.steps},
                   "poll_s": args.poll, "mode": "closed loop: submit, poll to the end, next"},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "python": platform.python_version()},
        "binary": os.path.relpath(binary),
        "wall_s": round(wall, 3),
        "throughput_jobs_per_s": r3(len(completed) / span) if span > 0 else None,
        "completed": len(completed),
        "http_requests": requests[0],
        "submit_latency_s": {"p50": r3(pct(submit, 50)), "p95": r3(pct(submit, 95)),
                             "max": r3(max(submit) if submit else None)},
        "job_latency_s": {"p50": r3(pct(e2e, 50)), "p95": r3(pct(e2e, 95)),
                          "max": r3(max(e2e) if e2e else None),
                          "what": "completed_at - created_at (server clock)"},
        "observed_latency_s": {"p50": r3(pct(observed, 50)), "p95": r3(pct(observed, 95)),
                               "what": "submit to the poll that saw it end (client clock)"},
        "queue_wait_s": {"p50": r3(pct(wait, 50)), "p95": r3(pct(wait, 95))},
        "run_s": {"p50": r3(pct(run, 50)), "p95": r3(pct(run, 95))},
        "rss_mib": {"at_start": mib(rss_start), "before": mib(rss_before), "min": mib(min(rss) if rss else None),
                    "max": mib(max(rss) if rss else None), "after": mib(rss_after),
                    "samples": len(rss)},
        "errors": errors[:50],
        "metrics_at_end": metrics_text.decode("utf-8", "replace"),
    }
    check_text = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items())
    s, j, rr = result["submit_latency_s"], result["job_latency_s"], result["rss_mib"]
    md = [
        f"# fisdit serve load, {result['date']}",
        "",
        f"{args.clients} clients, {args.jobs} jobs of {args.size}, {args.frames} frames, "
        f"{args.steps} steps on {args.device} ({result['machine']['cpu']}, "
        f"{result['machine']['cores']} cores, OMP_NUM_THREADS="
        f"{result['machine']['omp_num_threads']}); closed loop, polling every {args.poll} s.",
        "",
        "| | |",
        "| --- | --- |",
        f"| completed | {len(completed)} / {args.jobs} |",
        f"| throughput | {result['throughput_jobs_per_s']} jobs/s |",
        f"| submit latency p50 / p95 | {fmt_ms(s['p50'])} / {fmt_ms(s['p95'])} |",
        f"| job latency p50 / p95 (created to completed) | {j['p50']} s / {j['p95']} s |",
        f"| run time p50 (started to completed) | {result['run_s']['p50']} s |",
        f"| RSS at start / before (after a warm-up job) / min / max / after | "
        f"{rr['at_start']} / {rr['before']} / {rr['min']} / {rr['max']} / {rr['after']} MiB |",
        f"| checks | {check_text} |",
    ]
    if errors:
        md += ["", f"{len(errors)} errors; first: {errors[0]}"]
    summary = "\n".join(md) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(out_md, "w") as f:
        f.write(summary)
    print(summary)
    print(f"wrote {out} and {out_md}")
    return 0 if result["ok"] else 1


def fmt_ms(s):
    return "n/a" if s is None else f"{s * 1000:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
