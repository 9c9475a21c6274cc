"""Shared helpers for the `fisdit serve` end-to-end tests (tests/serve/test_*.py) and the load
benchmark (bench/serve_load.py).

Standard library only. A server is started as

    FISDIT_BIN serve --device cpu --port 0 --data DIR [extra args]

and prints exactly one line on stdout once it serves:
`fisdit serve: listening on http://127.0.0.1:PORT`. Its stderr goes to a file in DIR, whose tail
failure messages quote. Every wait here is bounded by a deadline.
"""

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

LISTEN_RE = re.compile(rb"fisdit serve: listening on http://([0-9.]+|\[[0-9a-fA-F:]+\]):([0-9]+)")
ID_RE = re.compile(r"^vid_[0-9a-f]{24}$")
TERMINAL = ("completed", "failed", "cancelled")

# Prompts the bundled model (models/fisdit-shapes) knows.
PROMPTS = [
    "a yellow diamond moves down on a green background",
    "a red circle moves left on a blue background",
    "a white square rotates on a striped purple background",
    "a cyan triangle bounces on a gradient gray background",
    "a blue circle grows on a yellow background",
    "an orange square shrinks on a black background",
]


def tiny_job(prompt=None, **kw):
    """A job that runs in well under a second on two CPU cores."""
    body = {"prompt": prompt or PROMPTS[0], "size": "64x64", "frames": 5, "steps": 2}
    body.update(kw)
    return body


def long_job(prompt=None, **kw):
    """A job long enough to be caught running (the bundled model's default size; about 5 s of
    denoising on two CPU cores, then the VAE)."""
    body = {"prompt": prompt or PROMPTS[1], "size": "128x128", "frames": 33, "steps": 4}
    body.update(kw)
    return body


def get_binary():
    """The fisdit binary: argv[1] (removed from sys.argv so unittest does not see it), else
    $FISDIT_BIN, else build/fisdit beside this checkout."""
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        path = sys.argv.pop(1)
    else:
        path = os.environ.get("FISDIT_BIN") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "fisdit")
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        print(f"fisdit binary not found or not executable: {path}", file=sys.stderr)
        sys.exit(2)
    return path


class ServerStartError(AssertionError):
    pass


class Server:
    """A running `fisdit serve` process."""

    def __init__(self, proc, host, port, data_dir, stderr_path):
        self.proc = proc
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.stderr_path = stderr_path
        self.url = f"http://{host}:{port}"
        self.headers = {}  # sent with every request() through this object (e.g. the API key)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, n=4000):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - n))
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(no stderr: {e})"

    def stop(self, timeout=30):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit status (negative: the
        signal that ended it)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
                raise AssertionError(f"server did not stop within {timeout} s of SIGTERM; "
                                     f"killed. stderr:\n{self.stderr_tail()}")
        return self.proc.returncode

    def kill(self):
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        return self.proc.returncode

    # Shortcuts bound to this server.
    def request(self, method, path, body=None, headers=None, raw=None, timeout=30):
        return request(self, method, path, body, headers, raw, timeout)

    def json(self, method, path, body=None, headers=None, timeout=30):
        return request_json(self, method, path, body, headers, timeout)

    def submit(self, body, headers=None):
        """POST /v1/videos; returns (status, headers, parsed body)."""
        return request_json(self, "POST", "/v1/videos", body, headers)

    def job(self, job_id, headers=None):
        st, _, obj = request_json(self, "GET", f"/v1/videos/{job_id}", headers=headers)
        if st != 200:
            raise AssertionError(f"GET /v1/videos/{job_id}: {st} {obj}")
        return obj

    def rss_kib(self):
        return read_rss_kib(self.proc.pid)


def _drain(fd):
    """Read and drop what the server still writes on stdout, so the pipe never fills."""
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


_stderr_counter = [0]
_stderr_lock = threading.Lock()


