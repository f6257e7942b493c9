"""``deepface serve``: the verification server, under Vertex AI's custom-container contract.

What Vertex AI asks of a custom serving container, and how this server answers:

- listen on ``AIP_HTTP_PORT`` (default 8080; the ``port`` setting overrides it, 0 takes a free port);
- ``GET AIP_HEALTH_ROUTE`` (default ``/health``): 503 ``{"status": "loading"}`` until the model is loaded,
  then 200 ``{"status": "ready", ...}``; the model loads in the background, so the port answers at once;
- ``POST AIP_PREDICT_ROUTE`` (default ``/predict``): ``{"instances": [...]}`` in, ``{"predictions": [...]}``
  out, one prediction per instance (`deepface.serving.instances`): ``{"image": B64}`` ->
  ``{"embedding": [D floats]}``; ``{"image_a": B64, "image_b": B64}`` -> ``{"score", "value", "threshold",
  "same"}`` with the evaluation's threshold;
- the model comes from ``AIP_STORAGE_URI`` (``gs://`` read through tf.io.gfile, or a local directory): a
  serving export (`deepface.serving.export`), or, for local use, a model directory of ``deepface train``
  (exported to a temporary directory at start, with ``evaluation_dir``'s threshold).

Faces are cut by `deepface.faces.FaceCropper` (detector and alignment of the Python API and the evaluation),
in a pool of threads (one cropper each, one per CPU); the crops of concurrent requests go through the model
together (`deepface.serving.batcher.MicroBatcher`: up to ``max_batch_size`` images, waiting at most
``max_wait_ms`` for requests still cutting their faces; a lone request does not wait), and all the images of
one request always share one forward pass.

Errors are JSON ``{"error": "..."}``, one line naming the instance and the fix: 400 (not JSON, a wrong field,
bad base64, too many instances, an undecodable image, no threshold to verify with), 413 (a body over
``max_request_bytes``, by default Vertex AI's 1.5 MB, or an image over ``max_image_bytes``), 422 (no face
found), 503 (still loading). The server goes on serving after any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from deepface.errors import DeepFaceError
from deepface.faces import BadImage, NoFace, user_error
from deepface.serving.instances import Instance, RequestError, parse_request
from deepface.settings import ServeSettings

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"
MAX_DRAINED_BYTES = 64 << 20  # an oversized body is read (and dropped) up to this, so the client gets its 413
NO_FACE_HINT = "start the server with --no-face center-crop"


@dataclasses.dataclass(frozen=True)
class Contract:
    """Where the server listens and what it serves, from Vertex AI's ``AIP_*`` variables and the settings."""

    host: str
    port: int
    health_route: str
    predict_route: str
    model_uri: str

    @classmethod
    def resolve(cls, settings: ServeSettings, model_uri: str | None, env: Mapping[str, str]) -> Contract:
        """``model_uri`` or ``AIP_STORAGE_URI``; the port from the settings, ``AIP_HTTP_PORT`` or 8080.

        Raises:
            DeepFaceError: no model (neither given nor in ``AIP_STORAGE_URI``), or a port that is not a number.
        """
        uri = model_uri or env.get("AIP_STORAGE_URI", "")
        if not uri:
            raise DeepFaceError("no model: pass --model (a serving export or a model directory), or set "
                                "AIP_STORAGE_URI as Vertex AI does.")
        port = settings.port
        if port is None:
            text = env.get("AIP_HTTP_PORT", "") or str(DEFAULT_PORT)
            if not text.isdigit() or int(text) > 65535:
                raise DeepFaceError(f"AIP_HTTP_PORT={text!r} is not a port number (0-65535).")
            port = int(text)
        return cls(settings.host, port, env.get("AIP_HEALTH_ROUTE") or DEFAULT_HEALTH_ROUTE,
                   env.get("AIP_PREDICT_ROUTE") or DEFAULT_PREDICT_ROUTE, uri)


