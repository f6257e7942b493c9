"""Fake Google Cloud and Kubeflow endpoints on 127.0.0.1 for the submission tests.

One ``FakeCloud`` HTTP server answers, well enough for the real client libraries to complete:

- Vertex AI REST (``/v1/projects/P/locations/L/...``): create and get pipeline jobs (a job's GET carries
  its metadata context, as Vertex AI's does once the run starts), create schedules and custom jobs;
  the metadata store's contexts as the SDK files a run under an experiment (get or create the default
  store and the experiment context, add the run's context as its child); the Model Registry: upload a
  model or a new version of one (``models:upload``, a long-running operation answered done; the
  ``default`` alias moves to a version uploaded with it, and the first version always has it), list
  models by ``display_name="..."`` (each as its default version, as Vertex AI lists them) and get a
  version by id or alias (``models/ID@VERSION``, ``models/ID`` for the default);
- Cloud Storage JSON API (``/storage/v1/b...``, reached through ``STORAGE_EMULATOR_HOST``): the
  aiplatform SDK's check that the pipeline-root bucket exists, bucket creation and its IAM policy;
- a KFP artifact registry (``POST /PROJECT/REPO`` with a multipart template, as kfp.registry sends);
- the Kubeflow Pipelines v2beta1 API (healthz, experiments, runs).

Every request is recorded (method, path, query, headers, body) so tests assert on what the product
actually sent; HEAD requests (reachability probes) are recorded and answered 404 without a body. Paths
containing a string of ``drop`` get no answer: the connection is closed, as a failing network does.
Nothing here is product logic: it only plays the other side of the wire.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from helpers.servers import LoopbackServer


@dataclass(frozen=True)
class Request:
    """One request the fake received."""

    method: str
    path: str  # unquoted, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self):
        return json.loads(self.body)

    def multipart(self) -> dict[str, bytes]:
        """Fields of a multipart/form-data body: ``{name: bytes}``."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()}