def start_server(binary, data_dir, *extra_args, timeout=60, preexec_fn=None, env=None,
                 device="cpu", port="0"):
    """Start `binary serve --device cpu --port 0 --data data_dir *extra_args`, wait (at most
    timeout seconds) for its listening line and return a Server. Raises ServerStartError (the
    process killed) if the line does not come."""
    os.makedirs(data_dir, exist_ok=True)
    with _stderr_lock:
        _stderr_counter[0] += 1
        n = _stderr_counter[0]
    stderr_path = os.path.join(data_dir, f"server-stderr-{os.getpid()}-{n}.log")
    args = [binary, "serve", "--device", device, "--port", str(port), "--data", data_dir]
    args += [str(a) for a in extra_args]
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 2, 2)))
    if env:
        full_env.update(env)
    with open(stderr_path, "wb") as errf:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errf, env=full_env, preexec_fn=preexec_fn)
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    match = None
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerStartError(f"no listening line within {timeout} s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    proc.wait(timeout=10)
                    raise ServerStartError(f"server exited with {proc.returncode} before "
                                           f"listening")
                buf += chunk
            elif proc.poll() is not None:
                raise ServerStartError(f"server exited with {proc.returncode} before listening")
        line = buf.split(b"\n", 1)[0]
        match = LISTEN_RE.search(line)
        if not match:
            raise ServerStartError(f"first stdout line is not the listening line: {line!r}")
    except ServerStartError as e:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        tail = ""
        try:
            with open(stderr_path, "rb") as f:
                tail = f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            pass
        raise ServerStartError(f"{e}; args {args}; stdout {buf!r}; stderr:\n{tail}") from None
    # Keep draining stdout in the background (the pipe must never fill).
    stdout_fd = os.dup(fd)
    proc.stdout.close()
    threading.Thread(target=_drain, args=(stdout_fd,), daemon=True).start()
    host = match.group(1).decode()
    port = int(match.group(2))
    return Server(proc, host, port, data_dir, stderr_path)


def run_server_expect_exit(binary, data_dir, *extra_args, timeout=30):
    """Run `binary serve ...` expecting it to refuse to start. Returns (returncode, output) or
    raises AssertionError if it is still running after timeout s (then killed)."""
    args = [binary, "serve", "--device", "cpu", "--port", "0", "--data", data_dir]
    args += [str(a) for a in extra_args]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        raise AssertionError(f"{args} still running after {timeout} s (killed): "
                             f"{out.decode('utf-8', 'replace')[-2000:]}")
    return proc.returncode, out.decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------
# HTTP

def _port_of(srv):
    return srv if isinstance(srv, int) else srv.port


def _host_of(srv):
    return "127.0.0.1" if isinstance(srv, int) else srv.host


def _lower_headers(pairs):
    out = {}
    for k, v in pairs:
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def parse_response(sock_or_file_sock, method="GET"):
    """Read one HTTP response from a connected socket. Returns (status, headers, body)."""
    resp = http.client.HTTPResponse(sock_or_file_sock, method=method)
    resp.begin()
    body = resp.read()
    return resp.status, _lower_headers(resp.getheaders()), body


def request(srv, method, path, body=None, headers=None, raw=None, timeout=30):
    """One request on a fresh connection. srv: a Server or a port.
    body: a dict/list (sent as JSON with Content-Type application/json unless headers set one),
    str or bytes (sent as is). raw: bytes sent verbatim on the socket instead of a request built
    here (method is then only used to parse the answer). Returns (status, headers with lower-case
    names, body bytes)."""
    host, port = _host_of(srv), _port_of(srv)
    hdrs = {}
    if isinstance(srv, Server):
        hdrs.update(srv.headers)
    if headers:
        hdrs.update(headers)
    if raw is not None:
        with socket.create_connection((host, port), timeout=timeout) as s:
            try:
                s.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before reading everything
            return parse_response(s, method)
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            if not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = bytes(body)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, _lower_headers(resp.getheaders()), payload
    finally:
        conn.close()


def parse_json(body):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionError(f"not JSON ({e}): {body[:500]!r}") from None


def request_json(srv, method, path, body=None, headers=None, timeout=30):
    """request() and parse the answer as JSON. Returns (status, headers, object)."""
    st, hd, data = request(srv, method, path, body, headers, timeout=timeout)
    return st, hd, parse_json(data)


ERROR_TYPES = {
    400: "invalid_request_error", 401: "unauthorized", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "request_too_large",
    415: "unsupported_media_type", 429: "queue_full", 500: "server_error",
}


def check_error(status, headers, body, expected_status=None, param=None, where=""):
    """Assert an error answer of SERVE.md's shape: JSON {"error": {"message", "type", "param"?}}.
    Returns the error object."""
    ctx = f"{where}: " if where else ""
    if expected_status is not None and status != expected_status:
        raise AssertionError(f"{ctx}expected {expected_status}, got {status}: {body[:500]!r}")
    if status < 400:
        raise AssertionError(f"{ctx}expected an error status, got {status}: {body[:500]!r}")
    ctype = headers.get("content-type", "")
    if "application/json" not in ctype:
        raise AssertionError(f"{ctx}error {status} has Content-Type {ctype!r}: {body[:300]!r}")
    obj = parse_json(body)
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), dict):
        raise AssertionError(f"{ctx}error {status} is not {{'error': {{...}}}}: {obj!r}")
    err = obj["error"]
    if not isinstance(err.get("message"), str) or not err["message"]:
        raise AssertionError(f"{ctx}error {status} without a message: {obj!r}")
    if not isinstance(err.get("type"), str) or not err["type"]:
        raise AssertionError(f"{ctx}error {status} without a type: {obj!r}")
    want_type = ERROR_TYPES.get(status)
    if want_type and status != 429 and err["type"] != want_type:
        raise AssertionError(f"{ctx}error {status} has type {err['type']!r}, "
                             f"SERVE.md says {want_type!r}: {obj!r}")
    if param is not None and err.get("param") != param:
        raise AssertionError(f"{ctx}error {status} has param {err.get('param')!r}, "
                             f"expected {param!r}: {obj!r}")
    return err


