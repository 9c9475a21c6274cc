#!/usr/bin/env python3
"""`fisdit serve` under bad input and faults (docs/SERVE.md): malformed and refused requests,
a bounded random fuzz over loopback, a client gone mid-stream, an output that cannot be written,
a job out of memory (RLIMIT_AS), SIGKILL mid-job and restart.

    python3 tests/serve/test_faults.py PATH_TO_FISDIT [unittest args]

Environment: FISDIT_FUZZ_SEED (the fuzz's seed; printed), FISDIT_FUZZ_COUNT (3000),
FISDIT_FUZZ_SECONDS (40), FISDIT_FUZZ_UTF8=1 (request targets and bodies that decode to UTF-8
only, to look past the failures that non-UTF-8 requests cause), FISDIT_OOM_LIMIT_MIB (the
RLIMIT_AS of the out-of-memory test; by default the peak address space of an unlimited server
after a small job, + 768 MiB; both with MALLOC_ARENA_MAX=2).

Exit 0 when every test passes, 1 otherwise.
"""

import json
import os
import random
import re
import resource
import socket
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_harness as h  # noqa: E402

VALID_ID = "vid_000000000000000000000000"
# A job of many cheap steps: caught running for a couple of seconds, done in a few.
MEDIUM = {"prompt": h.PROMPTS[0], "size": "64x64", "frames": 9, "steps": 20}


class SharedServer:
    """One server for the input checks and the fuzz: small limits so no accepted job is big."""
    srv = None
    tmp = None


