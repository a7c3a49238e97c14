"""The fake Hugging Face Hub server behind ``tests/hub_server.py``'s fixtures (read that first).

``FakeHub`` is a threaded HTTP server on 127.0.0.1 speaking the part of the Hub's protocol that
``huggingface_hub`` 2.4 uses: model info (``/api/models/{id}[/revision/{rev}]``, with sizes and
LFS hashes when asked for ``blobs``), the file tree (``/api/models/{id}/tree/{rev}``),
``HEAD``/``GET /{id}/resolve/{rev}/{path}`` with byte ranges, ``/api/whoami-v2`` and
``/api/models/{id}/auth-check``. Errors carry the ``X-Error-Code`` the client turns into
``RepositoryNotFoundError``, ``GatedRepoError``, ``RevisionNotFoundError`` or
``RemoteEntryNotFoundError``. It never sends Xet headers, so the client downloads over plain HTTP.
Faults for tests: ``drop_after`` (cut the connection mid-body), ``fail`` (answer an error status),
``throttle`` (slow bodies down); ``requests`` logs what was asked for.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".onnx", ".msgpack")
LFS_THRESHOLD = 100 * 1024  # smaller than the Hub's 10 MB so test files show both kinds
BODY_CHUNK = 16 * 1024
LAST_MODIFIED = "2024-05-01T12:00:00.000Z"


class HubRequest(NamedTuple):
    """One request the server received; ``headers`` keys are lower-case, without authorization."""

    method: str
    path: str  # percent-decoded, query string included
    headers: dict[str, str]


class HubResponse(NamedTuple):
    """What the server answered: the status and how many body bytes it really sent."""

    method: str
    path: str  # as in HubRequest
    status: int
    body_bytes: int


@dataclass(frozen=True)
class HubFile:
    path: str
    source: Path
    size: int
    lfs_sha256: str | None  # None for a regular git file
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files)
    pointer_size: int

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.blob_id


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    sha: str
    gated: bool
    private: bool
    license: str | None
    tags: list[str]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hub_file(path: str, source: Path, lfs_threshold: int) -> HubFile:
    data = source.read_bytes()
    if len(data) < lfs_threshold and not path.endswith(LFS_SUFFIXES):
        return HubFile(path, source, len(data), None, git_blob_sha1(data), 0)
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
    return HubFile(
        path, source, len(data), sha256, git_blob_sha1(pointer.encode()), len(pointer.encode())
    )


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


class FakeHub:
    """The fake Hub; start it with ``with FakeHub() as hub:`` (or ``start()``/``stop()``)."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.tokens: dict[str, dict] = {}
        self.requests: list[HubRequest] = []
        self.responses: list[HubResponse] = []
        self._lock = threading.Lock()
        self._faults: list[dict] = []
        self._throttle: tuple[float, str] | None = None
        self._baseline: tuple[dict, dict] | None = None
        self._httpd: http.server.ThreadingHTTPServer | None = None

    def start(self) -> FakeHub:
        hub = self

        class Handler(_HubHandler):
            server_hub = hub

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="fake-hub").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "FakeHub is not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        gated: bool = False,
        private: bool = False,
        license: str | None = "openrail",
        tags: list[str] | None = None,
        lfs_threshold: int = LFS_THRESHOLD,
    ) -> HubRepo:
        """Serve every file under ``folder`` (dot-files skipped) as ``repo_id`` at one commit."""
        folder = Path(folder)
        files = {}
        for source in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = source.relative_to(folder).as_posix()
            if not any(part.startswith(".") for part in rel.split("/")):
                files[rel] = _hub_file(rel, source, lfs_threshold)
        listing = "\n".join(f"{f.path} {f.etag}" for f in files.values())
        sha = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()
        if tags is None:
            tags = self._default_tags(folder, license)
        repo = HubRepo(repo_id, files, sha, gated, private, license, tags)
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    @staticmethod
    def _default_tags(folder: Path, license: str | None) -> list[str]:
        tags = ["diffusers", "safetensors", "text-to-image"]
        index = folder / "model_index.json"
        if index.is_file():
            tags.append(f"diffusers:{json.loads(index.read_text())['_class_name']}")
        return tags + ([f"license:{license}"] if license else [])

    def add_token(
        self,
        token: str,
        user: str = "alice",
        access: list[str] | tuple[str, ...] = (),
        *,
        role: str = "read",
        display_name: str | None = None,
    ) -> None:
        """A valid token of ``user``; ``access``: gated repos whose licence they accepted (and
        private repos they may read)."""
        with self._lock:
            self.tokens[token] = {
                "user": user,
                "access": set(access),
                "role": role,
                "display_name": display_name or f"{user}-{role}",
            }

    def grant_access(self, token: str, repo_id: str) -> None:
        """The token's user accepts ``repo_id``'s licence (as on the model page)."""
        with self._lock:
            self.tokens[token]["access"].add(repo_id)

    def save_baseline(self) -> None:
        """Remember repos and tokens as they are now; ``reset()`` goes back to this."""
        with self._lock:
            self._baseline = (dict(self.repos), _copy_tokens(self.tokens))

    def drop_after(self, path_suffix: str, nbytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of a file ending in ``path_suffix`` close the connection after
        ``nbytes`` of body (the headers still announce the full length)."""
        with self._lock:
            self._faults.append({"suffix": path_suffix, "drop": nbytes, "times": times})

    def fail(self, path_suffix: str, status: int = 503, times: int = 1) -> None:
        """The next ``times`` GETs of a file ending in ``path_suffix`` answer ``status``."""
        with self._lock:
            self._faults.append({"suffix": path_suffix, "status": status, "times": times})

    def throttle(self, bytes_per_s: float | None, path_suffix: str = "") -> None:
        """Send file bodies (ending in ``path_suffix``) at about ``bytes_per_s``; None: full speed."""
        with self._lock:
            self._throttle = None if bytes_per_s is None else (float(bytes_per_s), path_suffix)

    def reset(self) -> None:
        """Forget requests, faults and throttling; restore the saved baseline repos and tokens."""
        with self._lock:
            self.requests.clear()
            self.responses.clear()
            self._faults.clear()
            self._throttle = None
            if self._baseline is not None:
                self.repos = dict(self._baseline[0])
                self.tokens = _copy_tokens(self._baseline[1])

    def file_requests(self, repo_id: str, method: str = "GET") -> list[HubRequest]:
        """The ``method`` requests of ``repo_id``'s files (``/resolve/``), in order."""
        prefix = f"/{repo_id}/resolve/"
        return [r for r in list(self.requests) if r.method == method and r.path.startswith(prefix)]

    def downloaded(self, repo_id: str) -> list[str]:
        """Paths in the repo of every GET of a file of ``repo_id`` (repeats kept, in order)."""
        after_resolve = (r.path.split("/resolve/", 1)[1] for r in self.file_requests(repo_id))
        return [rest.partition("/")[2] for rest in after_resolve]

    def _take_fault(self, path: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["times"] > 0 and path.endswith(fault["suffix"]):
                    fault["times"] -= 1
                    return dict(fault)
        return None

    def _throttle_for(self, path: str) -> float | None:
        setting = self._throttle
        if setting and path.endswith(setting[1]):
            return setting[0]
        return None


def _copy_tokens(tokens: dict[str, dict]) -> dict[str, dict]:
    return {t: {**info, "access": set(info["access"])} for t, info in tokens.items()}


class _HubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: FakeHub

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        hub = self.server_hub
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        logged = path + (f"?{split.query}" if split.query else "")
        with hub._lock:
            hub.requests.append(HubRequest(self.command, logged, headers))
        self._status, self._sent = 0, 0
        try:
            token = self._token()
            if path == "/api/whoami-v2":
                self._json(head, self._whoami(token))
            elif path.startswith("/api/models/"):
                self._api(head, path.removeprefix("/api/models/"), query, token)
            elif "/resolve/" in path:
                self._resolve(head, path, token)
            else:
                raise _HubError(404, "Not Found")
        except _HubError as error:
            self._error(head, error)
        with hub._lock:
            hub.responses.append(HubResponse(self.command, logged, self._status, self._sent))

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def _token(self) -> dict | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        info = self.server_hub.tokens.get(token)
        if info is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return info

    def _find_repo(self, rest: str) -> tuple[HubRepo, str]:
        """Split ``ns/name/more`` into the registered repo and ``more``."""
        for repo_id in sorted(self.server_hub.repos, key=len, reverse=True):
            if rest == repo_id or rest.startswith(repo_id + "/"):
                return self.server_hub.repos[repo_id], rest[len(repo_id) + 1 :]
        raise _HubError(404, "Repository not found", "RepoNotFound")

    def _check_visible(self, repo: HubRepo, token: dict | None) -> None:
        if repo.private and (token is None or repo.repo_id not in token["access"]):
            raise _HubError(401 if token is None else 404, "Repository not found", "RepoNotFound")

    def _check_files_access(self, repo: HubRepo, token: dict | None) -> None:
        self._check_visible(repo, token)
        if not repo.gated:
            return
        url = f"http://127.0.0.1:{self.server.server_address[1]}/{repo.repo_id}"
        if token is None:
            message = (
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be"
                " authenticated to access it. Please log in."
            )
            raise _HubError(401, message, "GatedRepo")
        if repo.repo_id not in token["access"]:
            message = (
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized"
                f" list. Visit {url} to ask for access."
            )
            raise _HubError(403, message, "GatedRepo")

    def _revision(self, repo: HubRepo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _whoami(self, token: dict | None) -> dict:
        if token is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        user = token["user"]
        return {
            "type": "user",
            "id": hashlib.sha1(user.encode()).hexdigest()[:24],
            "name": user,
            "email": f"{user}@example.test",
            "orgs": [],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": token["display_name"],
                    "role": token["role"],
                    "createdAt": LAST_MODIFIED,
                },
            },
        }

    def _api(self, head: bool, rest: str, query: dict, token: dict | None) -> None:
        repo, more = self._find_repo(rest)
        self._check_visible(repo, token)
        if more in ("auth-check", "auth-check/write"):
            self._check_files_access(repo, token)
            if more.endswith("write") and (token is None or token["role"] != "write"):
                raise _HubError(403, "You don't have write access to this repository")
            return self._json(head, {})
        if more == "" or more.startswith("revision/"):
            self._revision(repo, more.removeprefix("revision/") or "main")
            blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
            return self._json(head, self._model_info(repo, blobs))
        if more.startswith("tree/"):
            revision, _, folder = more.removeprefix("tree/").partition("/")
            self._revision(repo, revision)
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(head, self._tree(repo, folder.strip("/"), recursive))
        raise _HubError(404, "Not Found")

    def _model_info(self, repo: HubRepo, blobs: bool) -> dict:
        siblings = []
        for f in repo.files.values():
            sibling: dict = {"rfilename": f.path}
            if blobs:
                sibling.update(size=f.size, blobId=f.blob_id)
                if f.lfs_sha256:
                    lfs = {"sha256": f.lfs_sha256, "size": f.size, "pointerSize": f.pointer_size}
                    sibling["lfs"] = lfs
            siblings.append(sibling)
        card = {"license": repo.license, "tags": repo.tags} if repo.license else {"tags": repo.tags}
        return {
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.sha,
            "lastModified": LAST_MODIFIED,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "library_name": "diffusers",
            "pipeline_tag": "text-to-image",
            "tags": repo.tags,
            "cardData": card,
            "siblings": siblings,
            "usedStorage": sum(f.size for f in repo.files.values()),
        }

    def _tree(self, repo: HubRepo, folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in repo.files):
            raise _HubError(404, f"{folder} does not exist", "EntryNotFound")
        entries: dict[str, dict] = {}
        for f in repo.files.values():
            if not f.path.startswith(prefix):
                continue
            parts = f.path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # the folders on the way
                sub = prefix + "/".join(parts[:i])
                oid = hashlib.sha1(f"{repo.sha}:{sub}".encode()).hexdigest()
                entries.setdefault(sub, {"type": "directory", "oid": oid, "size": 0, "path": sub})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.lfs_sha256:
                    entry["lfs"] = {
                        "oid": f.lfs_sha256,
                        "size": f.size,
                        "pointerSize": f.pointer_size,
                    }
                entries[f.path] = entry
        return [entries[k] for k in sorted(entries)]

    def _resolve(self, head: bool, path: str, token: dict | None) -> None:
        repo_id, rest = path.lstrip("/").split("/resolve/", 1)
        repo, _ = self._find_repo(repo_id)
        self._check_files_access(repo, token)
        revision, _, filename = rest.partition("/")
        self._revision(repo, revision)
        hub_file = repo.files.get(filename)
        if hub_file is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", **{"X-Repo-Commit": repo.sha})
        fault = None if head else self.server_hub._take_fault(filename)
        if fault and "status" in fault:
            raise _HubError(fault["status"], "Injected failure", None)
        start, end = self._range(hub_file.size)
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{hub_file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{filename.rsplit("/", 1)[-1]}"',
        }
        if hub_file.lfs_sha256:  # what the Hub adds when it would redirect an LFS file to its CDN
            headers.update(
                {"X-Linked-Etag": f'"{hub_file.etag}"', "X-Linked-Size": str(hub_file.size)}
            )
        partial = start > 0 or end < hub_file.size - 1
        self.send_response(206 if partial else 200)
        if partial:
            headers["Content-Range"] = f"bytes {start}-{end}/{hub_file.size}"
        headers["Content-Length"] = str(end - start + 1)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self._send_body(hub_file, start, end + 1, fault)

    def _range(self, size: int) -> tuple[int, int]:
        header = self.headers.get("Range")
        if not header:
            return 0, size - 1
        first, _, last = header.removeprefix("bytes=").partition("-")
        start = int(first) if first else max(size - int(last), 0)
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size or start > end:
            raise _HubError(
                416, "Range Not Satisfiable", None, **{"Content-Range": f"bytes */{size}"}
            )
        return start, end

    def _send_body(self, hub_file: HubFile, start: int, stop: int, fault: dict | None) -> None:
        hub = self.server_hub
        limit = stop if fault is None else min(stop, start + fault["drop"])
        rate = hub._throttle_for(hub_file.path)
        try:
            with open(hub_file.source, "rb") as source:
                source.seek(start)
                position = start
                while position < limit:
                    chunk = source.read(min(BODY_CHUNK, limit - position))
                    self.wfile.write(chunk)
                    position += len(chunk)
                    self._sent = position - start
                    if rate:
                        self.wfile.flush()
                        time.sleep(len(chunk) / rate)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client went away (cancelled)
            self.close_connection = True
            return
        if fault is not None:  # cut the body short: the client sees the connection drop
            self.close_connection = True

    def _json(self, head: bool, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
            self._sent = len(body)

    def _error(self, head: bool, error: _HubError) -> None:
        body = json.dumps({"error": error.message}).encode()
        self.send_response(error.status)
        if error.code:
            self.send_header("X-Error-Code", error.code)
        self.send_header("X-Error-Message", error.message)
        for name, value in error.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
            self._sent = len(body)