# ------------------------------------------------------------------------------------------
# Jobs

def wait_for_status(srv, job_id, statuses, timeout=60, headers=None, poll=0.05):
    """Poll GET /v1/videos/ID until its status is one of statuses (a string or a collection).
    Returns the job. Raises AssertionError on timeout, or if the job reaches another terminal
    status (which it can never leave)."""
    if isinstance(statuses, str):
        statuses = (statuses,)
    deadline = time.monotonic() + timeout
    job = None
    while True:
        st, _, job = request_json(srv, "GET", f"/v1/videos/{job_id}", headers=headers)
        if st != 200:
            raise AssertionError(f"GET /v1/videos/{job_id}: {st} {job}")
        if job.get("status") in statuses:
            return job
        if job.get("status") in TERMINAL:
            raise AssertionError(f"job {job_id} ended {job.get('status')} "
                                 f"(waiting for {statuses}): {job}"
                                 + _stderr_note(srv))
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not {statuses} within {timeout} s: {job}"
                                 + _stderr_note(srv))
        time.sleep(poll)


def _stderr_note(srv):
    if isinstance(srv, Server):
        return f"\nserver stderr (tail):\n{srv.stderr_tail(2000)}"
    return ""


def list_all_jobs(srv, headers=None, limit=100, max_pages=1000):
    """Every job of GET /v1/videos, newest first, following after= (bounded)."""
    out = []
    after = None
    for _ in range(max_pages):
        path = f"/v1/videos?limit={limit}" + (f"&after={after}" if after else "")
        st, _, page = request_json(srv, "GET", path, headers=headers)
        if st != 200:
            raise AssertionError(f"GET {path}: {st} {page}")
        out += page["data"]
        if not page.get("has_more") or not page["data"]:
            return out
        after = page["data"][-1]["id"]
    raise AssertionError("history paging did not end")