class InputTest(unittest.TestCase):
    """Bad requests against one server (--queue-max 2 --max-body-mib 1)."""

    BIN = None

    @classmethod
    def setUpClass(cls):
        SharedServer.tmp = h.TempDir()
        try:
            SharedServer.srv = h.start_server(cls.BIN, SharedServer.tmp.sub("data"),
                                              "--queue-max", "2", "--max-body-mib", "1",
                                              "--max-frames", "33", "--max-pixels", "16384")
        except BaseException:
            SharedServer.tmp.cleanup()
            raise
        cls.srv = SharedServer.srv

    @classmethod
    def tearDownClass(cls):
        srv = SharedServer.srv
        try:
            if srv.alive():
                srv.stop(timeout=30)
        finally:
            if srv.alive():
                srv.kill()
            SharedServer.tmp.cleanup()

    def tearDown(self):
        # The server still serves after each test, and no job of ours is left running.
        self.assertTrue(self.srv.alive(), "server died:\n" + self.srv.stderr_tail())
        st, _, health = self.srv.json("GET", "/health")
        self.assertEqual(st, 200, health)
        self.assertEqual(health.get("status"), "ok")
        self.cancel_active()

    def cancel_active(self):
        for j in h.list_all_jobs(self.srv):
            if j["status"] in ("queued", "in_progress"):
                self.srv.request("DELETE", f"/v1/videos/{j['id']}")

    def post(self, body, headers=None):
        hdrs = {"Content-Type": "application/json"}
        if headers is not None:
            hdrs = headers
        if isinstance(body, (dict, list)) or body is None:
            body = json.dumps(body)
        return self.srv.request("POST", "/v1/videos", body, headers=hdrs)

    def expect_400(self, body, param=None, contains=None):
        st, hd, data = self.post(body)
        if st == 202:  # clean up before failing
            self.srv.request("DELETE", f"/v1/videos/{json.loads(data)['id']}")
        err = h.check_error(st, hd, data, 400, param=param, where=f"POST {body!r:.200}")
        if contains:
            self.assertIn(contains, err["message"], err)
        return err

    def test_malformed_json(self):
        for text in ('{"prompt": ', "{", "", "not json", '{"prompt": "x",}', "{'prompt': 'x'}",
                     '{"prompt": "x"} trailing', '{"prompt": NaN}', '{"prompt": "x", "seed": NaN}',
                     '{"prompt": "x", "seed": Infinity}', '{"prompt": "\\ud800"}x',
                     "\xff\xfe{}", "\u00e9", '{"prompt": "x"} \u00e9',
                     b'{"prompt": "\xe9t\xe9"}', b'{"prompt": "x", "\xff": 1}', b"\xff",
                     b'{"prompt": "\xc3"}', b'{"prompt": "\xed\xa0\x80"}'):
            with self.subTest(body=text):
                st, hd, data = self.post(text)
                h.check_error(st, hd, data, 400, where=repr(text))

    def test_non_object(self):
        for body in ([], [h.tiny_job()], "a prompt", 5, None, True, 1.5):
            text = json.dumps(body)
            st, hd, data = self.post(text)
            h.check_error(st, hd, data, 400, where=text)

    def test_wrong_types(self):
        base = h.tiny_job()
        cases = [
            ("prompt", 5), ("prompt", None), ("prompt", ""), ("prompt", ["x"]), ("prompt", {}),
            ("frames", "5"), ("frames", 5.5), ("frames", True), ("frames", -3), ("frames", 0),
            ("seed", -1), ("seed", 2 ** 53), ("seed", 2 ** 64), ("seed", 1.5), ("seed", "0"),
            ("steps", 0), ("steps", -1), ("steps", 1001), ("steps", "2"), ("steps", 2.5),
            ("size", 64), ("size", "64"), ("size", "64x"), ("size", "x64"), ("size", "0x0"),
            ("size", "-64x64"), ("size", "64x64x64"), ("size", ""), ("size", [64, 64]),
            ("guidance", "1"), ("shift", "5"), ("shift", []),
            ("negative_prompt", 3), ("solver", 1), ("solver", "bogus"), ("fis", True),
            ("fis", "bogus"), ("cache", 0), ("cache", "magcache"), ("precision", "bf16"),
            ("precision", 32), ("image", 5),
        ]
        for field, value in cases:
            with self.subTest(field=field, value=value):
                body = dict(base)
                body[field] = value
                self.expect_400(body, param=field)
        body = dict(base)
        del body["prompt"]
        self.expect_400(body, param="prompt")

    def test_null_fields(self):
        # null for the required prompt is refused; for an optional field it is refused or means
        # the default (then the job records the default).
        self.expect_400({"prompt": None, "size": "64x64", "frames": 5, "steps": 1},
                        param="prompt")
        st, _, info = self.srv.json("GET", "/v1/model")
        defaults = info["defaults"]
        for field in ("negative_prompt", "size", "frames", "steps", "seed", "guidance", "shift",
                      "solver", "fis", "cache", "precision", "image"):
            body = {"prompt": h.PROMPTS[0], "size": "64x64", "frames": 5, "steps": 1}
            body[field] = None
            st, hd, data = self.post(body)
            if st == 202:
                job = json.loads(data)
                self.srv.request("DELETE", f"/v1/videos/{job['id']}")
                want = False if field == "image" else defaults.get(field)
                self.assertEqual(job["request"][field], want,
                                 f"{field}: null accepted but recorded as "
                                 f"{job['request'][field]!r}")
            else:
                h.check_error(st, hd, data, 400, param=field, where=f"{field}: null")

    def test_unknown_field(self):
        # A name with control characters, a NUL first: the message must not end at the NUL.
        for name in ("bogus", "Prompt", "output", "model", "lora", "\u00e9", "\u0000\b\u001d"):
            body = h.tiny_job()
            body[name] = 1
            self.expect_400(body, param=name)
        body = h.tiny_job()
        body[""] = 1
        err = self.expect_400(body)
        self.assertIn(err.get("param"), ("", None, "body"), err)

    def test_values_the_model_refuses(self):
        err = self.expect_400(h.tiny_job(frames=32), param="frames")
        self.assertIn("4k+1", err["message"])
        self.expect_400(h.tiny_job(frames=6), param="frames")
        self.expect_400(h.tiny_job(size="100x100"), param="size")
        self.expect_400(h.tiny_job(size="72x64"), param="size")
        # Over this server's --max-frames 33 and --max-pixels 16384.
        err = self.expect_400(h.tiny_job(frames=37), param="frames")
        self.expect_400(h.tiny_job(size="144x144"), param="size")
        self.expect_400(h.tiny_job(frames=241), param="frames")
        # A prompt longer than the server takes.
        st, _, info = self.srv.json("GET", "/v1/model")
        longest = info["limits"].get("max_prompt_bytes")
        if longest:
            self.expect_400(h.tiny_job(prompt="a" * (longest + 1)), param="prompt")
        # The image on a text-to-video model.
        self.expect_400(h.tiny_job(image="iVBORw0KGgo="), param="image")

    def test_fis_is_not_a_path(self):
        for value in ("path/../x", "../balanced", "/etc/passwd", "balanced.json",
                      "./fast", "fast/", "BALANCED", "off\u0000"):
            err = self.expect_400(h.tiny_job(fis=value), param="fis")
            self.assertNotIn("No such file", err["message"])

    def test_content_type(self):
        body = json.dumps(h.tiny_job())
        for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "", "json",
                      "text/json", "application/xml"):
            hdrs = {} if ctype is None else {"Content-Type": ctype}
            st, hd, data = self.srv.request("POST", "/v1/videos", body, headers=hdrs)
            h.check_error(st, hd, data, 415, where=f"Content-Type {ctype!r}")
        # cpp-httplib parses multipart bodies itself and refuses this one (400) before the
        # handler sees it: an error either way.
        st, hd, data = self.srv.request("POST", "/v1/videos", body,
                                        headers={"Content-Type":
                                                 "multipart/form-data; boundary=x"})
        h.check_error(st, hd, data, where="multipart")
        self.assertIn(st, (400, 415), data)
        # A charset parameter is fine.
        st, hd, data = self.srv.request("POST", "/v1/videos", body,
                                        headers={"Content-Type":
                                                 "application/json; charset=utf-8"})
        self.assertIn(st, (202, 429), data)
        if st == 202:
            self.srv.request("DELETE", f"/v1/videos/{json.loads(data)['id']}")

    def test_body_too_large(self):
        big = json.dumps(h.tiny_job(prompt="a" * (2 << 20))).encode()
        req = (b"POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
               b"\r\nConnection: close\r\nContent-Length: " + str(len(big)).encode() +
               b"\r\n\r\n" + big)
        st, hd, data = self.srv.request("POST", "/v1/videos", raw=req)
        h.check_error(st, hd, data, 413, where="2 MiB body")
        # Announced but not sent: the answer must not wait for the body.
        req = (b"POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
               b"\r\nContent-Length: 5000000\r\n\r\n{")
        st, hd, data = self.srv.request("POST", "/v1/videos", raw=req, timeout=15)
        h.check_error(st, hd, data, 413, where="5 MB announced")
        # Under the limit but an over-long prompt: the field's own check.
        self.expect_400(h.tiny_job(prompt="a" * (900 << 10)), param="prompt")

    def test_range_header_on_errors(self):
        # A Range header must not cut an error answer into pieces that are not JSON.
        for method, path, rng in (("GET", "/v1/videos/vid_zz", "bytes=0-10"),
                                  ("POST", "/health", "bytes=0-10"),
                                  ("GET", f"/v1/videos/{VALID_ID}", "bytes=0-0,2-3"),
                                  ("GET", "/nope", "bytes=5-")):
            hdrs = {"Range": rng}
            body = None
            if method == "POST":
                hdrs["Content-Type"] = "application/json"
                body = "{}"
            st, hd, data = self.srv.request(method, path, body, headers=hdrs)
            h.check_error(st, hd, data, where=f"{method} {path} Range: {rng}")

    def test_unknown_and_malformed_ids(self):
        for sub in ("", "/content", "/events"):
            st, hd, data = self.srv.request("GET", f"/v1/videos/{VALID_ID}{sub}")
            h.check_error(st, hd, data, 404, where=f"unknown id{sub}")
        st, hd, data = self.srv.request("DELETE", f"/v1/videos/{VALID_ID}")
        h.check_error(st, hd, data, 404, where="DELETE unknown id")
        bad_ids = ["vid_zz", "vid_" + "g" * 24, "vid_" + "0" * 23, "vid_" + "0" * 25,
                   "VID_" + "0" * 24, "vid-" + "0" * 24, "x" * 5000, "vid_" + "0" * 4000,
                   "..", "...", "%2e%2e", "..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                   "vid_%00" + "0" * 20, "%00", "vid_" + "0" * 23 + "%0a"]
        for bad in bad_ids:
            for method, sub in (("GET", ""), ("GET", "/content"), ("GET", "/events"),
                                ("DELETE", "")):
                st, hd, data = self.srv.request(method, f"/v1/videos/{bad}{sub}")
                where = f"{method} /v1/videos/{bad[:60]}{sub}"
                if bad in ("..", "%2e%2e") or "%2f" in bad.lower():
                    # "/v1/videos/.." or a decoded "/" makes another route (404): not a job
                    # either way.
                    err = h.check_error(st, hd, data, where=where)
                    self.assertIn(st, (400, 404, 405), where)
                else:
                    h.check_error(st, hd, data, 400, param="id", where=where)
                self.assertNotIn(b"root:", data)
        # Traversal with literal slashes is no route (404), never a file.
        for path in ("/v1/videos/../../etc/passwd", "/v1/videos/../etc/passwd/content",
                     "/../../../../etc/passwd", "/v1/videos/vid_0/../../jobs.sqlite",
                     "/videos/" + VALID_ID + ".mp4", "/jobs.sqlite", "/%2e%2e/%2e%2e/etc/passwd"):
            st, hd, data = self.srv.request("GET", path)
            h.check_error(st, hd, data, where=path)
            self.assertIn(st, (400, 404), f"{path}: {st}")
            self.assertNotIn(b"root:", data)
            self.assertNotIn(b"SQLite format", data)

    def test_unknown_routes_and_methods(self):
        for method, path in (("GET", "/nope"), ("GET", "/v1"), ("GET", "/v1/"),
                             ("GET", "/v2/videos"), ("POST", "/v2/videos"),
                             ("GET", f"/v1/videos/{VALID_ID}/nope"),
                             ("GET", f"/v1/videos/{VALID_ID}/content/x"),
                             ("GET", "/v1/models"), ("GET", "/index.html"),
                             ("GET", "/page.html"), ("DELETE", "/nope")):
            st, hd, data = self.srv.request(method, path)
            h.check_error(st, hd, data, 404, where=f"{method} {path}")
        for method, path in (("PUT", "/v1/videos"), ("DELETE", "/v1/videos"),
                             ("PATCH", "/v1/videos"), ("POST", "/health"),
                             ("DELETE", "/health"), ("POST", "/v1/model"),
                             ("PUT", "/v1/model"), ("POST", "/metrics"), ("POST", "/"),
                             ("DELETE", "/"), ("PUT", f"/v1/videos/{VALID_ID}"),
                             ("POST", f"/v1/videos/{VALID_ID}"),
                             ("PATCH", f"/v1/videos/{VALID_ID}"),
                             ("POST", f"/v1/videos/{VALID_ID}/content"),
                             ("DELETE", f"/v1/videos/{VALID_ID}/content"),
                             ("POST", f"/v1/videos/{VALID_ID}/events"),
                             ("PUT", f"/v1/videos/{VALID_ID}/events")):
            body = "{}" if method in ("POST", "PUT", "PATCH") else None
            hdrs = {"Content-Type": "application/json"} if body else {}
            st, hd, data = self.srv.request(method, path, body, headers=hdrs)
            h.check_error(st, hd, data, 405, where=f"{method} {path}")

    def test_zz_fuzz(self):
        seed = int(os.environ.get("FISDIT_FUZZ_SEED", random.randrange(1 << 30)))
        count = int(os.environ.get("FISDIT_FUZZ_COUNT", 3000))
        seconds = float(os.environ.get("FISDIT_FUZZ_SECONDS", 40))
        print(f"  (fuzz seed {seed}: FISDIT_FUZZ_SEED={seed} repeats it)", file=sys.stderr)
        fz = Fuzzer(self.srv, random.Random(seed))
        t0 = time.monotonic()
        fz.run(count, t0 + seconds)
        took = time.monotonic() - t0
        statuses = sorted(fz.statuses.items())
        print(f"  (fuzz: {fz.sent} requests in {took:.1f} s, {fz.accepted} jobs accepted, "
              f"{fz.no_answer} protocol-garbage requests closed without an answer; "
              f"statuses {statuses})", file=sys.stderr)
        if fz.failures:
            self.fail(f"seed {seed}: {len(fz.failures)} bad answers (first 50):\n"
                      + "\n".join(f"- {x[:1500]}" for x in fz.failures))
        self.assertTrue(self.srv.alive(), "server died during the fuzz:\n"
                        + self.srv.stderr_tail())
        self.assertGreaterEqual(fz.sent, min(count, 500), "the fuzz ran too few requests")
        st, _, health = self.srv.json("GET", "/health")
        self.assertEqual(st, 200)
        # Jobs it made are all cancelled or finished; the worker still runs a job.
        self.cancel_active()
        h.wait_idle(self.srv, timeout=60)
        st, _, job = self.srv.submit(h.tiny_job())
        self.assertEqual(st, 202, job)
        h.wait_for_status(self.srv, job["id"], "completed", timeout=60)


# ------------------------------------------------------------------------------------------
# The fuzzer

FIELDS = ["prompt", "negative_prompt", "image", "size", "frames", "steps", "seed", "guidance",
          "shift", "solver", "fis", "cache", "precision"]
STRINGS = ["", " ", "64x64", "128x128", "64X64", "0x0", "99999x99999", "-64x64", "64x64x64",
           " 64x64", "1e3x64", "16x16", "euler", "unipc", "dpm++", "balanced", "off", "fast",
           "magcache-force", "fp32", "bf16", "fp16", "../x", "path/../x", "/etc/passwd",
           "C:\\x", "%s%n%x", "\u0000", "\u202e\u00e9\u4e2d\U0001f600", "a" * 300,
           "data:image/png;base64,iVBORw0KGgo=", "data:image/jpeg;base64,////", "NaN",
           "Infinity", "null", "true", "vid_000000000000000000000000", "<script>x</script>",
           "' OR 1=1 --", "\"; DROP TABLE jobs; --"]
NUMBERS = [0, 1, -1, 2, 5, 9, 17, 32, 33, 37, 241, 1000, 1001, 2 ** 31 - 1, 2 ** 31, 2 ** 32,
           2 ** 53 - 1, 2 ** 53, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -2 ** 63, -2 ** 64, 10 ** 40,
           0.5, -0.0, 1.0, 3.5, 1e308, -1e308, 5e-324, 1e-10]
METHODS = ["GET", "GET", "GET", "POST", "POST", "POST", "DELETE", "DELETE", "PUT", "PATCH",
           "HEAD", "OPTIONS", "TRACE", "FOO", "get", "M-SEARCH"]
ROUTES = ["/", "/health", "/metrics", "/v1/model", "/v1/videos", "/v1/videos/{id}",
          "/v1/videos/{id}/content", "/v1/videos/{id}/events"]
CTYPES = ["application/json"] * 8 + ["application/json; charset=utf-8", "text/plain",
                                     "APPLICATION/JSON", "application/jsonx", "",
                                     "multipart/form-data; boundary=zz", "application/*",
                                     "application/json\x7f"]
TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~"


class Fuzzer:
    def __init__(self, srv, rng):
        self.srv = srv
        self.r = rng
        self.known_ids = []
        self.statuses = {}
        self.failures = []
        self.sent = 0
        self.accepted = 0
        self.no_answer = 0
        self.ascii = bool(os.environ.get("FISDIT_FUZZ_UTF8"))
        self.died_after = None

    # values ---------------------------------------------------------------------------

    def rand_string(self, n=None):
        r = self.r
        n = r.choice([0, 1, 5, 20, 100]) if n is None else n
        pools = [TOKEN, "abc xyz", "\u00e9\u00fc\u4e2d\u6587\U0001f600\u202e\ufffd",
                 "".join(chr(c) for c in range(0, 32)), "\"\\/'"]
        pool = r.choice(pools)
        return "".join(r.choice(pool) for _ in range(n))

    def rand_value(self, depth=0):
        r = self.r
        k = r.randrange(10)
        if k == 0:
            return None
        if k == 1:
            return r.choice([True, False])
        if k in (2, 3):
            return r.choice(NUMBERS)
        if k == 4:
            return r.uniform(-1e6, 1e6)
        if k in (5, 6):
            return r.choice(STRINGS)
        if k == 7:
            return self.rand_string()
        if k == 8 and depth < 4:
            return [self.rand_value(depth + 1) for _ in range(r.randrange(4))]
        if depth < 4:
            return {r.choice(FIELDS + ["x", ""]): self.rand_value(depth + 1)
                    for _ in range(r.randrange(4))}
        return 0

    def rand_body(self):
        """Bytes of a request body: mostly a valid submission mutated."""
        r = self.r
        body = {"prompt": r.choice(h.PROMPTS), "size": r.choice(["64x64", "128x128", "16x16"]),
                "frames": r.choice([1, 5, 9]), "steps": r.choice([1, 2])}
        for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
            op = r.randrange(5)
            if op <= 1:
                if isinstance(body, dict):
                    body[r.choice(FIELDS)] = self.rand_value()
            elif op == 2 and isinstance(body, dict) and body:
                body.pop(r.choice(list(body)))
            elif op == 3 and isinstance(body, dict):
                body[self.rand_string(r.randrange(1, 12))] = self.rand_value()
            else:
                body = self.rand_value()
        text = json.dumps(body, ensure_ascii=r.random() < 0.5)
        k = r.randrange(40)
        if k == 0 and text:
            text = text[:r.randrange(len(text))]
        elif k == 1:
            text = text.replace("1", "NaN", 1)
        elif k == 2:
            text = text.replace("2", "Infinity", 1)
        elif k == 3:
            text = text.replace("5", "-Infinity", 1)
        elif k == 4:
            text = text.replace("1", "1e999", 1)
        elif k == 5:
            text = text.replace("}", ',"prompt": "dup"}', 1)
        elif k == 6:
            text = "\ufeff" + text
        elif k == 7:
            text = text.replace("}", ",}", 1)
        elif k == 8:
            text = "/* c */" + text
        elif k == 9:
            depth = r.choice([100, 1000, 20000, 200000])
            text = '{"prompt": ' + "[" * depth + "]" * depth + "}"
        elif k == 10:
            depth = r.choice([100, 1000, 20000, 100000])
            text = '{"prompt": "x", "seed": ' + '{"a":' * depth + "0" + "}" * depth + "}"
        elif k == 11:
            text = text.replace('"', '"\\ud800', 1)
        elif k == 12:
            text = json.dumps({"prompt": "x" * r.choice([20000, 20001, 100000, 600000])})
        data = text.encode("utf-8", "surrogatepass")
        if k in (13, 14) and self.ascii:
            pass
        elif k == 13:
            data = bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))
        elif k == 14 and data:
            i = r.randrange(len(data))
            data = data[:i] + bytes([r.choice([0, 0xff, 0xc0, 0x80, 0xed])]) + data[i:]
        elif k == 15:
            data = b"x" * ((1 << 20) + r.randrange(1, 1 << 16))  # over --max-body-mib 1
        return data

    def rand_id(self):
        r = self.r
        k = r.randrange(12)
        if k <= 2 and self.known_ids:
            return r.choice(self.known_ids)
        if k <= 4:
            return "vid_" + "".join(r.choice("0123456789abcdef") for _ in range(24))
        choices = ["vid_zz", "..", ".", "%2e%2e", "..%2f..%2fetc%2fpasswd", "vid_" + "0" * 23,
                   "vid_" + "0" * 25, "VID_" + "A" * 24, "x" * r.choice([100, 3000, 7000]),
                   "%00", "%7f%7e" if self.ascii else "%ff%fe", "vid_%30" * 3, "%25", "a%20b", "\u00e9".encode().hex(),
                   "".join("%%%02x" % r.randrange(0x80 if self.ascii else 256)
                           for _ in range(r.randrange(1, 40)))]
        return r.choice(choices)

    def rand_path(self):
        r = self.r
        k = r.randrange(10)
        if k <= 5:
            path = r.choice(ROUTES).replace("{id}", self.rand_id())
        elif k == 6:
            path = "/" + "/".join(self.rand_segment() for _ in range(r.randrange(1, 6)))
        elif k == 7:
            path = r.choice(["/../../etc/passwd", "/v1/videos/../../../etc/passwd",
                             "//v1//videos", "/v1/videos/", "/v1/videos//content",
                             "/./health", "/health/", "/HEALTH", "/v1/../health",
                             "/%2e%2e/%2e%2e/etc/passwd", "/v1/videos/vid_0/../../jobs.sqlite",
                             "/jobs.sqlite", "/videos", "/inputs/", "*",
                             "http://127.0.0.1/health", "/" + "a" * r.choice([1000, 9000])])
        elif k == 8:
            # Raw bytes (no space, CR or LF: those would end the request line).
            top = 0x7f if self.ascii else 0x100
            raw = bytes(r.choice([b for b in range(0x21, top) if b != 0x7f])
                        for _ in range(r.randrange(1, 60)))
            path = "/" + raw.decode("latin-1")
        else:
            path = r.choice(ROUTES[:5]) + "/" + self.rand_segment()
        if r.random() < 0.3:
            q = "&".join(f"{r.choice(['limit', 'after', 'x', '', 'limit[]'])}="
                         f"{r.choice(['1', '2', '0', '-1', '100', '101', 'abc', '', '1e2', '99999999999999999999', self.rand_id()])}"
                         for _ in range(r.randrange(1, 4)))
            path += "?" + q
        if r.random() < 0.05:
            path += "#frag"
        if self.ascii:  # no percent-escape of a byte >= 0x80 either
            path = re.sub(r"%([89a-fA-F][0-9a-fA-F])", r"%25\1", path)
        return path

    def rand_segment(self):
        r = self.r
        return r.choice(["v1", "videos", "..", ".", "%2e%2e", "content", "events", "model",
                         "health", "", "x" * r.randrange(1, 50), self.rand_id()])

    def rand_headers(self, method, body):
        r = self.r
        hdrs = [("Host", r.choice(["127.0.0.1", "localhost", "evil.example", ""]))]
        if body is not None or (method in ("POST", "PUT", "PATCH") and r.random() < 0.5):
            ct = r.choice(CTYPES)
            if r.random() < 0.95:
                hdrs.append(("Content-Type", ct))
        if r.random() < 0.2:
            hdrs.append(("Authorization", r.choice(["Bearer x", "Bearer ", "Basic Zm9v",
                                                    "Bearer " + "k" * 5000, ""])))
        if r.random() < 0.2:
            hdrs.append(("Accept", r.choice(["*/*", "text/event-stream", "application/json",
                                             "video/mp4", ""])))
        if r.random() < 0.1:
            hdrs.append(("Range", r.choice(["bytes=0-10", "bytes=-5", "bytes=abc",
                                            "bytes=10-0", "bytes=0-0,2-3,5-9",
                                            "bytes=99999999999-", "items=0-1"])))
        if r.random() < 0.05:
            hdrs.append(("Expect", "100-continue"))
        if r.random() < 0.05:
            hdrs.append(("Origin", "http://evil.example"))
        for _ in range(r.choice([0, 0, 0, 1, 2, 5])):
            name = "".join(r.choice(TOKEN) for _ in range(r.randrange(1, 30)))
            value = "".join(chr(r.randrange(0x20, 0x7f)) for _ in range(
                r.choice([0, 1, 10, 100, 4000])))
            hdrs.append((name, value))
        hdrs.append(("Connection", "close"))
        return hdrs

    # requests -------------------------------------------------------------------------

    def one_wellformed(self):
        r = self.r
        method = r.choice(METHODS)
        path = self.rand_path()
        body = None
        if method in ("POST", "PUT", "PATCH") or r.random() < 0.05:
            if r.random() < 0.9:
                body = self.rand_body()
        hdrs = self.rand_headers(method, body)
        chunked = body is not None and r.random() < 0.05
        head = f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
        for k, v in hdrs:
            head += f"{k}: {v}\r\n".encode("latin-1")
        if body is not None:
            if chunked:
                head += b"Transfer-Encoding: chunked\r\n"
                payload = b""
                pos = 0
                while pos < len(body):
                    n = r.randrange(1, 5000)
                    payload += b"%x\r\n" % len(body[pos:pos + n]) + body[pos:pos + n] + b"\r\n"
                    pos += n
                payload += b"0\r\n\r\n"
            else:
                head += f"Content-Length: {len(body)}\r\n".encode()
                payload = body
        else:
            payload = b""
            if method in ("POST", "PUT", "PATCH"):
                # Without a length cpp-httplib reads a POST's body to the end of the connection.
                head += b"Content-Length: 0\r\n"
        raw = head + b"\r\n" + payload
        desc = f"{method} {path[:120]!r} headers={[(k, v[:40]) for k, v in hdrs][:6]} " \
               f"body={(body or b'')[:120]!r}{' chunked' if chunked else ''}"
        return method, raw, desc, True

    def one_garbage(self):
        r = self.r
        choices = [
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET /health HTTP/1.0\r\n\r\n",
            b"GET /health\r\n\r\n",
            b"GET  /health  HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.1\nHost: 127.0.0.1\n\n",
            b"GET /health HTTP/1.1\r\nNoColonHere\r\n\r\n",
            b"GET /health HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /health HTTP/1.1\r\n : empty name\r\n\r\n",
            b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * 100000 + b"\r\n\r\n",
            b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: -1\r\n\r\n{}",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: abc\r\n\r\n{}",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 99999999999999999999999\r\n\r\n{}",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: gzip\r\n\r\n{}",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"prompt\": ",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # a TLS hello
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\r\n\r\n\r\n",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
            b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"prompt\": 1}",
            b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
        ]
        if r.random() < 0.4:
            raw = bytes(r.randrange(256) for _ in range(r.randrange(1, 2000)))
        else:
            raw = r.choice(choices)
        return "GET", raw, f"garbage {raw[:120]!r}", False

    def send(self, method, raw, desc, must_answer):
        self.sent += 1
        try:
            with socket.create_connection((self.srv.host, self.srv.port), timeout=15) as s:
                try:
                    s.sendall(raw)
                    if not must_answer:
                        s.shutdown(socket.SHUT_WR)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                try:
                    st, hd, body = h.parse_response(s, method.upper())
                except (http_errors()) as e:
                    if must_answer:
                        self.fail(desc, f"no valid HTTP answer: {type(e).__name__}: {e}")
                    else:
                        self.no_answer += 1
                    return None
        except socket.timeout:
            self.fail(desc, "no answer within 15 s")
            return None
        except OSError as e:
            self.fail(desc, f"connection failed: {e}")
            return None
        self.statuses[st] = self.statuses.get(st, 0) + 1
        if st >= 500 or st < 100:
            self.fail(desc, f"status {st}: {body[:300]!r}")
            return None
        if 400 <= st and method.upper() != "HEAD":
            try:
                h.check_error(st, hd, body)
            except AssertionError as e:
                self.fail(desc, str(e)[:400])
        return st, hd, body

    def fail(self, desc, what):
        if len(self.failures) < 50:
            self.failures.append(f"{desc} -> {what}")

    def run(self, count, deadline):
        r = self.r
        for i in range(count):
            if time.monotonic() > deadline:
                break
            if r.random() < 0.06:
                req = self.one_garbage()
            else:
                req = self.one_wellformed()
            method, raw, desc, must = req
            res = self.send(method, raw, desc, must)
            if not self.srv.alive():
                time.sleep(0.1)
                self.died_after = desc
                self.fail(desc, f"the server died (exit {self.srv.proc.returncode}): "
                          f"{self.srv.stderr_tail(300)!r}")
                return
            if res and res[0] == 202 and method == "POST":
                self.accepted += 1
                try:
                    jid = json.loads(res[2])["id"]
                except (ValueError, KeyError, TypeError):
                    self.fail(desc, f"202 without a job id: {res[2][:200]!r}")
                    continue
                self.known_ids.append(jid)
                st, _, body = h.request(self.srv, "DELETE", f"/v1/videos/{jid}")
                if st != 200:
                    self.fail(desc, f"DELETE of the accepted job {jid}: {st} {body[:200]!r}")
            if i % 200 == 199:
                st, _, body = h.request(self.srv, "GET", "/health")
                if st != 200:
                    self.fail("GET /health during the fuzz", f"{st} {body[:200]!r}")


