#!/usr/bin/env python3
"""A small, independent client of the Vagon Files API, for the benchmarks (stdlib only).

It signs requests exactly as the contract says (docs/vagon-files-api.md section 1, and
src/api/auth.rs): `Authorization: HMAC {key}:{sig}:{nonce}:{ts}` with `sig` the lowercase hex
HMAC-SHA256 (keyed with the secret) of `{key}{METHOD}{path}{ts}{nonce}{body}`, the path being the
full request path without the query string, `ts` UTC milliseconds, the body the raw bytes sent.

It is deliberately written apart from the Rust client so that the baselines it measures share
no code with the thing being measured. Every connection is HTTP/1.1 keep-alive.

Subcommands print one JSON object on stdout (see `main`). Environment: VAGON_API_URL,
VAGON_API_KEY, VAGON_API_SECRET.
"""

import argparse
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import random
import sys
import time
import urllib.parse
import uuid

API_PREFIX = "/organization-management/v1"
# Bytes in a MiB: chunk_size is in "MB" that are MiB.
MIB = 1024 * 1024
# Read size when streaming a part from disk to the socket.
SEND_CHUNK = 1024 * 1024
# Largest per_page the emulator honours.
MAX_PER_PAGE = 100
# Seconds before an HTTP request is abandoned.
HTTP_TIMEOUT = 120


class ApiError(Exception):
    pass