def wait_idle(srv, timeout=60, headers=None):
    """Wait until no job is queued or in progress."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = list_all_jobs(srv, headers=headers)
        busy = [j for j in jobs if j["status"] in ("queued", "in_progress")]
        if not busy:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still busy after {timeout} s: "
                                 f"{[(j['id'], j['status']) for j in busy]}" + _stderr_note(srv))
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------
# Server-sent events

class EventStream:
    """GET /v1/videos/ID/events, read as server-sent events with a deadline."""

    def __init__(self, srv, job_id, headers=None, timeout=30):
        hdrs = {"Accept": "text/event-stream"}
        if isinstance(srv, Server):
            hdrs.update(srv.headers)
        if headers:
            hdrs.update(headers)
        self.conn = http.client.HTTPConnection(_host_of(srv), _port_of(srv), timeout=timeout)
        self.conn.request("GET", f"/v1/videos/{job_id}/events", headers=hdrs)
        self.sock = self.conn.sock  # kept: getresponse() drops it from conn on Connection: close
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = _lower_headers(self.resp.getheaders())
        self.comments = []
        self.closed = False

    def body(self):
        """The whole body, for a non-200 answer."""
        return self.resp.read()

    def next_event(self, deadline):
        """The next event as {'event': name, 'data': str, 'json': object or None}, or None when
        the server closed the stream. Raises AssertionError when the deadline (time.monotonic())
        passes first."""
        event = {"event": "message", "data": []}
        have = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no complete event before the deadline")
            self.sock.settimeout(left)
            try:
                line = self.resp.readline(1 << 24)
            except socket.timeout:
                raise AssertionError("no complete event before the deadline") from None
            if not line:
                self.closed = True
                if have:
                    raise AssertionError(f"stream ended inside an event: {event}")
                return None
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if have:
                    data = "\n".join(event["data"])
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        obj = None
                    return {"event": event["event"], "data": data, "json": obj}
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                event["event"] = value
                have = True
            elif field == "data":
                event["data"].append(value)
                have = True

    def read_all(self, timeout=60):
        """Every event until the server closes the stream (bounded by timeout)."""
        deadline = time.monotonic() + timeout
        events = []
        while True:
            ev = self.next_event(deadline)
            if ev is None:
                return events
            events.append(ev)
            if len(events) > 100000:
                raise AssertionError("more than 100000 events")

    def close(self):
        try:
            self.resp.close()
            self.conn.close()
        except OSError:
            pass


def read_events(srv, job_id, timeout=60, headers=None):
    """Every event of a job's stream until the server closes it; the stream must open (200)."""
    es = EventStream(srv, job_id, headers=headers)
    try:
        if es.status != 200:
            raise AssertionError(f"events of {job_id}: {es.status} {es.body()[:300]!r}")
        return es.read_all(timeout=timeout)
    finally:
        es.close()


def open_streams(srv, job_id, n, first_event=False):
    """n event streams of a job, each checked to open (200) and, with first_event, to send its
    first event within 10 s. The caller closes them."""
    streams = []
    try:
        for i in range(n):
            es = EventStream(srv, job_id)
            streams.append(es)
            if es.status != 200:
                raise AssertionError(f"stream {i + 1} of {n}: {es.status}")
            if first_event:
                es.next_event(time.monotonic() + 10)
    except BaseException:
        for es in streams:
            es.close()
        raise
    return streams