def http_errors():
    import http.client
    return (http.client.HTTPException, ConnectionResetError, ConnectionAbortedError,
            BrokenPipeError, ValueError)


# ------------------------------------------------------------------------------------------
# Faults, each on its own server

class FaultTest(h.ServerTestCase):

    def wait_in_progress(self, srv, job_id, stage=None, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            j = srv.job(job_id)
            if j["status"] == "in_progress" and (stage is None or j["stage"] == stage):
                return j
            self.assertIn(j["status"], ("queued", "in_progress"), j)
            self.assertLess(time.monotonic(), deadline, f"never running: {j}")
            time.sleep(0.02)

    def completed_video(self, srv, body):
        """Submits `body` and waits for it to complete; returns (job, its MP4 bytes)."""
        job = self.submit_ok(srv, body)
        h.wait_for_status(srv, job["id"], "completed", timeout=60)
        st, _, video = srv.request("GET", f"/v1/videos/{job['id']}/content")
        self.assertEqual(st, 200)
        return job, video

    def open_raw_stream(self, srv, job_id):
        """GET events on a raw socket; returns (socket, bytes read up to the first event)."""
        s = socket.create_connection((srv.host, srv.port), timeout=20)
        s.sendall(f"GET /v1/videos/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Accept: text/event-stream\r\n\r\n".encode())
        got = b""
        deadline = time.monotonic() + 20
        try:
            while b"event:" not in got or b"\n\n" not in got[got.find(b"event:"):]:
                self.assertLess(time.monotonic(), deadline, f"no event: {got[:300]!r}")
                chunk = s.recv(65536)
                self.assertTrue(chunk, f"stream closed early: {got[:300]!r}")
                got += chunk
        except BaseException:
            s.close()
            raise
        return s, got

    def test_non_utf8_request_target(self):
        # Error messages that quote the request (the path, a body) must stay valid JSON when
        # the request is not UTF-8: a 404 or 400, never a crash or a 500.
        srv = self.start()
        for target in (b"/%ff", b"/%c3%25", b"/\xc3", b"/v1/%ed%a0%80/x", b"/x?\xff=1"):
            raw = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            try:
                st, hd, data = srv.request("GET", "", raw=raw)
            except (ConnectionError, OSError, ValueError) as e:
                time.sleep(0.2)
                self.fail(f"GET {target!r}: no answer ({e!r}); server alive: {srv.alive()}, "
                          f"exit {srv.proc.returncode}; stderr:\n{srv.stderr_tail(500)}")
            h.check_error(st, hd, data, where=f"GET {target!r}")
            self.assertIn(st, (400, 404), f"GET {target!r}: {st} {data[:200]!r}")
            self.assertTrue(srv.alive())
        st, _, _ = srv.request("GET", "/health")
        self.assertEqual(st, 200)
        srv.stop()

    def test_client_gone_mid_stream(self):
        srv = self.start()
        job = self.submit_ok(srv, MEDIUM)
        self.wait_in_progress(srv, job["id"], "denoise")
        # Clients that read an event and vanish (a reset, or an orderly close without reading
        # on). The server notices at its next write (a job change, or the 10 s keep-alive).
        for i in range(12):
            s, got = self.open_raw_stream(srv, job["id"])
            self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:200])
            if i % 2:
                h.abort_socket(s)
            else:
                s.close()
        st, _, health = srv.json("GET", "/health")
        self.assertEqual(st, 200, health)
        done = h.wait_for_status(srv, job["id"], "completed", timeout=60)
        self.assertEqual(done["progress"], 100)
        evs = h.read_events(srv, job["id"], timeout=20)
        self.assertEqual(evs[-1]["event"], "done", evs)
        # Their slots are free again: 16 streams open at once on a queued job.
        long = self.submit_ok(srv, h.long_job())
        queued = self.submit_ok(srv, h.tiny_job())
        for es in h.open_streams(srv, queued["id"], 16):  # after the vanished clients
            es.close()
        for j in (queued, long):
            st, _, obj = srv.json("DELETE", f"/v1/videos/{j['id']}")
            self.assertEqual(st, 200, obj)
        # A client that sends half a request and vanishes.
        s = socket.create_connection((srv.host, srv.port), timeout=10)
        s.sendall(b"POST /v1/videos HTTP/1.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"prompt\"")
        h.abort_socket(s)
        nxt = self.submit_ok(srv, h.tiny_job())
        h.wait_for_status(srv, nxt["id"], "completed", timeout=60)
        self.assertEqual(srv.stop(), 0)

    def test_event_stream_limit(self):
        srv = self.start()
        running = self.submit_ok(srv, h.long_job())
        queued = self.submit_ok(srv, h.tiny_job())
        streams = h.open_streams(srv, queued["id"], 16, first_event=True)
        try:
            st, hd, data = srv.request("GET", f"/v1/videos/{queued['id']}/events")
            err = h.check_error(st, hd, data, 429, where="17th event stream")
            st, _, health = srv.json("GET", "/health")
            self.assertEqual(st, 200, "the HTTP pool is held by the streams")
        finally:
            for es in streams:
                es.close()
        # The job changes (cancelled): the streams end, their slots free.
        st, _, obj = srv.json("DELETE", f"/v1/videos/{queued['id']}")
        self.assertEqual(st, 200, obj)
        st, _, obj = srv.json("DELETE", f"/v1/videos/{running['id']}")
        self.assertEqual(st, 200, obj)
        deadline = time.monotonic() + 25
        while True:
            es = h.EventStream(srv, queued["id"])
            if es.status == 200:
                break
            es.close()
            self.assertLess(time.monotonic(), deadline, "event stream slots never freed")
            time.sleep(0.2)
        try:
            evs = es.read_all(timeout=20)
        finally:
            es.close()
        self.assertEqual(evs[-1]["event"], "done")
        self.assertEqual(evs[-1]["json"]["status"], "cancelled")
        srv.stop()

    def test_output_cannot_be_written(self):
        data = self.tmpdir("data")
        srv = self.start(data)
        first, before = self.completed_video(srv, h.tiny_job())
        videos = os.path.join(data, "videos")
        moved = os.path.join(data, "videos.moved")
        os.rename(videos, moved)
        with open(videos, "wb") as f:
            f.write(b"not a directory\n")
        try:
            job = self.submit_ok(srv, h.tiny_job(h.PROMPTS[2]))
            failed = h.wait_for_status(srv, job["id"], "failed", timeout=60)
            self.assertIsInstance(failed["error"], dict, failed)
            self.assertTrue(failed["error"].get("message"), failed)
            print(f"  (unwritable output: {failed['error']['message']!r})", file=sys.stderr)
            self.assertIsNone(failed["content_url"])
            st, hd, body = srv.request("GET", f"/v1/videos/{job['id']}/content")
            self.assertIn(st, (404, 409), body)
            h.check_error(st, hd, body)
            st, _, health = srv.json("GET", "/health")
            self.assertEqual(st, 200)
        finally:
            os.remove(videos)
            os.rename(moved, videos)
        job = self.submit_ok(srv, h.tiny_job(h.PROMPTS[3]))
        h.wait_for_status(srv, job["id"], "completed", timeout=60)
        st, _, after = srv.request("GET", f"/v1/videos/{first['id']}/content")
        self.assertEqual((st, after), (200, before))
        _, _, body = srv.request("GET", "/metrics")
        m = h.parse_metrics(body.decode())
        self.assertEqual(h.metric(m, "fisdit_jobs", status="failed"), 1)
        self.assertEqual(srv.stop(), 0)

    def test_out_of_memory(self):
        env = {"MALLOC_ARENA_MAX": "2"}
        big = {"prompt": h.PROMPTS[0], "size": "1280x720", "frames": 241, "steps": 1}
        if os.environ.get("FISDIT_OOM_LIMIT_MIB"):
            limit_mib = int(os.environ["FISDIT_OOM_LIMIT_MIB"])
        else:
            # The peak address space of a server that ran a small job, and room for more.
            probe = self.start(self.tmpdir("probe"), env=env)
            j = self.submit_ok(probe, h.tiny_job())
            h.wait_for_status(probe, j["id"], "completed", timeout=60)
            peak = h.read_proc_kib(probe.pid, "VmPeak")
            probe.stop()
            self.assertIsNotNone(peak)
            limit_mib = peak // 1024 + 768
        print(f"  (RLIMIT_AS {limit_mib} MiB)", file=sys.stderr)
        limit = limit_mib << 20

        def limit_memory():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        srv = self.start(self.tmpdir("data"), preexec_fn=limit_memory, env=env)
        small = self.submit_ok(srv, h.tiny_job())
        h.wait_for_status(srv, small["id"], "completed", timeout=60)
        t0 = time.monotonic()
        job = self.submit_ok(srv, big)
        try:
            failed = h.wait_for_status(srv, job["id"], "failed", timeout=60)
        except AssertionError:
            srv.kill()
            raise
        took = time.monotonic() - t0
        msg = failed["error"]["message"]
        print(f"  (out of memory after {took:.1f} s: {msg!r})", file=sys.stderr)
        self.assertIn("memory", msg.lower(), failed)
        self.assertTrue(srv.alive(), srv.stderr_tail())
        st, _, health = srv.json("GET", "/health")
        self.assertEqual(st, 200)
        again = self.submit_ok(srv, h.tiny_job(h.PROMPTS[1]))
        h.wait_for_status(srv, again["id"], "completed", timeout=60)
        self.assertEqual(srv.stop(), 0)

    def test_sigkill_mid_job(self):
        data = self.tmpdir("data")
        srv = self.start(data)
        early, early_bytes = self.completed_video(srv, h.tiny_job())
        a = self.submit_ok(srv, h.long_job())
        b = self.submit_ok(srv, h.tiny_job(h.PROMPTS[2]))
        c = self.submit_ok(srv, h.tiny_job(h.PROMPTS[3]))
        self.wait_in_progress(srv, a["id"], "denoise")
        srv.kill()
        videos = os.path.join(data, "videos")
        db = os.path.join(data, "jobs.sqlite")
        self.assertTrue(os.path.isfile(db), os.listdir(data))
        self.assertEqual(integrity(db), "ok")
        # What a process killed while writing leaves behind.
        with open(os.path.join(videos, a["id"] + ".mp4.tmp"), "wb") as f:
            f.write(b"\x00\x00\x00\x20ftypisom half-written")

        srv2 = self.start(data)
        ja = srv2.job(a["id"])
        self.assertEqual(ja["status"], "failed", ja)
        self.assertIn("interrupted", ja["error"]["message"], ja)
        self.assertIsNone(ja["stage"])
        jb = h.wait_for_status(srv2, b["id"], "completed", timeout=60)
        jc = h.wait_for_status(srv2, c["id"], "completed", timeout=60)
        self.assertLess(jb["started_at"], jc["started_at"])
        self.assertLessEqual(jb["completed_at"], jc["started_at"] + 1e-3)
        st, _, again = srv2.request("GET", f"/v1/videos/{early['id']}/content")
        self.assertEqual((st, again), (200, early_bytes))
        jobs = h.list_all_jobs(srv2)
        self.assertEqual([j["id"] for j in jobs], [c["id"], b["id"], a["id"], early["id"]])
        self.assertEqual(srv2.stop(), 0)
        self.assertEqual(integrity(db), "ok")
        left = [f for f in os.listdir(videos) if f.endswith(".tmp")]
        self.assertEqual(left, [], "temporary outputs left under videos/")
        self.assertEqual(sorted(os.listdir(videos)),
                         sorted(j + ".mp4" for j in (early["id"], b["id"], c["id"])))


def integrity(db):
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


if __name__ == "__main__":
    binary = h.get_binary()
    InputTest.BIN = binary
    FaultTest.BIN = binary
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
