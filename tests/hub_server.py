"""A small in-memory Hugging Face Hub for tests (standard library only).

It speaks the subset of the Hub HTTP API that the real ``huggingface_hub``
client uses to create repos, upload (classic LFS path, so set
``HF_HUB_DISABLE_XET=1``), commit, list and download files; see
``../shared/HUB_PROTOCOL.md``. Repos are git-like: each commit is a full
snapshot ``{path: (kind, blob_key)}`` with a parent, branches point at commits.

    with HubServer() as hub:          # 127.0.0.1 on a free port
        HfApi(endpoint=hub.url).create_repo("org/name")

Not a general Hub: no PRs, tags, pagination or gated repos. Private repos
answer 401 + ``RepoNotFound`` to requests without an ``Authorization`` header
(as the real Hub does). Tokens are never stored; only whether one was sent.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".pkl", ".tar", ".gz", ".zip",
                ".onnx", ".h5", ".msgpack")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub uses as ETag of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    lfs: bool
    key: str  # git sha1 (regular) or sha256 (LFS) into HubState.blobs / lfs_blobs


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None,
                 body: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.body = {"error": message, **(body or {})}


class HubState:
    """Repos, commits and blobs; every mutation holds the lock."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}       # git sha1 -> content (regular files)
        self.lfs_blobs: dict[str, bytes] = {}   # sha256 -> content
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, had_token): never the token itself
        self._counter = 0

    # -- lookups ------------------------------------------------------------
    def url_of(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"

    def repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(401 if repo is not None else 404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def commit(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if _COMMIT_RE.match(revision) and revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def content(self, entry: Entry) -> bytes:
        return self.lfs_blobs[entry.key] if entry.lfs else self.blobs[entry.key]

    # -- mutations ----------------------------------------------------------
    def new_commit(self, repo: Repo, parent: Commit | None, files: dict[str, Entry], summary: str) -> Commit:
        self._counter += 1
        digest = json.dumps([parent.oid if parent else None, summary, self._counter, time.time_ns(),
                             sorted((p, e.lfs, e.key) for p, e in files.items())])
        commit = Commit(hashlib.sha1(digest.encode()).hexdigest(), parent.oid if parent else None, summary, files)
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        if repo_id in self.repos:
            raise HubError(409, None, "You already created this model repo", body={"url": self.url_of(repo_id)})
        repo = Repo(repo_id, private)
        sha = git_blob_sha1(GITATTRIBUTES)
        self.blobs[sha] = GITATTRIBUTES
        first = self.new_commit(repo, None, {".gitattributes": Entry(False, sha)}, "initial commit")
        repo.branches["main"] = first.oid
        self.repos[repo_id] = repo
        return repo


def _entry_json(state: HubState, path: str, entry: Entry) -> dict[str, Any]:
    data = state.content(entry)
    if entry.lfs:
        pointer = lfs_pointer(entry.key, len(data))
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(pointer),
                "lfs": {"oid": entry.key, "size": len(data), "pointerSize": len(pointer)}}
    return {"type": "file", "path": path, "size": len(data), "oid": entry.key}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; requests are recorded instead
        pass

    # -- plumbing -----------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        raw = self._body()
        return json.loads(raw) if raw else {}

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _send_json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p != ""]
        query = parse_qs(url.query)
        self.state.requests.append((method, url.path, self.authorized))
        try:
            if method in ("POST", "PUT"):
                # Read the body before taking the lock: uploads may be large.
                body = self._body()
            else:
                body = b""
            with self.state.lock:
                self._route(method, parts, query, body)
        except HubError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message
            self._send(err.status, json.dumps(err.body).encode(), headers,
                       head_only=method == "HEAD")

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_HEAD = lambda self: self._dispatch("HEAD")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731

    # -- routes -------------------------------------------------------------
    def _route(self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes) -> None:
        s = self.state
        if method == "GET" and parts == ["api", "whoami-v2"]:
            if not self.authorized:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return self._send_json({"type": "user", "name": "test-user", "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._send_json({"errors": [], "warnings": []})
        if method == "POST" and parts == ["api", "repos", "create"]:
            payload = json.loads(body or b"{}")
            if payload.get("type", "model") not in (None, "model"):
                raise HubError(400, None, "only model repos are served by this test hub")
            name, org = payload["name"], payload.get("organization")
            repo_id = f"{org}/{name}" if org else name
            private = bool(payload.get("private")) or payload.get("visibility") == "private"
            s.create_repo(repo_id, private)
            return self._send_json({"url": f"{self.server.url}/{repo_id}", "name": repo_id})
        if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-upload":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, None, f"sha256 of the uploaded bytes does not match {oid}")
            s.lfs_blobs[oid] = body
            return self._send(200)
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "models":
            return self._api_models(method, parts[2:], query, body)
        if method == "POST" and len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == [
                "info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{parts[0]}/{parts[1][:-4]}", body)
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(map(unquote, parts[4:])))
        raise HubError(404, None, f"test hub: no route for {method} /{'/'.join(parts)}")

    def _api_models(self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes) -> None:
        s = self.state
        if len(rest) < 2:
            raise HubError(404, "RepoNotFound", "repo ids are org/name")
        repo = s.repo(f"{rest[0]}/{rest[1]}", self.authorized)
        tail = rest[2:]
        if method == "GET" and (not tail or (len(tail) == 2 and tail[0] == "revision")):
            commit = s.commit(repo, tail[1] if tail else "main")
            return self._send_json({
                "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.oid, "private": repo.private,
                "author": repo.repo_id.split("/")[0], "disabled": False, "gated": False, "tags": [],
                "siblings": [{"rfilename": p, "size": len(s.content(e))} for p, e in sorted(commit.files.items())],
            })
        if method == "GET" and len(tail) >= 2 and tail[0] == "tree":
            commit = s.commit(repo, tail[1])
            prefix = "/".join(map(unquote, tail[2:]))
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._send_json(self._tree(commit, prefix, recursive))
        if method == "POST" and len(tail) == 2 and tail[0] == "preupload":
            commit = s.commit(repo, tail[1])
            files = []
            for f in json.loads(body or b"{}").get("files", []):
                sample = base64.b64decode(f.get("sample", ""))
                lfs = (f["path"].endswith(LFS_SUFFIXES) or f.get("size", 0) > LFS_SIZE_THRESHOLD
                       or b"\0" in sample)
                existing = commit.files.get(f["path"])
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": existing.key if existing is not None else None})
            return self._send_json({"files": files})
        if method == "POST" and len(tail) == 2 and tail[0] == "commit":
            return self._commit(repo, unquote(tail[1]), body)
        if method == "POST" and len(tail) == 2 and tail[0] == "branch":
            branch = unquote(tail[1])
            if branch in repo.branches:
                raise HubError(409, None, f"Branch {branch} already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[branch] = s.commit(repo, start).oid
            return self._send_json({})
        if method == "GET" and len(tail) >= 1 and tail[0] == "xet-write-token":
            raise HubError(501, None, "this test hub has no Xet storage: set HF_HUB_DISABLE_XET=1")
        raise HubError(404, None, f"test hub: no route for {method} /api/models/{'/'.join(rest)}")

    def _tree(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = f"{prefix.rstrip('/')}/" if prefix else ""
        out: dict[str, dict[str, Any]] = {}
        for path, entry in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rel = path[len(base):].split("/")
            for depth in range(1, len(rel)):
                folder = base + "/".join(rel[:depth])
                if recursive or depth == 1:
                    out.setdefault(folder, {"type": "directory", "path": folder,
                                            "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0})
            if recursive or len(rel) == 1:
                out[path] = _entry_json(self.state, path, entry)
        if prefix and not out:
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist", {"X-Repo-Commit": commit.oid})
        return list(out.values())

    def _lfs_batch(self, repo_id: str, body: bytes) -> None:
        s = self.state
        s.repo(repo_id, self.authorized)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise HubError(400, None, "test hub: only LFS uploads go through the batch API")
        objects = []
        for obj in payload.get("objects", []):
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in s.lfs_blobs:
                item["actions"] = {"upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}"}}
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        s = self.state
        if revision not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision} (commits go to branches)")
        parent = repo.commits[repo.branches[revision]]
        files = dict(parent.files)
        summary = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                wanted = value.get("parentCommit")
                if wanted and wanted != parent.oid:
                    raise HubError(412, None, f"parentCommit {wanted} is not the head of {revision}")
            elif key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else \
                    value["content"].encode()
                sha = git_blob_sha1(data)
                s.blobs[sha] = data
                files[value["path"]] = Entry(False, sha)
            elif key == "lfsFile":
                if value["oid"] not in s.lfs_blobs:
                    raise HubError(400, None, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = Entry(True, value["oid"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(folder)]:
                    del files[p]
            else:
                raise HubError(400, None, f"test hub: unsupported commit operation {key!r}")
        commit = s.new_commit(repo, parent, files, summary)
        repo.branches[revision] = commit.oid
        self._send_json({"commitUrl": f"{self.server.url}/{repo.repo_id}/commit/{commit.oid}",
                         "commitOid": commit.oid, "success": True})

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        s = self.state
        repo = s.repo(repo_id, self.authorized)
        commit = s.commit(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}",
                           {"X-Repo-Commit": commit.oid})
        data = s.content(entry)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"ETag": f'"{entry.key}"', "X-Linked-Etag": f'"{entry.key}"',
                            "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{entry.key}"'
        status, payload = 200, data
        match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if match and method == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            status, payload = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, payload, headers, content_type="application/octet-stream", head_only=method == "HEAD")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    url: str


class HubServer:
    """Start/stop a test Hub on ``127.0.0.1`` at a free port; ``url`` is its endpoint."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._server.state = HubState(self.url)
        self._server.url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-hub", daemon=True)

    @property
    def state(self) -> HubState:
        return self._server.state

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- test helpers -------------------------------------------------------
    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """What the server stores for ``path`` at ``revision``: for byte-identity checks."""
        with self.state.lock:
            repo = self.state.repos[repo_id]
            return self.state.content(self.state.commit(repo, revision).files[path])

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.state.repos[repo_id].branches[branch]

    def commits(self, repo_id: str, branch: str = "main") -> list[str]:
        """Commit oids from the branch head back to the first commit."""
        repo = self.state.repos[repo_id]
        oid: str | None = repo.branches[branch]
        out = []
        while oid is not None:
            out.append(oid)
            oid = repo.commits[oid].parent
        return out


__all__ = ["HubServer", "HubState", "git_blob_sha1"]