def abort_socket(sock):
    """Close a socket with a TCP reset (SO_LINGER 0): a client that vanished."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# ------------------------------------------------------------------------------------------
# Prometheus text

METRIC_LINE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*,?)?\})? '
    r'([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|[-+]?Inf))( [0-9]+)?$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Parse Prometheus text format. Returns {(name, frozenset(labels.items())): value} and
    raises AssertionError on a line that is not the format."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            if not re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ", line) and \
                    not line.startswith("# "):
                raise AssertionError(f"bad metrics comment line: {line!r}")
            continue
        m = METRIC_LINE_RE.match(line)
        if not m:
            raise AssertionError(f"bad metrics line: {line!r}")
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(metrics, name, **labels):
    key = (name, frozenset(labels.items()))
    if key not in metrics:
        raise AssertionError(f"metric {name}{labels} missing; have "
                             f"{sorted(set(k[0] for k in metrics))}")
    return metrics[key]


# ------------------------------------------------------------------------------------------
# Misc

def read_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_proc_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def mp4_boxes(data):
    """Top-level ISO BMFF boxes: [(type, size)]."""
    boxes = []
    pos = 0
    while pos + 8 <= len(data) and len(boxes) < 1000:
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8].decode("latin-1")
        if size == 1 and pos + 16 <= len(data):
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        if size < 8:
            break
        boxes.append((kind, size))
        pos += size
    return boxes


def _iter_boxes(data, start, end):
    pos = start
    n = 0
    while pos + 8 <= end and n < 10000:
        n += 1
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8].decode("latin-1")
        header = 8
        if size == 1 and pos + 16 <= end:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def mp4_video_info(data):
    """(sample entry type, width, height, sample count) of the first video track of an MP4,
    read from its boxes (moov/trak/mdia/minf/stbl/stsd and stsz), or None if there is none."""
    for kind, b, e in _iter_boxes(data, 0, len(data)):
        if kind != "moov":
            continue
        for tkind, tb, te in _iter_boxes(data, b, e):
            if tkind != "trak":
                continue
            for mkind, mb, me in _iter_boxes(data, tb, te):
                if mkind != "mdia":
                    continue
                handler = None
                stbl = None
                for k, xb, xe in _iter_boxes(data, mb, me):
                    if k == "hdlr":
                        handler = data[xb + 8:xb + 12].decode("latin-1")
                    elif k == "minf":
                        for k2, yb, ye in _iter_boxes(data, xb, xe):
                            if k2 == "stbl":
                                stbl = (yb, ye)
                if handler != "vide" or stbl is None:
                    continue
                entry = None
                count = None
                for k, zb, ze in _iter_boxes(data, *stbl):
                    if k == "stsd":
                        for ek, eb, ee in _iter_boxes(data, zb + 8, ze):
                            w, hgt = struct.unpack(">HH", data[eb + 24:eb + 28])
                            entry = (ek, w, hgt)
                            break
                    elif k == "stsz":
                        count = struct.unpack(">I", data[zb + 8:zb + 12])[0]
                if entry and count is not None:
                    return entry + (count,)
    return None


def ffprobe_frames(path):
    """(codec, width, height, frames) of the first video stream by ffprobe, or None when
    ffprobe is not installed."""
    exe = shutil.which("ffprobe")
    if not exe:
        return None
    out = subprocess.run([exe, "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=codec_name,width,height,nb_read_frames",
                          "-of", "json", path], capture_output=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"ffprobe failed on {path}: {out.stderr.decode()[-1000:]}")
    st = json.loads(out.stdout)["streams"][0]
    return st["codec_name"], int(st["width"]), int(st["height"]), int(st["nb_read_frames"])


class TempDir:
    """A temporary directory removed on cleanup() unless FISDIT_KEEP_TEST_DIRS is set."""

    def __init__(self, prefix="fisdit-serve-test-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def sub(self, name):
        p = os.path.join(self.path, name)
        os.makedirs(p, exist_ok=True)
        return p

    def cleanup(self):
        if os.environ.get("FISDIT_KEEP_TEST_DIRS"):
            print(f"kept {self.path}", file=sys.stderr)
            return
        shutil.rmtree(self.path, ignore_errors=True)


class ServerTestCase(unittest.TestCase):
    """Tracks the servers a test starts and kills any left running (and prints their stderr
    when the test failed)."""

    BIN = None

    def setUp(self):
        self._servers = []
        self._tmp = TempDir()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for srv in self._servers:
            if srv.alive():
                srv.kill()
        self._tmp.cleanup()

    def tmpdir(self, name):
        return self._tmp.sub(name)

    def start(self, data_dir=None, *args, **kw):
        data_dir = data_dir or self.tmpdir("data")
        srv = start_server(self.BIN, data_dir, *args, **kw)
        self._servers.append(srv)
        return srv

    def submit_ok(self, srv, body, headers=None):
        """Submit a job that must be accepted; returns the job."""
        st, hd, job = srv.submit(body, headers)
        self.assertEqual(st, 202, f"submit {body}: {st} {job}")
        return job


def main(binary_holder_cls=ServerTestCase):
    """unittest.main with argv[1] as the binary."""
    binary_holder_cls.BIN = get_binary()
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
