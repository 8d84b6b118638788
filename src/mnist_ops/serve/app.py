"""The web app: `GET /` draw page, `POST /predict` JSON, `GET /healthz`, FastAPI's `/docs`.

Every request is answered from memory: the page is read once when the app is built, uploads
are read into memory (at most 1 MB) and never spooled to disk. Bad input gets a 4xx JSON
`{"detail": ...}` naming the problem; the server keeps serving.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from mnist_ops.errors import UserError
from mnist_ops.predict import NonFiniteOutputError, Predictor
from mnist_ops.preprocess import FORMATS, ImageTooLargeError, NoDigitError, NotAnImageError, open_image

MAX_BODY_BYTES = 1024 * 1024
HOW_TO_SEND = "POST the image file as the body or as a multipart file field (curl -F file=@digit.png)"
ROUTES = "this server has GET / (the draw page), POST /predict, GET /healthz and GET /docs"
# Images decoded and preprocessed at once. A 72 KB PNG can hold 4096x4096 RGBA pixels: one such upload raised the
# server's peak memory by about 600 MB, and 8 at once, unbounded, took it from 250 MB to 4.0 GB; two at a time, to
# 1.8-2.1 GB (`python benchmarks/serve_memory.py --checkpoint RUN`; the unbounded run is in commit 4456477's
# message). Two still use both cores of the machine the speeds were measured on (docs/serving.md).
DECODE_SLOTS = 2
BASE64 = re.compile(rb"[A-Za-z0-9+/=\s]{16,}")


def sent_encoded(content: bytes) -> bool:
    """Whether a body that is not an image looks like one sent as JSON, a data URL or base64 text: the 415 then says
    how to send the file itself. A file picked on the draw page that is not an image (a .txt) was told about curl
    and JSON, which it had not used (a review)."""
    start = content.lstrip()[:5]
    return start[:1] in (b"{", b"[") or start.lower() == b"data:" or bool(BASE64.fullmatch(content[:4096]))


STATUS = {NotAnImageError: 415, ImageTooLargeError: 413, NoDigitError: 422,
          NonFiniteOutputError: 422}  # any other UserError: 400


class RequestError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class InMemoryMultiPartParser(MultiPartParser):
    spool_max_size = MAX_BODY_BYTES + 1  # the whole body is at most 1 MB: a part never rolls over to a temp file


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {int(declared):,} bytes is larger than the 1 MB limit; send a "
                                "smaller picture (a JPEG of 1,600 px a side is plenty: the digit is read at 20)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, "request body is larger than the 1 MB limit; send a smaller picture (a JPEG of "
                                    "1,600 px a side is plenty: the digit is read at 20)")
        chunks.append(chunk)
    return b"".join(chunks)


async def uploaded_file(request: Request, body: bytes) -> bytes:
    """The first file of a multipart/form-data body."""
    async def stream():
        yield body

    try:
        form = await InMemoryMultiPartParser(request.headers, stream(), max_files=1, max_fields=10).parse()
    except MultiPartException as error:
        raise RequestError(400, f"malformed multipart body: {error.message.rstrip('.')}; {HOW_TO_SEND}") from None
    for _, value in form.multi_items():
        if not isinstance(value, str):
            return await value.read()
    raise RequestError(400, "the multipart form has no file; send the image as a file field (e.g. `file=@digit.png`)")


def create_app(predictor: Predictor) -> FastAPI:
    # python-multipart logs a malformed body's details to stderr as a warning; the client gets them in its 400
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    page = (files("mnist_ops.serve") / "static" / "index.html").read_text(encoding="utf-8")
    app = FastAPI(title="mnist-ops", version="1", summary=f"Handwritten digit recognition: {predictor.model_name} "
                                                          f"({predictor.backend})")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.exception_handler(HTTPException)  # starlette's own: an unknown path, a method a path does not take
    async def routing_error(request: Request, error: HTTPException) -> JSONResponse:
        path, method = request.url.path, request.method
        detail = {404: f"no page {path}; {ROUTES}",
                  405: f"{path} does not take {method}; {ROUTES}"}.get(error.status_code, error.detail)
        headers = dict(error.headers or {})
        if error.status_code == 405:  # every route of the path: starlette names only the first's (GET, not HEAD)
            headers["Allow"] = ", ".join(sorted({method for route in app.routes if getattr(route, "path", None) == path
                                                 for method in getattr(route, "methods", None) or ()}))
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers)

    @app.get("/", response_class=HTMLResponse, summary="The draw-a-digit page")
    async def index() -> str:
        return page

    @app.get("/healthz", summary="Liveness, and which model is served")
    async def healthz() -> dict:
        return {"status": "ok", "model": predictor.model_name, "backend": predictor.backend}

    # HEAD too, as for any static page: uptime monitors and `curl -I` ask with it. Its own routes, out of the API
    # description: one route of GET and HEAD gave both one operation id, which FastAPI warns of on every /docs
    app.add_api_route("/", index, methods=["HEAD"], response_class=HTMLResponse, include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    decoding = threading.BoundedSemaphore(DECODE_SLOTS)

    def predict_bytes(content: bytes) -> dict:
        try:
            with decoding:  # the others wait in the thread pool, holding at most their 1 MB body
                prediction = predictor.predict(open_image(content, "upload"), "upload")
        except UserError as error:
            status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
            raise RequestError(status, f"{error}; {HOW_TO_SEND}, not JSON or base64"
                               if status == 415 and sent_encoded(content) else str(error)) from None
        return {**prediction.to_dict(), "label": predictor.labels[prediction.digit],
                "pixels": prediction.pixels.tolist(), "model": predictor.model_name}

    image_schema = {"schema": {"type": "string", "format": "binary"}}
    upload_schema = {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                                "required": ["file"]}}
    request_body = {"required": True, "description": f"an image ({', '.join(FORMATS)}), at most 1 MB, as the raw "
                                                     "body or as a multipart file",
                    "content": {"multipart/form-data": upload_schema, "image/png": image_schema,
                                "image/jpeg": image_schema, "application/octet-stream": image_schema}}
    errors = {code: {"description": text} for code, text in (
        (400, "empty body or malformed upload"), (413, "body over 1 MB or image over 16.7 megapixels"),
        (415, "not an image"), (422, "no digit found (blank image), or no finite answer from the model"))}

    @app.post("/predict", summary="The digit in an image", openapi_extra={"requestBody": request_body},
              responses=errors)
    async def predict(request: Request) -> JSONResponse:
        """Returns the digit, its probability, the top 3, all probabilities and the 28x28 image the model saw."""
        body = await read_body(request)
        what = "request body"
        # media types are case-insensitive (RFC 9110): Multipart/Form-Data is a form too
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "multipart/form-data":
            body, what = await uploaded_file(request, body), "uploaded file"
        if not body:
            raise RequestError(400, f"empty {what}: send an image ({', '.join(FORMATS)}) as the body "
                                    "or as a multipart file")
        return JSONResponse(await run_in_threadpool(predict_bytes, body))  # plain JSON: skips FastAPI's encoder

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one. Its protocol is set to TCP explicitly: asyncio
    turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say so, and without it every
    keep-alive response waits for the client's delayed ACK (tens of milliseconds)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number (0-65535)")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                proto=socket.IPPROTO_TCP)[0]
        sock = socket.socket(family, kind, protocol)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error}); pick another --port "
                        "or --host") from None


def run(predictor: Predictor, sock: socket.socket) -> None:
    """Serve on `sock` (from `listen`) until Ctrl+C. Prints the URL (with the real port when port was 0)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {predictor.model_name} ({predictor.backend}) on http://{shown}:{port}/ "
          "(API docs at /docs; Ctrl+C stops)", flush=True)
    config = uvicorn.Config(create_app(predictor), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