class FakeCloud(LoopbackServer):
    """The fake server. Attributes tests may change: ``pipeline_state`` (what a pipeline job reports
    on GET), ``kfp_run_state``, ``buckets`` (buckets that exist), ``kfp_experiments`` (name -> id),
    ``drop`` (path parts whose requests get no answer). ``contexts``: metadata contexts by name.
    ``models``: the Model Registry, ``{model resource name: [version, ...]}`` in upload order (each version
    a Model as the REST API spells it: ``versionId``, ``versionAliases``, ``labels``...); tests may seed it
    with `add_model_version`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.pipeline_state = "PIPELINE_STATE_SUCCEEDED"
        self.kfp_run_state = "SUCCEEDED"
        self.buckets: set[str] = set()
        self.kfp_experiments: dict[str, str] = {}
        self.drop: set[str] = set()
        self.contexts: dict[str, dict] = {}
        self.models: dict[str, list[dict]] = {}
        self._jobs: dict[str, dict] = {}
        self._lock = threading.Lock()
        super().__init__("fake-cloud")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def find(self, method: str, path_part: str) -> list[Request]:
        """Recorded requests with this method whose path contains ``path_part``."""
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # ----- the Model Registry -----

    def add_model_version(self, location: str, display_name: str, *, labels: dict[str, str] | None = None,
                          parent: str | None = None, default: bool = True, **fields) -> dict:
        """Store a model version as an upload would (``location``: ``projects/P/locations/L``); returns it."""
        model = {"displayName": display_name, "labels": dict(labels or {}), **fields}
        return self._store_version(location, model, parent, default)

    def _store_version(self, location: str, model: dict, parent: str | None, default: bool) -> dict:
        name = parent or f"{location}/models/{1000 + len(self.models)}"
        versions = self.models.setdefault(name, [])
        aliases = [alias for alias in model.get("versionAliases", []) if alias != "default"]
        if default or not versions:  # the first version of a model is always the default
            for version in versions:
                version["versionAliases"] = [a for a in version["versionAliases"] if a != "default"]
            aliases.insert(0, "default")
        stored = {**model, "name": name, "versionId": str(len(versions) + 1), "versionAliases": aliases}
        versions.append(stored)
        return stored

    def model_version(self, name: str) -> dict | None:
        """The version ``name`` designates: ``MODEL@ID``, ``MODEL@ALIAS``, or ``MODEL`` (its default)."""
        model, _, wanted = name.partition("@")
        wanted = wanted or "default"
        return next((version for version in self.models.get(model, [])
                     if wanted == version["versionId"] or wanted in version["versionAliases"]), None)

    def _registry(self, request: Request, parent: str) -> tuple[int, object] | None:
        """Model Registry requests (None: not one)."""
        if request.method == "POST" and parent.endswith("/models:upload"):
            location = parent[:-len("/models:upload")]
            body = request.json()
            model = body["model"]
            stored = self._store_version(location, model, body.get("parentModel") or None,
                                         "default" in model.get("versionAliases", []))
            operation = f"{stored['name']}/operations/{len(self.requests)}"
            return 200, {"name": operation, "done": True, "response": {
                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                "model": stored["name"], "modelVersionId": stored["versionId"]}}
        if request.method == "GET" and parent.endswith("/models"):
            wanted = re.fullmatch(r'display_name="([^"]*)"', request.query.get("filter", [""])[0])
            listed = [self.model_version(name) for name, versions in sorted(self.models.items())
                      if name.startswith(parent + "/")
                      and (not wanted or versions[0]["displayName"] == wanted.group(1))]
            return 200, {"models": listed} if listed else {}
        if request.method == "GET" and "/models/" in parent:
            version = self.model_version(parent)
            if version is None:
                return 404, {"error": {"code": 404, "message": f"model {parent} not found", "status": "NOT_FOUND"}}
            return 200, version
        return None

    # ----- routing -----

    def _answer(self, request: Request) -> tuple[int, object]:
        path, method = request.path, request.method
        if path.startswith("/v1/projects/"):
            return self._vertex(request)
        if path.startswith("/storage/v1/b") or path.startswith("/b/"):
            return self._storage(request)
        if path.startswith("/apis/v2beta1/"):
            return self._kfp(request)
        if method == "POST" and "multipart/form-data" in request.headers.get("content-type", ""):
            content = request.multipart()["content"]
            return 200, f"deepface-pipeline/sha256:{hashlib.sha256(content).hexdigest()}"
        return 404, {"error": {"code": 404, "message": f"fake: no route for {method} {path}"}}

    def _vertex(self, request: Request) -> tuple[int, object]:
        parent = request.path[len("/v1/"):]
        if "/metadataStores" in parent:
            return self._metadata(request, parent)
        if "/models" in parent:
            answer = self._registry(request, parent)
            if answer is not None:
                return answer
        if request.method == "POST" and parent.endswith("/pipelineJobs"):
            job = request.json()
            job_id = request.query["pipelineJobId"][0]
            job.update(name=f"{parent}/{job_id}", state="PIPELINE_STATE_PENDING")
            self._jobs[job["name"]] = job
            location = parent.rsplit("/", 1)[0]
            run_context = {"name": f"{location}/metadataStores/default/contexts/{job_id}",
                           "schemaTitle": "system.PipelineRun", "displayName": job_id}
            self.contexts[run_context["name"]] = run_context
            return 200, job
        if request.method == "GET" and "/pipelineJobs/" in parent:
            job = dict(self._jobs.get(parent) or {"name": parent})
            job["state"] = self.pipeline_state
            location, _, job_id = parent.partition("/pipelineJobs/")
            context_name = f"{location}/metadataStores/default/contexts/{job_id}"
            if context_name in self.contexts:
                job["jobDetail"] = {"pipelineRunContext": self.contexts[context_name]}
            return 200, job
        if request.method == "POST" and parent.endswith("/customJobs"):
            job = request.json()
            job.update(name=f"{parent}/5678", state="JOB_STATE_PENDING")
            return 200, job
        if request.method == "POST" and parent.endswith("/schedules"):
            schedule = request.json()
            schedule.update(name=f"{parent}/1234567890", state="ACTIVE")
            return 200, schedule
        return 404, {"error": {"code": 404, "message": f"fake Vertex: no route for {request.method} {parent}"}}

    def _metadata(self, request: Request, name: str) -> tuple[int, object]:
        """The default metadata store exists; contexts are created, read and given children."""
        if request.method == "GET" and name.endswith("/metadataStores/default"):
            return 200, {"name": name}
        if request.method == "POST" and name.endswith("/contexts"):
            context = request.json()
            context["name"] = f"{name}/{request.query['contextId'][0]}"
            self.contexts[context["name"]] = context
            return 200, context
        if request.method == "GET" and name in self.contexts:
            return 200, self.contexts[name]
        if request.method == "POST" and name.endswith(":addContextChildren"):
            parent = name.rsplit(":", 1)[0]
            if parent not in self.contexts:
                return 404, {"error": {"code": 404, "message": f"context {parent} not found"}}
            self.contexts[parent].setdefault("childContexts", []).extend(request.json().get("childContexts", []))
            return 200, {}
        return 404, {"error": {"code": 404, "message": f"fake metadata: {name} not found"}}

    def _storage(self, request: Request) -> tuple[int, object]:
        parts = request.path.split("/")  # ['', 'storage', 'v1', 'b', bucket, ...]
        if request.method == "POST" and request.path.rstrip("/") == "/storage/v1/b":
            bucket = request.json()["name"]
            self.buckets.add(bucket)
            return 200, {"name": bucket, "projectNumber": "1"}
        bucket = parts[4] if len(parts) > 4 else ""
        if len(parts) > 5 and parts[5] == "iam":
            return 200, request.json() if request.method == "PUT" else {"bindings": [], "etag": "CAE="}
        if request.method == "GET" and bucket in self.buckets:
            return 200, {"name": bucket, "projectNumber": "1"}
        return 404, {"error": {"code": 404, "message": f"bucket {bucket} not found"}}

    def _kfp(self, request: Request) -> tuple[int, object]:
        resource = request.path[len("/apis/v2beta1/"):]
        if resource == "healthz":
            return 200, {"multi_user": False}
        if resource == "experiments" and request.method == "GET":
            predicate = json.loads(request.query["filter"][0])["predicates"][0]
            wanted = predicate.get("stringValue", predicate.get("string_value"))
            matching = [{"experiment_id": eid, "display_name": name}
                        for name, eid in self.kfp_experiments.items() if name == wanted]
            return 200, {"experiments": matching, "total_size": len(matching)}
        if resource == "experiments" and request.method == "POST":
            experiment = request.json()
            experiment["experiment_id"] = self.kfp_experiments.setdefault(
                experiment["display_name"], f"experiment-{len(self.kfp_experiments) + 1}")
            return 200, experiment
        if resource == "runs" and request.method == "POST":
            run = request.json()
            run.update(run_id="run-1", state="PENDING")
            return 200, run
        if resource.startswith("runs/") and request.method == "GET":
            return 200, {"run_id": resource.split("/")[1], "state": self.kfp_run_state}
        return 404, {"error": f"fake KFP: no route for {request.method} {resource}"}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                request = Request(self.command, unquote(split.path), parse_qs(split.query),
                                  {name.lower(): value for name, value in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(request)
                    if any(part in request.path for part in fake.drop):
                        self.close_connection = True  # no answer: the client sees the connection end
                        return
                    status, answer = fake._answer(request)
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def do_HEAD(self) -> None:  # a reachability probe: recorded, answered without a body
                split = urlsplit(self.path)
                with fake._lock:
                    fake.requests.append(Request("HEAD", unquote(split.path), parse_qs(split.query),
                                                 {name.lower(): value for name, value in self.headers.items()}, b""))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        return Handler
