#!/usr/bin/env python3
"""`fisdit serve` end to end: the JSON API of docs/SERVE.md on the bundled model, on loopback.

    python3 tests/serve/test_api.py PATH_TO_FISDIT [unittest args]

Exit 0 when every test passes, 1 otherwise.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_harness as h  # noqa: E402

JOB_KEYS = {"id", "object", "status", "created_at", "started_at", "completed_at", "progress",
            "stage", "step", "steps", "queue_position", "request", "seconds", "error",
            "content_url"}
REQUEST_KEYS = {"prompt", "negative_prompt", "size", "frames", "steps", "seed", "guidance",
                "shift", "solver", "fis", "cache", "precision", "image"}


class ApiTest(h.ServerTestCase):

    # --------------------------------------------------------------------------------------
    # helpers

    def check_job(self, job, status=None):
        self.assertIsInstance(job, dict)
        self.assertTrue(JOB_KEYS <= set(job), f"job lacks {JOB_KEYS - set(job)}: {job}")
        self.assertRegex(job["id"], h.ID_RE)
        self.assertEqual(job["object"], "video")
        self.assertIn(job["status"], ("queued", "in_progress", "completed", "failed",
                                      "cancelled"))
        if status:
            self.assertEqual(job["status"], status, job)
        self.assertIsInstance(job["created_at"], (int, float))
        self.assertIsInstance(job["progress"], (int, float))
        self.assertTrue(0 <= job["progress"] <= 100, job)
        self.assertTrue(REQUEST_KEYS <= set(job["request"]),
                        f"request lacks {REQUEST_KEYS - set(job['request'])}: {job}")
        self.assertIsInstance(job["seconds"], dict)
        st = job["status"]
        if st == "queued":
            self.assertIsNone(job["started_at"], job)
            self.assertIsNone(job["completed_at"], job)
            self.assertIsNone(job["stage"], job)
            self.assertIsInstance(job["queue_position"], int, job)
            self.assertGreaterEqual(job["queue_position"], 0)
            self.assertIsNone(job["content_url"], job)
        elif st == "in_progress":
            self.assertIsInstance(job["started_at"], (int, float), job)
            self.assertIsNone(job["queue_position"], job)
            self.assertIn(job["stage"], ("text", "image", "denoise", "decode", "write"), job)
            self.assertIsNone(job["content_url"], job)
        elif st == "completed":
            self.assertEqual(job["progress"], 100, job)
            self.assertIsNone(job["stage"], job)
            self.assertIsNone(job["queue_position"], job)
            self.assertIsNone(job["error"], job)
            self.assertEqual(job["content_url"], f"/v1/videos/{job['id']}/content")
            self.assertLessEqual(job["created_at"], job["started_at"])
            self.assertLessEqual(job["started_at"], job["completed_at"])
            self.assertEqual(job["step"], job["steps"], job)
        else:  # failed, cancelled
            self.assertIsNone(job["stage"], job)
            self.assertIsNone(job["content_url"], job)
            self.assertIsInstance(job["error"], dict, job)
            self.assertIsInstance(job["error"].get("message"), str, job)
            self.assertTrue(job["error"]["message"], job)

    def model_info(self, srv):
        st, _, info = srv.json("GET", "/v1/model")
        self.assertEqual(st, 200, info)
        return info

    def download(self, srv, job_id, headers=None):
        st, hd, data = srv.request("GET", f"/v1/videos/{job_id}/content", headers=headers)
        self.assertEqual(st, 200, data[:300])
        self.assertTrue(hd.get("content-type", "").startswith("video/mp4"), hd)
        self.assertEqual(data[4:8], b"ftyp", data[:16])
        return data

    # --------------------------------------------------------------------------------------

    def test_submit_poll_events_download(self):
        srv = self.start()
        model = self.model_info(srv)
        defaults = model["defaults"]

        # A first job so the second one is caught queued when its event stream opens.
        first = self.submit_ok(srv, h.tiny_job(h.PROMPTS[2]))
        body = h.tiny_job(h.PROMPTS[0], frames=9, steps=4, seed=7)
        st, hd, job = srv.submit(body)
        self.assertEqual(st, 202, job)
        self.check_job(job, "queued")
        self.assertTrue(hd.get("location", "").endswith(f"/v1/videos/{job['id']}"), hd)
        self.assertTrue(hd.get("content-type", "").startswith("application/json"), hd)
        req = job["request"]
        self.assertEqual(req["prompt"], body["prompt"])
        self.assertEqual(req["size"], "64x64")
        self.assertEqual(req["frames"], 9)
        self.assertEqual(req["steps"], 4)
        self.assertEqual(req["seed"], 7)
        self.assertEqual(req["negative_prompt"], "")
        self.assertIs(req["image"], False)
        for k in ("guidance", "shift", "solver", "fis", "cache", "precision"):
            self.assertEqual(req[k], defaults[k], f"request {k}: {req} vs defaults {defaults}")
        self.assertEqual(req["fis"], "balanced")
        self.assertEqual(req["cache"], "off")
        self.assertEqual(req["precision"], "fp32")
        self.assertEqual(job["steps"], 4)
        self.assertIsNone(job["error"])

        # The event stream: progress events (non-decreasing progress), then done, then closed.
        es = h.EventStream(srv, job["id"])
        try:
            self.assertEqual(es.status, 200, es.body() if es.status != 200 else "")
            self.assertTrue(es.headers.get("content-type", "").startswith("text/event-stream"),
                            es.headers)
            events = es.read_all(timeout=60)
        finally:
            es.close()
        self.assertGreaterEqual(len(events), 2, events)
        names = [e["event"] for e in events]
        self.assertEqual(names[-1], "done", names)
        self.assertTrue(all(n == "progress" for n in names[:-1]), names)
        last = -1
        statuses = []
        for e in events:
            self.assertIsNotNone(e["json"], f"event data is not JSON: {e['data'][:300]}")
            self.assertEqual(e["json"]["id"], job["id"])
            p = e["json"]["progress"]
            self.assertGreaterEqual(p, last, f"progress went back: {[x['json']['progress'] for x in events]}")
            last = p
            statuses.append(e["json"]["status"])
        self.assertIn("in_progress", statuses, statuses)
        progresses = sorted({e["json"]["progress"] for e in events})
        self.assertGreaterEqual(len([p for p in progresses if p < 100]), 2,
                                f"too few progress steps seen: {progresses}")
        done = events[-1]["json"]
        self.check_job(done, "completed")

        # Poll agrees.
        final = h.wait_for_status(srv, job["id"], "completed", timeout=60)
        self.check_job(final, "completed")
        secs = final["seconds"]
        for k in ("text_encode", "denoise", "total"):
            self.assertIn(k, secs, secs)
        for k, v in secs.items():
            self.assertIsInstance(v, (int, float), secs)
            self.assertGreaterEqual(v, 0, secs)
        self.assertGreater(secs["denoise"], 0, secs)
        self.assertGreaterEqual(secs["total"], secs["denoise"], secs)
        self.assertEqual(final["request"], job["request"])

        data = self.download(srv, job["id"])
        boxes = [b[0] for b in h.mp4_boxes(data)]
        self.assertEqual(boxes[0], "ftyp", boxes)
        self.assertIn("moov", boxes, boxes)
        self.assertIn("mdat", boxes, boxes)
        self.assertEqual(h.mp4_video_info(data), ("avc1", 64, 64, 9), "video track")
        path = os.path.join(self.tmpdir("dl"), "job.mp4")
        with open(path, "wb") as f:
            f.write(data)
        probe = h.ffprobe_frames(path)
        if probe is None:
            print("  (ffprobe not installed: decode check skipped)", file=sys.stderr)
        else:
            codec, w, hgt, n = probe
            self.assertEqual((codec, w, hgt, n), ("h264", 64, 64, 9), probe)

        h.wait_for_status(srv, first["id"], "completed", timeout=60)
        # A finished job's stream: its state at once, then done, then closed.
        evs = h.read_events(srv, job["id"], timeout=15)
        self.assertTrue(evs and evs[-1]["event"] == "done", evs)
        self.assertEqual(evs[-1]["json"]["status"], "completed")
        srv.stop()

    def test_health_model_page(self):
        srv = self.start(None, "--queue-max", "5", "--max-frames", "101",
                         "--max-pixels", "65536")
        st, hd, health = srv.json("GET", "/health")
        self.assertEqual(st, 200, health)
        self.assertEqual(health.get("status"), "ok", health)
        self.assertEqual(health.get("device"), "cpu", health)
        self.assertIsInstance(health.get("model"), str)
        self.assertEqual(health.get("queue"), 0, health)

        info = self.model_info(srv)
        for k in ("model", "task", "takes_image", "needs_image", "defaults", "options",
                  "limits", "fps"):
            self.assertIn(k, info, info)
        self.assertEqual(info["model"], health["model"])
        self.assertEqual(info["task"], "t2v")
        self.assertIs(info["takes_image"], False)
        self.assertIs(info["needs_image"], False)
        d = info["defaults"]
        for k in ("size", "frames", "steps", "shift", "guidance", "solver", "fis"):
            self.assertIn(k, d, d)
        self.assertEqual(d["size"], "128x128")
        self.assertEqual(d["frames"], 33)
        self.assertEqual(d["steps"], 4)
        opts = info["options"]
        self.assertEqual(set(opts["fis"]), {"off", "balanced", "fast"}, opts)
        self.assertEqual(set(opts["cache"]), {"off", "magcache-force"}, opts)
        self.assertEqual(set(opts["solver"]), {"euler", "unipc", "dpm++"}, opts)
        self.assertEqual(opts["precision"], ["fp32"], opts)
        lim = info["limits"]
        self.assertEqual(lim["max_frames"], 101, lim)
        self.assertEqual(lim["max_pixels"], 65536, lim)
        self.assertEqual(lim["queue_max"], 5, lim)
        self.assertGreater(info["fps"], 0)

        st, hd, page = srv.request("GET", "/")
        self.assertEqual(st, 200)
        self.assertTrue(hd.get("content-type", "").startswith("text/html"), hd)
        self.assertTrue(page.lower().lstrip().startswith((b"<!doctype html", b"<html")),
                        page[:200])
        # The page loads nothing from elsewhere.
        self.assertIsNone(re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//""", page),
                          "the page refers to another origin")
        srv.stop()

    def test_metrics(self):
        srv = self.start()
        t1 = self.submit_ok(srv, h.tiny_job(h.PROMPTS[0]))
        t2 = self.submit_ok(srv, h.tiny_job(h.PROMPTS[1]))
        h.wait_for_status(srv, t1["id"], "completed")
        h.wait_for_status(srv, t2["id"], "completed")
        # A third job cancelled while queued: it sits behind a long one, both cancelled.
        long = self.submit_ok(srv, h.long_job())
        c = self.submit_ok(srv, h.tiny_job())
        st, _, obj = srv.json("DELETE", f"/v1/videos/{c['id']}")
        self.assertEqual(st, 200, obj)
        st, _, obj = srv.json("DELETE", f"/v1/videos/{long['id']}")
        self.assertEqual(st, 200, obj)
        h.wait_for_status(srv, long["id"], "cancelled", timeout=30)
        h.wait_idle(srv)

        st, hd, body = srv.request("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hd.get("content-type", "").startswith("text/plain"), hd)
        text = body.decode()
        m = h.parse_metrics(text)
        for name in ("fisdit_queue_length", "fisdit_jobs", "fisdit_step_seconds",
                     "fisdit_stage_seconds", "fisdit_http_requests_total",
                     "fisdit_uptime_seconds"):
            self.assertRegex(text, rf"(?m)^# TYPE {name} ", f"no TYPE line for {name}")
        self.assertRegex(text, r"(?m)^# TYPE fisdit_step_seconds summary")
        self.assertRegex(text, r"(?m)^# TYPE fisdit_stage_seconds summary")
        self.assertRegex(text, r"(?m)^# TYPE fisdit_http_requests_total counter")
        self.assertEqual(h.metric(m, "fisdit_queue_length"), 0)
        self.assertEqual(h.metric(m, "fisdit_jobs", status="completed"), 2)
        self.assertEqual(h.metric(m, "fisdit_jobs", status="cancelled"), 2)
        self.assertEqual(h.metric(m, "fisdit_jobs", status="failed"), 0)
        self.assertEqual(h.metric(m, "fisdit_jobs", status="queued"), 0)
        self.assertEqual(h.metric(m, "fisdit_jobs", status="in_progress"), 0)
        # The counts agree with the history.
        jobs = h.list_all_jobs(srv)
        self.assertEqual(len(jobs), 4)
        for s in ("completed", "cancelled", "failed", "queued", "in_progress"):
            self.assertEqual(h.metric(m, "fisdit_jobs", status=s),
                             sum(1 for j in jobs if j["status"] == s), s)
        # Two completed jobs of two steps each.
        self.assertGreaterEqual(h.metric(m, "fisdit_step_seconds_count"), 4)
        self.assertGreater(h.metric(m, "fisdit_step_seconds_sum"), 0)
        self.assertEqual(h.metric(m, "fisdit_stage_seconds_count", stage="denoise"), 2)
        self.assertGreater(h.metric(m, "fisdit_stage_seconds_sum", stage="denoise"), 0)
        self.assertEqual(h.metric(m, "fisdit_http_requests_total", code="202"), 4)
        self.assertGreaterEqual(h.metric(m, "fisdit_http_requests_total", code="200"), 3)
        up1 = h.metric(m, "fisdit_uptime_seconds")
        self.assertGreater(up1, 0)
        # One 404 more, and the counter follows.
        n404 = m.get(("fisdit_http_requests_total", frozenset({("code", "404")})), 0)
        st, _, _ = srv.request("GET", "/v1/videos/vid_000000000000000000000000")
        self.assertEqual(st, 404)
        time.sleep(0.05)
        _, _, body = srv.request("GET", "/metrics")
        m2 = h.parse_metrics(body.decode())
        self.assertEqual(h.metric(m2, "fisdit_http_requests_total", code="404"), n404 + 1)
        self.assertGreaterEqual(h.metric(m2, "fisdit_uptime_seconds"), up1)
        srv.stop()

    def test_history_paging(self):
        srv = self.start()
        ids = []
        for i in range(5):
            ids.append(self.submit_ok(srv, h.tiny_job(h.PROMPTS[i % len(h.PROMPTS)],
                                                      seed=i))["id"])
        newest_first = list(reversed(ids))
        # Paging works on queued jobs as well; then again once all completed.
        for rnd in range(2):
            seen = []
            after = None
            for page_no in range(10):
                path = "/v1/videos?limit=2" + (f"&after={after}" if after else "")
                st, _, page = srv.json("GET", path)
                self.assertEqual(st, 200, page)
                self.assertEqual(page.get("object"), "list", page)
                self.assertLessEqual(len(page["data"]), 2)
                seen += [j["id"] for j in page["data"]]
                for j in page["data"]:
                    self.check_job(j)
                more = len(seen) < 5
                self.assertEqual(page["has_more"], more, (page_no, seen, page["has_more"]))
                if not page["has_more"]:
                    break
                after = page["data"][-1]["id"]
            self.assertEqual(seen, newest_first)
            if rnd == 0:
                h.wait_idle(srv)
        st, _, page = srv.json("GET", "/v1/videos?limit=100")
        self.assertEqual([j["id"] for j in page["data"]], newest_first)
        self.assertIs(page["has_more"], False)
        st, _, page = srv.json("GET", "/v1/videos")
        self.assertEqual(st, 200)
        self.assertEqual([j["id"] for j in page["data"]], newest_first)
        created = [j["created_at"] for j in page["data"]]
        self.assertEqual(created, sorted(created, reverse=True))
        st, _, page = srv.json("GET", f"/v1/videos?limit=5&after={ids[0]}")
        self.assertEqual(st, 200)
        self.assertEqual(page["data"], [])
        self.assertIs(page["has_more"], False)
        for bad in ("limit=0", "limit=101", "limit=-1", "limit=abc", "after=vid_zz"):
            st, hd, body = srv.request("GET", f"/v1/videos?{bad}")
            h.check_error(st, hd, body, 400, where=bad)
        srv.stop()

    def test_cancel_queued(self):
        srv = self.start()
        running = self.submit_ok(srv, h.long_job())
        queued = self.submit_ok(srv, h.tiny_job())
        job = srv.job(queued["id"])
        self.assertEqual(job["status"], "queued", job)
        self.assertIn(job["queue_position"], (0, 1), job)
        st, hd, body = srv.request("GET", f"/v1/videos/{queued['id']}/content")
        h.check_error(st, hd, body, 409, where="content of a queued job")

        st, _, obj = srv.json("DELETE", f"/v1/videos/{queued['id']}")
        self.assertEqual(st, 200, obj)
        self.assertEqual(obj.get("id"), queued["id"], obj)
        self.assertEqual(obj.get("status"), "cancelled", obj)
        job = srv.job(queued["id"])
        self.check_job(job, "cancelled")
        self.assertIsNone(job["started_at"], job)

        # The long job goes too; a later job runs, the cancelled one never did.
        st, _, obj = srv.json("DELETE", f"/v1/videos/{running['id']}")
        self.assertEqual(st, 200, obj)
        h.wait_for_status(srv, running["id"], "cancelled", timeout=30)
        after = self.submit_ok(srv, h.tiny_job())
        h.wait_for_status(srv, after["id"], "completed")
        job = srv.job(queued["id"])
        self.assertEqual(job["status"], "cancelled", job)
        self.assertIsNone(job["started_at"], job)
        self.assertEqual(job["step"], 0, job)
        self.assertNotIn("job " + queued["id"] + ": started", srv.stderr_tail(100000))
        st, hd, body = srv.request("GET", f"/v1/videos/{queued['id']}/content")
        self.assertIn(st, (404, 409), body)
        h.check_error(st, hd, body)

        # A cancelled job is finished: a second DELETE deletes it.
        st, _, obj = srv.json("DELETE", f"/v1/videos/{queued['id']}")
        self.assertEqual(st, 200, obj)
        self.assertEqual(obj, {"id": queued["id"], "object": "video.deleted", "deleted": True})
        st, hd, body = srv.request("GET", f"/v1/videos/{queued['id']}")
        h.check_error(st, hd, body, 404)
        srv.stop()

    def test_cancel_running(self):
        srv = self.start()
        job = self.submit_ok(srv, h.long_job())
        deadline = time.monotonic() + 60
        while True:
            j = srv.job(job["id"])
            if j["status"] == "in_progress" and j["stage"] == "denoise":
                break
            self.assertIn(j["status"], ("queued", "in_progress"), j)
            self.assertLess(time.monotonic(), deadline, f"never in denoise: {j}")
            time.sleep(0.02)
        self.check_job(j, "in_progress")
        self.assertIsNotNone(j["started_at"])
        t0 = time.monotonic()
        st, _, obj = srv.json("DELETE", f"/v1/videos/{job['id']}")
        self.assertEqual(st, 200, obj)
        self.assertEqual(obj.get("status"), "cancelled", obj)
        final = h.wait_for_status(srv, job["id"], "cancelled", timeout=30)
        took = time.monotonic() - t0
        self.check_job(final, "cancelled")
        self.assertLess(took, 10, f"cancel took {took:.1f} s")
        self.assertLess(final["step"], final["steps"], final)
        st, hd, body = srv.request("GET", f"/v1/videos/{job['id']}/content")
        self.assertIn(st, (404, 409), body)
        h.check_error(st, hd, body)
        self.assertFalse(os.path.exists(os.path.join(srv.data_dir, "videos",
                                                     job["id"] + ".mp4")))
        # The worker is free again.
        nxt = self.submit_ok(srv, h.tiny_job())
        h.wait_for_status(srv, nxt["id"], "completed", timeout=60)
        self.assertEqual(srv.job(job["id"])["status"], "cancelled")
        print(f"  (running job cancelled in {took:.2f} s)", file=sys.stderr)
        srv.stop()

    def test_cancel_race(self):
        # DELETE right after the submission races the worker claiming the job: whichever wins,
        # a job the DELETE answered as cancelled ends cancelled, never completed.
        srv = self.start()
        outcomes = []
        for i in range(12):
            job = self.submit_ok(srv, h.tiny_job(h.PROMPTS[i % len(h.PROMPTS)], seed=i))
            if i % 3:
                time.sleep(0.01 * (i % 4))
            st, _, obj = srv.json("DELETE", f"/v1/videos/{job['id']}")
            self.assertEqual(st, 200, obj)
            final = h.wait_for_status(srv, job["id"], h.TERMINAL, timeout=60)
            if obj.get("status") == "cancelled":
                self.assertEqual(final["status"], "cancelled", (obj, final))
            else:  # it had finished: deleted
                self.assertIs(obj.get("deleted"), True, obj)
            outcomes.append(final["status"])
        self.assertTrue(all(o == "cancelled" for o in outcomes), outcomes)
        # The worker is not stuck on any of them.
        job = self.submit_ok(srv, h.tiny_job())
        h.wait_for_status(srv, job["id"], "completed", timeout=60)
        srv.stop()

    def test_concurrent_submissions_respect_queue_max(self):
        import threading
        srv = self.start(None, "--queue-max", "3")
        long = self.submit_ok(srv, h.long_job())
        results = []
        lock = threading.Lock()
        go = threading.Event()

        def submit(i):
            go.wait(10)
            st, hd, body = srv.request("POST", "/v1/videos", h.tiny_job(seed=i))
            with lock:
                results.append((st, hd, body))

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(30)
        codes = sorted(r[0] for r in results)
        self.assertEqual(codes, [202] * 2 + [429] * 10, codes)
        for st, hd, body in results:
            if st == 429:
                h.check_error(st, hd, body, 429)
        jobs = h.list_all_jobs(srv)
        self.assertEqual(len(jobs), 3)
        for j in jobs:
            srv.request("DELETE", f"/v1/videos/{j['id']}")
        h.wait_idle(srv, timeout=30)
        srv.stop()

    def test_events_keepalive(self):
        # A queued job's stream is quiet while the job ahead runs: a ": keep-alive" comment
        # comes within about 10 s.
        srv = self.start()
        ahead = self.submit_ok(srv, h.long_job(steps=16))  # 20 s or more: cancelled below
        job = self.submit_ok(srv, h.tiny_job())
        es = h.EventStream(srv, job["id"])
        try:
            self.assertEqual(es.status, 200)
            deadline = time.monotonic() + 13
            t0 = time.monotonic()
            while not es.comments:
                try:
                    ev = es.next_event(deadline)
                except AssertionError:
                    if es.comments:  # the comment came; no event followed before the deadline
                        break
                    self.fail("no ': keep-alive' comment on a queued job's stream within 13 s "
                              "while the job ahead ran (SERVE.md: one every 10 s between "
                              "events)")
                self.assertIsNotNone(ev, "the stream closed")
                self.assertEqual(ev["json"]["status"], "queued", ev)
            took = time.monotonic() - t0
        finally:
            es.close()
        self.assertTrue(es.comments[0].startswith(":"), es.comments)
        self.assertIn("keep-alive", es.comments[0])
        print(f"  (keep-alive after {took:.1f} s)", file=sys.stderr)
        for j in (job, ahead):
            srv.request("DELETE", f"/v1/videos/{j['id']}")
        srv.stop()

    def test_delete_completed(self):
        srv = self.start()
        job = self.submit_ok(srv, h.tiny_job())
        h.wait_for_status(srv, job["id"], "completed")
        self.download(srv, job["id"])
        path = os.path.join(srv.data_dir, "videos", job["id"] + ".mp4")
        self.assertTrue(os.path.isfile(path), os.listdir(os.path.dirname(path)))
        st, hd, obj = srv.json("DELETE", f"/v1/videos/{job['id']}")
        self.assertEqual(st, 200, obj)
        self.assertEqual(obj, {"id": job["id"], "object": "video.deleted", "deleted": True})
        for p in (f"/v1/videos/{job['id']}", f"/v1/videos/{job['id']}/content"):
            st, hd, body = srv.request("GET", p)
            h.check_error(st, hd, body, 404, where=p)
        st, hd, body = srv.request("DELETE", f"/v1/videos/{job['id']}")
        h.check_error(st, hd, body, 404, where="second DELETE")
        self.assertFalse(os.path.exists(path), "the video file is still there")
        self.assertEqual(h.list_all_jobs(srv), [])
        srv.stop()

    def test_fifo_order(self):
        srv = self.start()
        ids = [self.submit_ok(srv, h.tiny_job(h.PROMPTS[i], seed=i, steps=1 + i % 2))["id"]
               for i in range(5)]
        jobs = [h.wait_for_status(srv, i, "completed", timeout=60) for i in ids]
        for a, b in zip(jobs, jobs[1:]):
            self.assertLess(a["created_at"], b["created_at"] + 1e-9)
            self.assertLess(a["started_at"], b["started_at"], (a, b))
            self.assertLessEqual(a["completed_at"], b["started_at"] + 1e-3,
                                 "two jobs ran at once")
        # SIGINT stops it cleanly too.
        srv.proc.send_signal(signal.SIGINT)
        try:
            rc = srv.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            self.fail("SIGINT did not stop the server within 30 s")
        self.assertEqual(rc, 0, srv.stderr_tail())

    def test_restart_same_data(self):
        data = self.tmpdir("data")
        srv = self.start(data)
        done = [self.submit_ok(srv, h.tiny_job(h.PROMPTS[i], seed=i))["id"] for i in range(2)]
        blobs = {}
        for i in done:
            h.wait_for_status(srv, i, "completed")
            blobs[i] = self.download(srv, i)
        # A running job and a queued one when the server stops.
        running = self.submit_ok(srv, h.long_job())["id"]
        queued = self.submit_ok(srv, h.tiny_job(h.PROMPTS[3]))["id"]
        h.wait_for_status(srv, running, "in_progress", timeout=60)
        t0 = time.monotonic()
        rc = srv.stop(timeout=30)
        self.assertEqual(rc, 0, f"SIGTERM exit status {rc}; stderr:\n{srv.stderr_tail()}")
        print(f"  (SIGTERM stop took {time.monotonic() - t0:.2f} s)", file=sys.stderr)

        srv2 = self.start(data)
        jobs = {j["id"]: j for j in h.list_all_jobs(srv2)}
        self.assertEqual(set(jobs), set(done) | {running, queued})
        order = [j["id"] for j in h.list_all_jobs(srv2)]
        self.assertEqual(order, [queued, running] + list(reversed(done)))
        for i in done:
            self.check_job(jobs[i], "completed")
            self.assertEqual(self.download(srv2, i), blobs[i], "content changed on restart")
        r = srv2.job(running)
        self.check_job(r, "failed")
        self.assertIn("interrupted", r["error"]["message"], r)
        self.assertNotEqual(jobs[queued]["status"], "failed", jobs[queued])
        q = h.wait_for_status(srv2, queued, "completed", timeout=60)
        self.check_job(q, "completed")
        self.download(srv2, queued)
        srv2.stop()

    def test_api_key(self):
        key = "s3cret-key"
        srv = self.start(None, "--api-key", key, "--cors", "http://example.test")
        good = {"Authorization": f"Bearer {key}"}
        bad = [None, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"},
               {"Authorization": f"Bearer {key}x"}, {"Authorization": "Bearer "},
               {"Authorization": key}]
        st, hd, health = srv.json("GET", "/health")
        self.assertEqual(st, 200, health)
        self.assertEqual(hd.get("access-control-allow-origin"), "http://example.test", hd)
        st, hd, _ = srv.request("GET", "/")
        self.assertEqual(st, 200)
        for hdrs in bad:
            for method, path, body in (("GET", "/v1/model", None), ("GET", "/v1/videos", None),
                                       ("GET", "/metrics", None),
                                       ("POST", "/v1/videos", h.tiny_job())):
                st, hd, data = srv.request(method, path, body, headers=hdrs)
                h.check_error(st, hd, data, 401, where=f"{method} {path} with {hdrs}")
        st, _, page = srv.json("GET", "/v1/videos", headers=good)
        self.assertEqual(st, 200, page)
        self.assertEqual(page["data"], [], "a submission without the key made a job")
        st, _, info = srv.json("GET", "/v1/model", headers=good)
        self.assertEqual(st, 200, info)
        st, hd, job = srv.submit(h.tiny_job(), headers=good)
        self.assertEqual(st, 202, job)
        jid = job["id"]
        for path in (f"/v1/videos/{jid}", f"/v1/videos/{jid}/content",
                     f"/v1/videos/{jid}/events"):
            st, hd, data = srv.request("GET", path, headers={"Authorization": "Bearer nope"})
            h.check_error(st, hd, data, 401, where=path)
        st, hd, data = srv.request("DELETE", f"/v1/videos/{jid}")
        h.check_error(st, hd, data, 401, where="DELETE without key")
        evs = h.read_events(srv, jid, timeout=60, headers=good)
        self.assertEqual(evs[-1]["event"], "done")
        h.wait_for_status(srv, jid, "completed", headers=good)
        self.download(srv, jid, headers=good)
        st, _, _ = srv.request("GET", "/metrics", headers=good)
        self.assertEqual(st, 200)
        st, _, obj = srv.json("DELETE", f"/v1/videos/{jid}", headers=good)
        self.assertEqual(st, 200, obj)
        self.assertIs(obj.get("deleted"), True)
        srv.stop()

    def test_non_loopback_host_needs_key(self):
        # 192.0.2.1 (TEST-NET-1) is never a local address: a server that wrongly went on would
        # fail to bind rather than listen anywhere.
        data = self.tmpdir("data")
        rc, out = h.run_server_expect_exit(self.BIN, data, "--host", "192.0.2.1")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("--api-key", out)
        self.assertNotIn("listening on", out)

    def test_one_server_per_data_directory(self):
        # A second server on the same --data would run the same queue: it refuses to start.
        srv = self.start()
        rc, out = h.run_server_expect_exit(self.BIN, srv.data_dir)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("another fisdit serve", out)
        self.assertNotIn("listening on", out)
        st, _, health = srv.json("GET", "/health")
        self.assertEqual(st, 200, health)
        srv.stop()

    def test_queue_full(self):
        srv = self.start(None, "--queue-max", "2")
        a = self.submit_ok(srv, h.long_job())
        b = self.submit_ok(srv, h.long_job(h.PROMPTS[4]))
        st, hd, body = srv.request("POST", "/v1/videos", h.tiny_job())
        err = h.check_error(st, hd, body, 429)
        self.assertEqual(err["type"], "queue_full", err)
        self.assertEqual(len(h.list_all_jobs(srv)), 2, "a refused submission made a job")
        st, _, health = srv.json("GET", "/health")
        # "queue": the jobs waiting (1 while the first runs) or waiting and running (2).
        self.assertIn(health.get("queue"), (1, 2), health)
        # Room again once one goes.
        st, _, obj = srv.json("DELETE", f"/v1/videos/{b['id']}")
        self.assertEqual(st, 200, obj)
        c = self.submit_ok(srv, h.tiny_job())
        st, _, body = srv.submit(h.tiny_job())
        self.assertEqual(st, 429, body)
        for j in (a, c):
            st, _, obj = srv.json("DELETE", f"/v1/videos/{j['id']}")
            self.assertEqual(st, 200, obj)
        h.wait_idle(srv, timeout=30)
        _, _, body = srv.request("GET", "/metrics")
        m = h.parse_metrics(body.decode())
        self.assertEqual(h.metric(m, "fisdit_http_requests_total", code="429"), 2)
        srv.stop()


if __name__ == "__main__":
    h.main(ApiTest)