class Conn:
    """One keep-alive HTTP connection to a host, reopened when the server closes it."""

    def __init__(self, base_url):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme != "http":
            raise ApiError(f"only http:// is supported here, got {base_url!r}")
        self.host = u.hostname
        self.port = u.port or 80
        self.conn = None

    def _open(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        return self.conn

    def request(self, method, target, body=None, headers=None):
        """Send one request; returns (status, headers, body bytes). Retries once on a dropped
        keep-alive connection (the server may close an idle one)."""
        for attempt in (0, 1):
            conn = self._open()
            try:
                conn.request(method, target, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    self.conn = None
                return resp.status, resp, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


class Client:
    def __init__(self, url=None, key=None, secret=None):
        self.url = (url or os.environ["VAGON_API_URL"]).rstrip("/")
        self.key = key or os.environ["VAGON_API_KEY"]
        self.secret = secret or os.environ["VAGON_API_SECRET"]
        self.conn = Conn(self.url)

    def auth(self, method, path, body):
        ts = str(int(time.time() * 1000))
        nonce = str(uuid.uuid4())
        msg = self.key.encode() + method.upper().encode() + path.encode() + ts.encode() + nonce.encode() + body
        sig = hmac.new(self.secret.encode(), msg, hashlib.sha256).hexdigest()
        return f"HMAC {self.key}:{sig}:{nonce}:{ts}"

    def call(self, method, path, query=None, body=None):
        full = API_PREFIX + path
        raw = b"" if body is None else json.dumps(body).encode()
        headers = {"Authorization": self.auth(method, full, raw)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        target = full + ("?" + urllib.parse.urlencode(query) if query else "")
        status, _, data = self.conn.request(method, target, body=raw if body is not None else None, headers=headers)
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"raw": data[:200].decode(errors="replace")}
        if status // 100 != 2:
            raise ApiError(f"{method} {path} -> HTTP {status}: {doc}")
        return doc

    def admin(self, method, path, body=None):
        raw = None if body is None else json.dumps(body).encode()
        status, _, data = self.conn.request(method, path, body=raw, headers={"Content-Type": "application/json"})
        if status // 100 != 2:
            raise ApiError(f"{method} {path} -> HTTP {status}: {data[:200]!r}")
        return json.loads(data) if data else {}

    # --- API ---
    def create_file(self, name, size, machine, parent=None, chunk_mb=16, content_type="application/octet-stream", overwrite=False):
        body = {"file_name": name, "object_type": "file", "content_type": content_type, "size": size,
                "chunk_size": chunk_mb, "overwrite": overwrite, "machine_id": machine}
        if parent:
            body["parent_id"] = parent
        return self.call("POST", "/files", body=body)

    def create_dir(self, name, machine, parent=None):
        body = {"file_name": name, "object_type": "directory", "machine_id": machine}
        if parent:
            body["parent_id"] = parent
        return self.call("POST", "/files", body=body)

    def complete(self, file_id, etags):
        parts = [{"part_number": i + 1, "etag": e} for i, e in enumerate(etags)]
        return self.call("POST", f"/files/{file_id}/complete", body={"parts": parts})

    def link(self, file_id):
        return self.call("GET", f"/files/{file_id}/download")

    def list_page(self, machine, parent, page, per_page=MAX_PER_PAGE):
        q = {"page": page, "per_page": per_page}
        if parent:
            q["parent_id"] = parent
        return self.call("GET", f"/machines/{machine}/files", query=q)


def put_part(url, path, offset, length, conn=None):
    """PUT bytes [offset, offset+length) of `path` to a presigned URL; returns the ETag."""
    u = urllib.parse.urlsplit(url)
    c = conn or Conn(f"{u.scheme}://{u.netloc}")
    target = u.path + ("?" + u.query if u.query else "")

    def body():
        with open(path, "rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                chunk = f.read(min(SEND_CHUNK, left))
                if not chunk:
                    raise ApiError(f"{path} ended early")
                left -= len(chunk)
                yield chunk

    status, resp, data = c.request("PUT", target, body=body(), headers={"Content-Length": str(length)})
    if status // 100 != 2:
        raise ApiError(f"PUT part -> HTTP {status}: {data[:200]!r}")
    etag = resp.getheader("etag")
    if not etag:
        raise ApiError("PUT part: no ETag")
    return etag


def upload(cl, path, name, machine, parent=None, chunk_mb=16, parallel=4):
    size = os.path.getsize(path)
    created = cl.create_file(name, size, machine, parent=parent, chunk_mb=chunk_mb)
    chunk = created.get("chunk_size", chunk_mb) * MIB
    urls = created["upload_urls"]
    jobs = [(url, i * chunk, min(chunk, size - i * chunk)) for i, url in enumerate(urls)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        etags = list(pool.map(lambda j: put_part(j[0], path, j[1], j[2]), jobs))
    cl.complete(created["id"], etags)
    return int(created["id"])


def cmd_upload(cl, a):
    t0 = time.monotonic()
    fid = upload(cl, a.path, a.name, a.machine, parent=a.parent, chunk_mb=a.chunk_mb, parallel=a.parallel)
    return {"id": fid, "seconds": time.monotonic() - t0}


def cmd_create_upload(cl, a):
    """Only the create step (for the curl multipart baseline): id + URLs + part size."""
    created = cl.create_file(a.name, a.size, a.machine, parent=a.parent, chunk_mb=a.chunk_mb)
    return {"id": int(created["id"]), "chunk_size": created.get("chunk_size", a.chunk_mb), "upload_urls": created["upload_urls"]}


def cmd_complete(cl, a):
    etags = [line.strip() for line in open(a.etags_file) if line.strip()]
    cl.complete(a.id, etags)
    return {"id": a.id, "parts": len(etags)}


def cmd_link(cl, a):
    doc = cl.link(a.id)
    return {"url": doc["url"], "size": doc.get("size")}


def cmd_mkdir(cl, a):
    doc = cl.create_dir(a.name, a.machine, parent=a.parent)
    return {"id": int(doc["id"])}


def cmd_mkdirs(cl, a):
    """`count` directories named d00000… under `parent` (one signed POST each, keep-alive)."""
    t0 = time.monotonic()
    for i in range(a.count):
        cl.create_dir(f"d{i:05d}", a.machine, parent=a.parent)
    return {"count": a.count, "seconds": time.monotonic() - t0}


def cmd_list_all(cl, a):
    """Page through a folder's whole listing, as a client with no cache would: entries, pages,
    seconds."""
    t0 = time.monotonic()
    page, entries, pages = 1, 0, 0
    while page:
        doc = cl.list_page(a.machine, a.parent, page)
        pages += 1
        entries += len(doc.get("files", []))
        page = doc.get("next_page")
    return {"entries": entries, "pages": pages, "seconds": time.monotonic() - t0}


def cmd_small_files(cl, a):
    """`count` files of `size` bytes under `parent`: create + one PUT + complete each, one
    keep-alive connection to each host, sequential (as `cp` of many small files would be)."""
    payload = os.urandom(a.size)
    api = cl
    data_conn = None
    t0 = time.monotonic()
    for i in range(a.count):
        created = api.create_file(f"f{i:05d}.bin", a.size, a.machine, parent=a.parent, chunk_mb=a.chunk_mb)
        url = created["upload_urls"][0]
        u = urllib.parse.urlsplit(url)
        if data_conn is None:
            data_conn = Conn(f"{u.scheme}://{u.netloc}")
        status, resp, data = data_conn.request("PUT", u.path + "?" + u.query, body=payload, headers={"Content-Length": str(a.size)})
        if status // 100 != 2:
            raise ApiError(f"PUT -> HTTP {status}: {data[:200]!r}")
        api.complete(created["id"], [resp.getheader("etag")])
    secs = time.monotonic() - t0
    return {"count": a.count, "seconds": secs, "files_per_s": a.count / secs}


def cmd_make_tree(cl, a):
    """Folders `fanout` wide and `depth` deep under `parent` (d0…, one POST each). Folders
    made, seconds."""
    t0 = time.monotonic()

    def make(parent, level):
        n = 0
        for i in range(a.fanout):
            made = int(cl.create_dir(f"d{i}", a.machine, parent=parent)["id"])
            n += 1
            if level + 1 < a.depth:
                n += make(made, level + 1)
        return n

    folders = make(a.parent, 0)
    return {"folders": folders, "seconds": time.monotonic() - t0}


def cmd_list_tree(cl, a):
    """List a folder and every folder below it as a client without a cache walks a tree (`find`
    through a mount that lists each folder when it is opened): one folder after the other, all
    pages. Folders, entries, seconds."""
    t0 = time.monotonic()

    def walk(folder):
        dirs, entries, page = [], 0, 1
        while page:
            doc = cl.list_page(a.machine, folder, page)
            for f in doc.get("files", []):
                entries += 1
                if f.get("attributes", {}).get("object_type") == "directory":
                    dirs.append(int(f["id"]))
            page = doc.get("next_page")
        folders = 1
        for d in dirs:
            f, e = walk(d)
            folders += f
            entries += e
        return folders, entries

    folders, entries = walk(a.parent)
    return {"folders": folders, "entries": entries, "seconds": time.monotonic() - t0}


def cmd_delete_tree(cl, a):
    """Delete a folder as a client that removes one object at a time does (`rm -r` through a
    mount that waits on each delete): list each folder (all pages), DELETE each file, recurse into
    each subfolder, then DELETE the folder; one request after the other. Deletes, seconds."""
    t0 = time.monotonic()

    def walk(folder):
        files, dirs, page = [], [], 1
        while page:
            doc = cl.list_page(a.machine, folder, page)
            for f in doc.get("files", []):
                kind = f.get("attributes", {}).get("object_type")
                (files if kind == "file" else dirs).append(int(f["id"]))
            page = doc.get("next_page")
        n = 0
        for file_id in files:
            cl.call("DELETE", f"/files/{file_id}")
            n += 1
        for sub_id in dirs:
            n += walk(sub_id)
        cl.call("DELETE", f"/files/{folder}")
        return n + 1

    deletes = walk(a.parent)
    return {"deletes": deletes, "seconds": time.monotonic() - t0}


def cmd_read_all(cl, a):
    """Read every file of a folder whole: list it (all pages), then link + GET of each file,
    `parallel` files at a time, each worker on its own keep-alive connections (1: one file
    after the other, as `cp -r` reads). Files, bytes, seconds."""
    t0 = time.monotonic()
    ids, page = [], 1
    while page:
        doc = cl.list_page(a.machine, a.parent, page)
        for f in doc.get("files", []):
            if f.get("attributes", {}).get("object_type") == "file":
                ids.append(int(f["id"]))
        page = doc.get("next_page")

    def worker(chunk):
        client = Client(cl.url, cl.key, cl.secret)
        data_conn, got = None, 0
        for file_id in chunk:
            u = urllib.parse.urlsplit(client.link(file_id)["url"])
            if data_conn is None:
                data_conn = Conn(f"{u.scheme}://{u.netloc}")
            status, _, data = data_conn.request("GET", u.path + "?" + u.query)
            if status != 200:
                raise ApiError(f"GET of file {file_id} -> HTTP {status}")
            got += len(data)
        return got

    chunks = [ids[i::a.parallel] for i in range(a.parallel)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as pool:
        got = sum(pool.map(worker, chunks))
    return {"files": len(ids), "bytes": got, "seconds": time.monotonic() - t0}


def cmd_ranged(cl, a):
    """`count` ranged GETs of `bs` bytes at random `bs`-aligned offsets of a `size`-byte object,
    one at a time over one keep-alive connection (what fio psync iodepth 1 asks of a mount)."""
    u = urllib.parse.urlsplit(a.url)
    c = Conn(f"{u.scheme}://{u.netloc}")
    target = u.path + ("?" + u.query if u.query else "")
    rng = random.Random(a.seed)
    slots = a.size // a.bs
    got = 0
    t0 = time.monotonic()
    for _ in range(a.count):
        off = rng.randrange(slots) * a.bs
        status, _, data = c.request("GET", target, headers={"Range": f"bytes={off}-{off + a.bs - 1}"})
        if status != 206 or len(data) != a.bs:
            raise ApiError(f"ranged GET -> HTTP {status}, {len(data)} bytes")
        got += len(data)
    secs = time.monotonic() - t0
    return {"count": a.count, "bytes": got, "seconds": secs, "iops": a.count / secs}


def cmd_ttfb(cl, a):
    """What a minimal client does to get a file's first byte knowing only its name: list the
    folder (search by name), get the link, GET byte 0 — each on a fresh connection, as a fresh
    mount has none. Seconds to the first byte."""
    t0 = time.monotonic()
    fresh = Client(cl.url, cl.key, cl.secret)
    q = {"page": 1, "per_page": MAX_PER_PAGE, "q": a.name}
    doc = fresh.call("GET", f"/machines/{a.machine}/files", query=q)
    ids = [int(f["id"]) for f in doc.get("files", []) if f.get("attributes", {}).get("name") == a.name]
    if not ids:
        raise ApiError(f"{a.name} not found")
    url = fresh.link(ids[0])["url"]
    u = urllib.parse.urlsplit(url)
    c = Conn(f"{u.scheme}://{u.netloc}")
    status, _, data = c.request("GET", u.path + "?" + u.query, headers={"Range": "bytes=0-0"})
    if status != 206 or len(data) != 1:
        raise ApiError(f"first byte: HTTP {status}")
    return {"seconds": time.monotonic() - t0}


def cmd_find(cl, a):
    """A listed entry of the folder by exact name: id and size (error when not listed)."""
    page = 1
    while page:
        q = {"page": page, "per_page": MAX_PER_PAGE, "q": a.name}
        if a.parent:
            q["parent_id"] = a.parent
        doc = cl.call("GET", f"/machines/{a.machine}/files", query=q)
        for f in doc.get("files", []):
            attrs = f.get("attributes", {})
            if attrs.get("name") == a.name:
                return {"id": int(f["id"]), "size": int(attrs.get("size", 0))}
        page = doc.get("next_page")
    raise ApiError(f"{a.name} is not listed")


def cmd_read1(cl, a):
    """Open a local path and read one byte, unbuffered: head -c 1 without process start-up."""
    t0 = time.monotonic()
    with open(a.path, "rb", buffering=0) as f:
        if len(f.read(1)) != 1:
            raise ApiError("no byte read")
    return {"seconds": time.monotonic() - t0}


def cmd_bulk_folders(cl, a):
    """`count` empty folders d000000… under `parent` in one emulator transaction (test hook)."""
    body = {"count": a.count, "prefix": a.prefix, "machine_id": a.machine}
    if a.parent:
        body["parent_id"] = a.parent
    return cl.admin("POST", "/_emulator/bulk-folders", body)


def cmd_latency(cl, a):
    """Set the emulator's added latency per request, milliseconds."""
    return cl.admin("POST", "/_emulator/faults", {"latency_ms": a.ms})


def cmd_peaks(cl, a):
    return cl.admin("GET", "/_emulator/peaks")


def cmd_stats(cl, a):
    return cl.admin("GET", "/_emulator/stats")


def cmd_wait_stats(cl, a):
    """Poll `/_emulator/stats` until `family` has counted `count` requests; answer the seconds
    from `--since-ns` (a `date +%s%N` taken before the work started) to the poll that saw it."""
    import time
    deadline = time.time() + a.timeout
    while True:
        seen = cl.admin("GET", "/_emulator/stats").get(a.family, 0)
        now_ns = time.time_ns()
        if seen >= a.count:
            return {"seconds": (now_ns - a.since_ns) / 1e9, "count": seen}
        if time.time() > deadline:
            raise ApiError(f"{a.family}: {seen} of {a.count} requests after {a.timeout} s")
        time.sleep(a.poll_ms / 1000)


def cmd_wait_file(cl, a):
    """Poll the listing until `name` is listed with `--size` bytes (the upload of that version
    is complete); answer the seconds from `--since-ns`."""
    import time
    deadline = time.time() + a.timeout
    while True:
        try:
            size = cmd_find(cl, a)["size"]
        except ApiError:
            size = None
        now_ns = time.time_ns()
        if size == a.size:
            return {"seconds": (now_ns - a.since_ns) / 1e9}
        if time.time() > deadline:
            raise ApiError(f"{a.name}: listed with {size} bytes, not {a.size}, after {a.timeout} s")
        time.sleep(a.poll_ms / 1000)


def cmd_reset_stats(cl, a):
    cl.admin("POST", "/_emulator/reset-stats")
    return {}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("upload"); s.add_argument("path"); s.add_argument("--name", required=True)
    s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int)
    s.add_argument("--chunk-mb", type=int, default=16); s.add_argument("--parallel", type=int, default=4)
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("create-upload"); s.add_argument("--name", required=True); s.add_argument("--size", type=int, required=True)
    s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int)
    s.add_argument("--chunk-mb", type=int, default=16); s.set_defaults(fn=cmd_create_upload)

    s = sub.add_parser("complete"); s.add_argument("id", type=int); s.add_argument("etags_file"); s.set_defaults(fn=cmd_complete)

    s = sub.add_parser("link"); s.add_argument("id", type=int); s.set_defaults(fn=cmd_link)

    s = sub.add_parser("mkdir"); s.add_argument("name"); s.add_argument("--machine", type=int, default=1)
    s.add_argument("--parent", type=int); s.set_defaults(fn=cmd_mkdir)

    s = sub.add_parser("mkdirs"); s.add_argument("--count", type=int, required=True); s.add_argument("--machine", type=int, default=1)
    s.add_argument("--parent", type=int, required=True); s.set_defaults(fn=cmd_mkdirs)

    s = sub.add_parser("list-all"); s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int)
    s.set_defaults(fn=cmd_list_all)

    s = sub.add_parser("small-files"); s.add_argument("--count", type=int, required=True); s.add_argument("--size", type=int, required=True)
    s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int, required=True)
    s.add_argument("--chunk-mb", type=int, default=16); s.set_defaults(fn=cmd_small_files)

    s = sub.add_parser("make-tree"); s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int, required=True)
    s.add_argument("--fanout", type=int, required=True); s.add_argument("--depth", type=int, required=True)
    s.set_defaults(fn=cmd_make_tree)
    s = sub.add_parser("list-tree"); s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int, required=True)
    s.set_defaults(fn=cmd_list_tree)
    s = sub.add_parser("delete-tree"); s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int, required=True)
    s.set_defaults(fn=cmd_delete_tree)
    s = sub.add_parser("read-all"); s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int, required=True)
    s.add_argument("--parallel", type=int, default=1); s.set_defaults(fn=cmd_read_all)
    s = sub.add_parser("ranged"); s.add_argument("url"); s.add_argument("--size", type=int, required=True)
    s.add_argument("--bs", type=int, required=True); s.add_argument("--count", type=int, required=True)
    s.add_argument("--seed", type=int, default=1); s.set_defaults(fn=cmd_ranged)

    s = sub.add_parser("ttfb"); s.add_argument("name"); s.add_argument("--machine", type=int, default=1)
    s.set_defaults(fn=cmd_ttfb)

    s = sub.add_parser("find"); s.add_argument("name"); s.add_argument("--machine", type=int, default=1)
    s.add_argument("--parent", type=int); s.set_defaults(fn=cmd_find)

    s = sub.add_parser("read1"); s.add_argument("path"); s.set_defaults(fn=cmd_read1)

    s = sub.add_parser("bulk-folders"); s.add_argument("--count", type=int, required=True)
    s.add_argument("--prefix", default="d"); s.add_argument("--machine", type=int, default=1)
    s.add_argument("--parent", type=int); s.set_defaults(fn=cmd_bulk_folders)

    s = sub.add_parser("latency"); s.add_argument("ms", type=int); s.set_defaults(fn=cmd_latency)

    sub.add_parser("peaks").set_defaults(fn=cmd_peaks)
    sub.add_parser("stats").set_defaults(fn=cmd_stats)
    sub.add_parser("reset-stats").set_defaults(fn=cmd_reset_stats)
    s = sub.add_parser("wait-stats"); s.add_argument("--family", required=True); s.add_argument("--count", type=int, required=True)
    s.add_argument("--since-ns", type=int, required=True); s.add_argument("--timeout", type=float, default=600)
    s.add_argument("--poll-ms", type=int, default=10); s.set_defaults(fn=cmd_wait_stats)
    s = sub.add_parser("wait-file"); s.add_argument("name"); s.add_argument("--size", type=int, required=True)
    s.add_argument("--machine", type=int, default=1); s.add_argument("--parent", type=int)
    s.add_argument("--since-ns", type=int, required=True); s.add_argument("--timeout", type=float, default=600)
    s.add_argument("--poll-ms", type=int, default=10); s.set_defaults(fn=cmd_wait_file)

    a = p.parse_args()
    try:
        out = a.fn(Client(), a)
    except (ApiError, OSError, KeyError) as e:
        print(f"vagon_client {a.cmd}: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
