"""A small Hugging Face Hub stand-in for the tests: enough of the Hub's HTTP API for the real
``huggingface_hub`` client (``HF_ENDPOINT=http://127.0.0.1:<port>``) to create a repo, upload a folder,
read repo info and file trees, and download files (``hf_hub_download``, ``snapshot_download``,
``timm.create_model("hf-hub:...")``), and for ``datasets.load_dataset("ns/name")`` to load a parquet dataset repo.

Only what the clients call is implemented (found by logging the requests of huggingface_hub 2.4 / datasets 5.2):

    GET  /api/whoami-v2                                   token check
    POST /api/repos/create                                new model repo with an initial commit (.gitattributes)
    POST /api/validate-yaml                               README.md front matter must be a YAML mapping
    GET  /api/models/{ns}/{name}[/revision/{rev}]         repo info: sha, siblings, private, cardData
    GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]      file listing (?recursive=true), one page
    POST /api/models/{ns}/{name}/preupload/{rev}          uploadMode "regular" for every file
    POST /api/models/{ns}/{name}/commit/{rev}             NDJSON: header, file (base64), deletedFile/Folder
    HEAD/GET /{ns}/{name}/resolve/{rev}/{path}            X-Repo-Commit, ETag, Content-Length, the bytes
    GET  /api/datasets/{ns}/{name}[/revision/{rev}]       dataset repo info (as for models, without modelId)
    GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]    dataset file listing
    HEAD/GET /datasets/{ns}/{name}/resolve/{rev}/{path}   dataset file download

``load_dataset`` asks for README.md, the repo info, ``{name}.py``, ``.huggingface.yaml`` and
``dataset_infos.json`` (404 ``EntryNotFound`` when absent is what it expects), lists the root and ``data/``
non-recursively, then downloads the data files (``data/train-00000-of-00001.parquet``, ...). Dataset repos are
created with :meth:`FakeHub.add_dataset` (no dataset upload endpoints); they live in ``FakeHub.datasets``, apart
from the model repos in ``FakeHub.repos``, as the Hub keeps the two namespaces apart.

Files are always plain git blobs: no LFS, and no Xet (no ``X-Xet-*`` header, no ``xet-auth`` link), so the
client never leaves this server. Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``) so the client raises its usual exceptions.

Write endpoints need ``Authorization: Bearer <token>`` (401 without it or with another token; 403 outside
the token's namespace). Every request is recorded (``requests``: method, path, headers, body) and every file
a commit carried is kept decoded (``uploads``), so a test can look for a secret in all of them.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub", "git_blob_oid", "closed_port_url"]

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's ``oid`` / ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class Commit:
    oid: str
    message: str
    files: Dict[str, bytes]
    parent: Optional[str]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_id: str
    private: bool
    repo_type: str = "model"  # "model" or "dataset"
    commits: Dict[str, Commit] = field(default_factory=dict)
    branches: Dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Optional[Commit]:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: bytes


class FakeHub:
    """The server and its state. ``with FakeHub(token=...) as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, token: str = "hf_test_token", user: str = "user") -> None:
        self.token, self.user = token, user
        self.repos: Dict[str, Repo] = {}  # model repos
        self.datasets: Dict[str, Repo] = {}  # dataset repos (a separate namespace, as on the Hub)
        self.requests: List[Request] = []
        self.uploads: List[Tuple[str, str, bytes]] = []  # (repo_id, path, content) for every committed file
        self.unhandled: List[str] = []  # "METHOD /path" of requests no route matched
        self._lock = threading.RLock()
        self._counter = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- state helpers ------------------------------------------------------------------------------------
    def _new_commit(self, repo: Repo, files: Dict[str, bytes], message: str, parent: Optional[str]) -> Commit:
        self._counter += 1
        h = hashlib.sha1(f"{repo.repo_id}\n{parent}\n{message}\n{self._counter}\n".encode())
        for path in sorted(files):
            h.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
        c = Commit(h.hexdigest(), message, files, parent)
        repo.commits[c.oid] = c
        repo.branches["main"] = c.oid
        return c

    def add_dataset(self, repo_id: str, files: Dict[str, bytes], private: bool = False,
                    message: str = "add dataset") -> str:
        """Create (or add a commit to) the dataset repo ``repo_id`` holding ``files`` (path -> bytes) on ``main``,
        as if it had been uploaded; returns the commit id."""
        with self._lock:
            repo = self.datasets.get(repo_id)
            if repo is None:
                repo = self.datasets[repo_id] = Repo(repo_id, private, "dataset")
                self._new_commit(repo, {".gitattributes": _GITATTRIBUTES}, "initial commit", None)
            head = repo.commits[repo.branches["main"]]
            return self._new_commit(repo, {**head.files, **files}, message, head.oid).oid

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> Dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (for assertions)."""
        with self._lock:
            commit = (self.datasets if repo_type == "dataset" else self.repos)[repo_id].resolve(revision)
            assert commit is not None, f"no revision {revision!r} in {repo_id}"
            return dict(commit.files)

    def request_paths(self) -> List[str]:
        return [f"{r.method} {r.path}" for r in self.requests]


# ---- request handling ------------------------------------------------------------------------------------
def _repo_id(parts: List[str]) -> str:
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise HubHTTPError(400, "repo id must be namespace/name")
    return f"{parts[0]}/{parts[1]}"


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the bound subclass
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
        pass

    # -- plumbing -------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None,
              content_type: str = "application/json", length: Optional[int] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        req = Request(self.command, url.path, parse_qs(url.query),
                      {k.lower(): v for k, v in self.headers.items()}, body)
        with self.hub._lock:
            self.hub.requests.append(req)
        try:
            self._route(req, [unquote(p) for p in url.path.strip("/").split("/")])
        except HubHTTPError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message}, e.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # -- auth -----------------------------------------------------------------------------------------------
    def _token_state(self, req: Request) -> Optional[bool]:
        """None: no token sent; True: the valid token; False: some other token."""
        auth = req.headers.get("authorization", "")
        if not auth:
            return None
        return auth == f"Bearer {self.hub.token}"

    def _require_write(self, req: Request, namespace: str) -> None:
        state = self._token_state(req)
        if state is None:
            raise HubHTTPError(401, "Unauthorized: this endpoint needs a token")
        if state is False:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        if namespace != self.hub.user:
            raise HubHTTPError(403, f"You don't have the rights to write under the namespace \"{namespace}\"")

    def _repo(self, req: Request, repo_id: str, repo_type: str = "model") -> Repo:
        repo = (self.hub.datasets if repo_type == "dataset" else self.hub.repos).get(repo_id)
        if repo is None or (repo.private and self._token_state(req) is not True):
            raise HubHTTPError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- routes ---------------------------------------------------------------------------------------------
    def _route(self, req: Request, parts: List[str]) -> None:
        m = req.method
        if parts[:1] == ["api"]:
            rest = parts[1:]
            if m == "GET" and rest == ["whoami-v2"]:
                return self._whoami(req)
            if m == "POST" and rest == ["repos", "create"]:
                return self._create_repo(req)
            if m == "POST" and rest == ["validate-yaml"]:
                return self._validate_yaml(req)
            if rest[:1] in (["models"], ["datasets"]) and len(rest) >= 3:
                rtype = "model" if rest[0] == "models" else "dataset"
                repo_id, tail = _repo_id(rest[1:3]), rest[3:]
                if m == "GET" and not tail:
                    return self._repo_info(req, repo_id, "main", rtype)
                if m == "GET" and len(tail) == 2 and tail[0] == "revision":
                    return self._repo_info(req, repo_id, tail[1], rtype)
                if m == "GET" and len(tail) >= 2 and tail[0] == "tree":
                    return self._tree(req, repo_id, tail[1], "/".join(tail[2:]), rtype)
                if m == "POST" and len(tail) == 2 and tail[0] == "preupload" and rtype == "model":
                    return self._preupload(req, repo_id, tail[1])
                if m == "POST" and len(tail) == 2 and tail[0] == "commit" and rtype == "model":
                    return self._commit_files(req, repo_id, tail[1])
        elif parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(req, _repo_id(parts[1:3]), parts[4], "/".join(parts[5:]), "dataset")
        elif len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(req, _repo_id(parts[:2]), parts[3], "/".join(parts[4:]))
        with self.hub._lock:
            self.hub.unhandled.append(f"{m} {req.path}")
        raise HubHTTPError(404, f"not implemented by the test server: {m} {req.path}")

    def _whoami(self, req: Request) -> None:
        if self._token_state(req) is not True:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        self._json({"type": "user", "name": self.hub.user, "fullname": "Test User", "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _create_repo(self, req: Request) -> None:
        payload = json.loads(req.body or b"{}")
        if payload.get("type", "model") != "model":
            raise HubHTTPError(400, "the test server only hosts model repos")
        namespace = payload.get("organization") or self.hub.user
        repo_id = f"{namespace}/{payload['name']}"
        self._require_write(req, namespace)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                # the client reads "url" from the 409 answer too (create_repo(..., exist_ok=True))
                msg = "You already created this model repo"
                return self._json({"error": msg, "url": url}, 409, {"X-Error-Message": msg})
            repo = Repo(repo_id, private)
            self.hub.repos[repo_id] = repo
            self.hub._new_commit(repo, {".gitattributes": _GITATTRIBUTES}, "initial commit", None)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, req: Request) -> None:
        import yaml

        content = json.loads(req.body or b"{}").get("content", "")
        meta: Any = {}
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end < 0:
                return self._json({"errors": [{"message": "unterminated YAML front matter"}]}, 400)
            try:
                meta = yaml.safe_load(content[3:end])
            except yaml.YAMLError as e:
                return self._json({"errors": [{"message": f"invalid YAML: {e}"}]}, 400)
        if meta is not None and not isinstance(meta, dict):
            return self._json({"errors": [{"message": "metadata must be a YAML mapping"}]}, 400)
        self._json({"errors": [], "warnings": []})

    def _repo_info(self, req: Request, repo_id: str, revision: str, repo_type: str = "model") -> None:
        with self.hub._lock:
            repo = self._repo(req, repo_id, repo_type)
            commit = self._commit(repo, revision)
            files = dict(commit.files)
        card = _front_matter(files.get("README.md", b""))
        iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date))
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
            "author": repo_id.split("/")[0], "sha": commit.oid, "lastModified": iso, "createdAt": iso,
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": card.get("tags", []), "cardData": card or None,
            "siblings": [{"rfilename": p, "size": len(b), "blobId": git_blob_oid(b)} for p, b in sorted(files.items())],
            "usedStorage": sum(len(b) for b in files.values()),
        }
        if repo_type == "model":
            info.update(modelId=repo_id, library_name=card.get("library_name"), pipeline_tag=card.get("pipeline_tag"))
        self._json(info)

    def _tree(self, req: Request, repo_id: str, revision: str, path: str, repo_type: str = "model") -> None:
        recursive = (req.query.get("recursive", ["false"])[0].lower() in ("1", "true"))
        with self.hub._lock:
            files = dict(self._commit(self._repo(req, repo_id, repo_type), revision).files)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubHTTPError(404, f"{path} does not exist", "EntryNotFound")
        entries: Dict[str, Dict[str, Any]] = {}
        for p, content in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            # every folder on the way down is listed (recursive) or only the first one (not recursive)
            for depth in range(1, len(rel) if recursive else min(2, len(rel))):
                d = prefix + "/".join(rel[:depth])
                entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                       "size": 0, "path": d})
            if recursive or len(rel) == 1:
                entries[p] = {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": p}
        self._json(list(entries.values()))

    def _preupload(self, req: Request, repo_id: str, revision: str) -> None:
        self._require_write(req, repo_id.split("/")[0])
        payload = json.loads(req.body or b"{}")
        with self.hub._lock:
            commit = self._commit(self._repo(req, repo_id), revision)
            files = dict(commit.files)
        out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                "oid": git_blob_oid(files[f["path"]]) if f["path"] in files else None}
               for f in payload.get("files", [])]
        self._json({"files": out, "commitOid": commit.oid})

    def _commit_files(self, req: Request, repo_id: str, revision: str) -> None:
        self._require_write(req, repo_id.split("/")[0])
        if req.query.get("create_pr"):
            raise HubHTTPError(400, "pull requests are not supported by the test server")
        if "ndjson" not in req.headers.get("content-type", ""):
            raise HubHTTPError(400, "the commit endpoint expects application/x-ndjson")
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubHTTPError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        with self.hub._lock:
            repo = self._repo(req, repo_id)
            head = self._commit(repo, revision)
            if revision != "main" and repo.branches.get("main") != head.oid:
                raise HubHTTPError(400, "the test server only commits on top of main")
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            added: List[Tuple[str, bytes]] = []
            for item in lines[1:]:
                key, value = item.get("key"), item.get("value", {})
                path = value.get("path", "")
                if not path or path.startswith("/") or ".." in path.split("/"):
                    raise HubHTTPError(400, f"invalid path in repo: {path!r}")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubHTTPError(400, f"unsupported encoding {value.get('encoding')!r}")
                    content = base64.b64decode(value["content"], validate=True)
                    files[path] = content
                    added.append((path, content))
                elif key == "deletedFile":
                    if path not in files:
                        raise HubHTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    files = {p: b for p, b in files.items() if not p.startswith(path.rstrip("/") + "/")}
                elif key == "lfsFile":
                    raise HubHTTPError(400, "LFS files were never requested: preupload answers 'regular'")
                else:
                    raise HubHTTPError(400, f"unknown commit operation {key!r}")
            commit = self.hub._new_commit(repo, files, header.get("summary", ""), head.oid)
            self.hub.uploads.extend((repo_id, p, c) for p, c in added)
        self._json({"success": True, "commitOid": commit.oid, "hookOutput": "", "pullRequestUrl": None,
                    "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.oid}"})

    def _resolve(self, req: Request, repo_id: str, revision: str, path: str, repo_type: str = "model") -> None:
        with self.hub._lock:
            commit = self._commit(self._repo(req, repo_id, repo_type), revision)
            content = commit.files.get(path)
        if content is None:
            raise HubHTTPError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                               {"X-Repo-Commit": commit.oid})
        self._send(200, content, {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(content)}"'},
                   content_type="application/octet-stream")


def _front_matter(readme: bytes) -> Dict[str, Any]:
    import yaml

    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}