def load_serving_model(uri: str, evaluation_dir: str | os.PathLike | None, scratch: str):
    """The `deepface.serving.model.ServingModel` of ``uri``: a serving export, or a local model directory of
    ``deepface train`` exported into ``scratch`` first (with ``evaluation_dir``'s threshold.json).

    Raises:
        DeepFaceError: ``uri`` is neither; see `ServingModel.load` and `export_saved_model`.
    """
    from deepface import files
    from deepface.serving.export import SERVING_FILE, export_saved_model
    from deepface.serving.model import ServingModel

    local = None if files.is_remote(uri) else files.local_path(uri)
    if local is not None and not (local / SERVING_FILE).exists() and (local / "embedding.keras").exists():
        logger.info("%s is a model directory: exporting it for serving first", uri)
        export_saved_model(local, scratch, threshold_json=evaluation_dir)
        uri = scratch
    elif evaluation_dir is not None:
        raise DeepFaceError("evaluation_dir is for a model directory of `deepface train`; a serving export "
                            "already holds its threshold.")
    return ServingModel.load(uri)


class Service:
    """The server's state and its two routes; ``load`` is called once, on a background thread."""

    def __init__(self, settings: ServeSettings, load: Callable[[], object]):
        self.settings = settings
        self._load = load
        self.model = None
        self.batcher = None
        self.error: str | None = None
        self.on_failure: Callable[[], None] = lambda: None
        self._local = threading.local()
        self._limiter = None

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start loading the model in the background (the health route says when it is done)."""
        import anyio

        from deepface.parallel import available_cpus

        self._limiter = anyio.CapacityLimiter(available_cpus())
        threading.Thread(target=self._load_model, name="model-loader", daemon=True).start()

    def _load_model(self) -> None:
        from deepface.serving.batcher import MicroBatcher

        try:
            model = self._load()
        except Exception as error:  # noqa: BLE001 - reported on the health route and in the log, then exit
            self.error = str(error) if isinstance(error, DeepFaceError) else f"{type(error).__name__}: {error}"
            logger.error("cannot load the model: %s", self.error)
            self.on_failure()
            return
        self.batcher = MicroBatcher(model.embed_crops, max_batch_size=self.settings.max_batch_size,
                                    max_wait_s=self.settings.max_wait_ms / 1000)
        self.model = model
        logger.info("ready: serving %s", model.uri)

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    # ---------------------------------------------------------------------------------------- routes

    async def health(self, request):
        from starlette.responses import JSONResponse

        if self.model is None:
            status = "failed" if self.error else "loading"
            return JSONResponse({"status": status, **({"error": self.error} if self.error else {})}, 503)
        model = self.model
        return JSONResponse({"status": "ready", "image_size": model.image_size, "embedding_size": model.embedding_size,
                             "align": self.settings.align if self.settings.align is not None else model.align,
                             "flip": model.flip, "score": model.score, "threshold": model.threshold,
                             "passes": self.batcher.passes, "images": self.batcher.inputs})

    async def predict(self, request):
        from starlette.responses import JSONResponse

        started = time.perf_counter()
        try:
            if self.model is None:
                raise RequestError(503, "the model is still loading: retry once the health route answers 200.")
            body = await _read_body(request, self.settings.max_request_bytes)
            instances = parse_request(body, max_instances=self.settings.max_instances,
                                      max_image_bytes=self.settings.max_image_bytes)
            if self.model.threshold is None and any(instance.kind == "verify" for instance in instances):
                raise RequestError(400, "this model was exported without a threshold, so pairs cannot be verified: "
                                        "export it with the threshold.json of `deepface evaluate`.")
            import anyio

            self.batcher.announce()  # a pass being gathered waits for these crops
            try:
                crops = await anyio.to_thread.run_sync(self._crops, instances, limiter=self._limiter)
            except BaseException:
                self.batcher.withdraw()
                raise
            rows = await asyncio.wrap_future(self.batcher.submit(crops, announced=True))
            predictions = self._predictions(instances, rows)
        except RequestError as error:
            logger.info("refused a request (%d): %s", error.status, error.message)
            return JSONResponse({"error": error.message}, error.status)
        except Exception as error:  # noqa: BLE001 - a bug: logged with its traceback, the server goes on
            logger.exception("prediction failed")
            return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, 500)
        logger.debug("%d instances in %.1f ms", len(instances), 1000 * (time.perf_counter() - started))
        return JSONResponse({"predictions": predictions})

    # --------------------------------------------------------------------------------------- helpers

    def _cropper(self):
        """This thread's face cropper (the detector is not thread-safe)."""
        if getattr(self._local, "cropper", None) is None:
            self._local.cropper = self.model.cropper(align=self.settings.align, no_face=self.settings.no_face)
        return self._local.cropper

    def _crops(self, instances: list[Instance]) -> np.ndarray:
        """uint8 ``[images, S, S, 3]``: every image of the request, in order, cut as the Python API cuts it."""
        cropper = self._cropper()
        crops = []
        for instance in instances:
            for name, data in instance.images:
                try:
                    crops.append(cropper(name, data)[0])
                except BadImage as error:
                    raise RequestError(422 if isinstance(error, NoFace) else 400,
                                       str(user_error(name, error, NO_FACE_HINT))) from None
        return np.stack(crops)

    def _predictions(self, instances: list[Instance], rows: np.ndarray) -> list[dict]:
        predictions, row = [], 0
        for instance in instances:
            if instance.kind == "embed":
                predictions.append({"embedding": rows[row].astype(np.float32).tolist()})
                row += 1
            else:
                predictions.append(self.model.decide(rows[row], rows[row + 1]))
                row += 2
        return predictions


async def _read_body(request, limit: int) -> bytes:
    """The request body, or `RequestError` 413 when it is larger than ``limit`` (read and dropped up to
    `MAX_DRAINED_BYTES`, so that the client reads the answer instead of a reset connection)."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    if not too_large or int(declared) <= MAX_DRAINED_BYTES:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                too_large = True
                chunks.clear()
                if size > MAX_DRAINED_BYTES:
                    break
            elif not too_large:
                chunks.append(chunk)
    if too_large:
        shown = f"{declared} bytes" if declared.isdigit() else f"over {limit} bytes"
        raise RequestError(413, f"the request is too large: {shown}, at most {limit} (max_request_bytes; Vertex AI "
                                "refuses more than 1.5 MB): send fewer or smaller images per request.")
    return b"".join(chunks)


def build_app(service: Service, contract: Contract):
    """The starlette application: the health and predict routes of ``contract``, loading at start-up."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    return Starlette(routes=[Route(contract.health_route, service.health, methods=["GET"]),
                             Route(contract.predict_route, service.predict, methods=["POST"])], lifespan=lifespan)


def serve(model_uri: str | None = None, *, evaluation_dir: str | os.PathLike | None = None,
          env: Mapping[str, str] | None = None, **settings) -> None:
    """Run the verification server until SIGTERM or SIGINT (see the module docstring).

    Args:
        model_uri: a serving export (local or ``gs://``) or a local model directory of ``deepface train``;
            None: ``AIP_STORAGE_URI``.
        evaluation_dir: with a model directory, the ``deepface evaluate`` output whose threshold to use.
        env: the environment to read ``AIP_*`` from (default ``os.environ``).
        settings: `deepface.settings.ServeSettings` fields.

    Raises:
        SettingError: a setting out of range (before anything starts).
        DeepFaceError: no model; the model cannot be loaded (after the port was opened: the health route
            says so until the server stops).

    Example::

        serve("gs://bucket/models/deepface/serving")  # listens on $AIP_HTTP_PORT or 8080
    """
    import uvicorn

    chosen = ServeSettings.of(settings)
    contract = Contract.resolve(chosen, model_uri, os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="deepface-serve-") as scratch:
        service = Service(chosen, lambda: load_serving_model(contract.model_uri, evaluation_dir, scratch))
        server = uvicorn.Server(uvicorn.Config(build_app(service, contract), log_config=None, access_log=False,
                                               timeout_graceful_shutdown=30))
        service.on_failure = lambda: setattr(server, "should_exit", True)
        listener = _listen(contract.host, contract.port)
        host, port = listener.getsockname()[:2]
        logger.info("listening on http://%s:%d (health %s, predict %s), loading %s", host, port,
                    contract.health_route, contract.predict_route, contract.model_uri)
        server.run(sockets=[listener])
    if service.error:
        raise DeepFaceError(f"cannot serve {contract.model_uri}: {service.error}")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn; port 0 takes a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as error:
        listener.close()
        raise DeepFaceError(f"cannot listen on {host}:{port} ({error.strerror}): choose another --port.") from None
    return listener
