"""The playground's web app (Flask): one page, its own static files, a small JSON API.

    GET  /                      the page (static/index.html)
    GET  /static/<name>         one of the page's own files, by exact name (nothing else)
    GET  /api/models            bundled models and weight files given on the command line
    GET  /api/options?model=m   the methods, knobs and classes the page builds its controls from
    GET  /api/sample?model=m&index=i   a bundled Fashion-MNIST test image as pixels
    POST /api/image?model=m     a picture file (the body) -> pixels at the model's size
    POST /api/explain           settings (JSON) -> probabilities, heatmap, layers, ledger
    POST /api/curves            settings + fill -> MoRF / LeRF / random curves and AOPC

Every error is a JSON ``{"error": message}`` with a 4xx status (5xx only for a bug), and the
server keeps serving. All state lives in the app (``app.extensions["playground"]``): the
workers that own the network copies and the coalescer. Nothing is module-global.

Threads: a Network serves one thread at a time, so each (model, purpose) pair has one
:class:`Worker` thread that loads its own copy of the network and runs every job on it, one
after another: "live" for the page's explanations, "curves" for the perturbation button (so
curves run beside the heatmap, not in its queue). Requests from one page (``client``) that
queue while an earlier one runs coalesce to the latest (:class:`Coalescer`): only the newest
is computed, the others return ``{"superseded": true}`` at once.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import MinilrpError, available_models, load_model, load_samples
from ..models.images import load_image
from . import compute
from .settings import BadRequest, catalogue, client_of, encode_pixels, parse

MAX_UPLOAD = 8 << 20  # bytes: the largest request body (a picture upload)
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png"}
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class Coalescer:
    """The newest request number seen per client. A request is worth computing only while it
    is its client's newest: one that queued behind a running request and has since been
    overtaken is answered "superseded" without computing. Keeps the last ``max_clients``."""

    def __init__(self, max_clients=256):
        self._latest = OrderedDict()
        self._guard = threading.Lock()
        self.max_clients = max_clients

    def arrive(self, client, seq):
        """Record request ``seq`` of ``client`` (None: no coalescing)."""
        if client is None:
            return
        with self._guard:
            self._latest[client] = max(seq, self._latest.get(client, seq))
            self._latest.move_to_end(client)
            while len(self._latest) > self.max_clients:
                self._latest.popitem(last=False)

    def is_latest(self, client, seq) -> bool:
        with self._guard:
            return client is None or seq >= self._latest.get(client, seq)

    def latest(self, client):
        with self._guard:
            return self._latest.get(client)


class Worker:
    """One thread that owns one network copy (loaded in that thread) and runs jobs on it in
    arrival order. ``run(job)`` calls ``job(net)`` there and returns (or raises) its result.
    Workers of different models and purposes compute at the same time: networks share no
    state (test_two_threads_... holds the playground to that)."""

    def __init__(self, source, name):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"playground-{name}")
        self._net = self._pool.submit(load_model, source)

    def submit(self, job):
        """Queue ``job(net)``; -> a Future."""
        return self._pool.submit(lambda: job(self._net.result()))

    def run(self, job):
        return self.submit(job).result()

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


class Playground:
    """The server's state: the models it may load, their workers, the samples, the coalescer."""

    def __init__(self, files=None, bundled=True):
        self.sources = {name: name for name in available_models()} if bundled else {}
        self.sources.update(files or {})
        if not self.sources:
            raise MinilrpError("no model to serve")
        self.coalescer = Coalescer()
        self._workers = {}
        self._info = {}
        self._samples = None
        self._guard = threading.Lock()

    def worker(self, model, purpose="live") -> Worker:
        if model is None:
            raise BadRequest("missing field 'model'")
        if not isinstance(model, str) or model not in self.sources:
            raise BadRequest(f"unknown model {model!r}; models: {', '.join(self.sources)}")
        with self._guard:
            key = (model, purpose)
            if key not in self._workers:
                self._workers[key] = Worker(self.sources[model], f"{model}-{purpose}")
            return self._workers[key]

    def info(self, model) -> dict:
        """The model's catalogue (classes, input shape, methods), computed once."""
        if model not in self._info:
            self._info[model] = self.worker(model).run(catalogue)
        return self._info[model]

    def warm_up(self, model):
        """Queue one explanation of a blank image on the model's live worker, so that the
        page's first request does not pay for loading the compiled kernels. -> a Future."""
        def job(net):
            blank = encode_pixels(np.zeros(net.input_shape, np.uint8))
            return compute.explain(net, parse({"model": model, "pixels": blank,
                                               "method": "preset:EpsilonGammaBox"}, net))
        return self.worker(model).submit(job)

    def samples(self):
        with self._guard:
            if self._samples is None:
                self._samples = load_samples()
            return self._samples

    def close(self):
        with self._guard:
            for w in self._workers.values():
                w.close()
            self._workers.clear()


def upload_name(name) -> str:
    """The uploaded file's name as the browser gave it, reduced to a safe file name (letters,
    digits, ``._- ``; no folders), for messages and notes; "upload" when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._ -]", "_", os.path.basename(str(name).replace("\\", "/")))[-100:]
    return name.lstrip(". ") or "upload"


def _static_files():
    """The page's own files, read once: {name: (bytes, content type)}."""
    folder = resources.files("minilrp.playground") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind("."):]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def create_app(files=None, bundled=True, trusted_hosts=LOOPBACK) -> Flask:
    """The Flask app. files: {display name: weight file path} besides the bundled models
    (``bundled=False``: only those). trusted_hosts: Host header values accepted (DNS
    rebinding guard for a server on localhost); None accepts any (a server bound elsewhere)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD
    app.json.sort_keys = False  # the catalogue's order is the page's order
    if trusted_hosts is not None:
        app.config["TRUSTED_HOSTS"] = list(trusted_hosts)
    state = Playground(files, bundled)
    app.extensions["playground"] = state
    static = _static_files()

    def page_file(name):
        data, kind = static[name]
        r = Response(data, mimetype=kind)
        r.headers["Cache-Control"] = "no-cache"
        return r

    @app.after_request
    def headers(r):
        r.headers["X-Content-Type-Options"] = "nosniff"
        r.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data: blob:; "
                                                "style-src 'self'; script-src 'self'")
        return r

    @app.errorhandler(HTTPException)
    def http_error(e):
        messages = {413: f"request too large: at most {MAX_UPLOAD >> 20} MiB (a picture file of that size "
                         "is plenty for a model's input)",
                    404: f"no such page or file: {request.path}",
                    405: f"{request.method} is not allowed on {request.path}"}
        return jsonify(error=messages.get(e.code, e.description)), e.code

    @app.errorhandler(MinilrpError)
    def bad_request(e):
        return jsonify(error=str(e)), getattr(e, "status", 400)

    @app.errorhandler(Exception)
    def internal(e):  # a bug: say so, log it, keep serving
        traceback.print_exc(file=sys.stderr)
        return jsonify(error=f"internal error ({type(e).__name__}: {e})"), 500

    @app.get("/")
    def index():
        return page_file("index.html")

    @app.get("/static/<name>")
    def static_file(name):
        if name not in static:  # by exact name: no path from the request reaches the disk
            return jsonify(error=f"no such file: {name}"), 404
        return page_file(name)

    @app.get("/api/models")
    def models():
        return jsonify(models=list(state.sources), default=next(iter(state.sources)))

    @app.get("/api/options")
    def options():
        model = request.args.get("model", next(iter(state.sources)))
        info = state.info(model)
        fmnist = tuple(info["input_shape"]) == (1, 28, 28)
        return jsonify(model=model, samples=1000 if fmnist else 0, **info)

    @app.get("/api/sample")
    def sample():
        info = state.info(request.args.get("model", next(iter(state.sources))))
        images, labels, classes = state.samples()
        if tuple(info["input_shape"]) != (1,) + images.shape[1:]:
            raise BadRequest("the bundled samples are 28x28 grey Fashion-MNIST images; this model takes "
                             f"{'x'.join(map(str, info['input_shape']))}: draw or upload instead")
        try:
            index = int(request.args.get("index", ""))
        except ValueError:
            raise BadRequest("index must be a whole number") from None
        if not 0 <= index < len(images):
            raise BadRequest(f"sample index {index} out of range 0..{len(images) - 1}")
        return jsonify(pixels=encode_pixels(images[index][None]), index=index, label=int(labels[index]),
                       label_name=classes[labels[index]])

    @app.post("/api/image")
    def image():
        data = request.get_data(cache=False)
        if not data:
            raise BadRequest("empty upload: send the picture file as the request body")
        name = upload_name(request.args.get("name", ""))

        def job(net):  # minilrp's one image loader reads files: the upload becomes one, briefly
            with tempfile.TemporaryDirectory(prefix="minilrp-upload-") as folder:
                path = os.path.join(folder, name)
                with open(path, "wb") as f:
                    f.write(data)
                try:
                    return load_image(path, net)
                except MinilrpError as e:  # name the upload, not the server's folder
                    raise BadRequest(str(e).replace(folder + os.sep, "")) from None
        a, note = state.worker(request.args.get("model", next(iter(state.sources)))).run(job)
        return jsonify(pixels=encode_pixels(np.round(a * 255).astype(np.uint8)), note=note)

    def body():
        b = request.get_json(force=True, silent=True)
        if b is None:
            raise BadRequest("the request body is not valid JSON")
        if not isinstance(b, dict):
            raise BadRequest("the request must be a JSON object")
        return b

    @app.post("/api/explain")
    def explain():
        b = body()
        state.coalescer.arrive(*client_of(b))  # before queueing: overtakes older requests
        t0 = time.perf_counter()

        def job(net):
            s = parse(b, net, curves=False)
            if not state.coalescer.is_latest(s.client, s.seq):
                return {"superseded": True, "seq": s.seq}
            t1 = time.perf_counter()
            out = compute.explain(net, s)
            out.update(seq=s.seq, compute_ms=1e3 * (time.perf_counter() - t1))
            return out
        out = state.worker(b.get("model")).run(job)
        out["server_ms"] = 1e3 * (time.perf_counter() - t0)
        return jsonify(out)

    @app.post("/api/curves")
    def curves():
        b = body()
        out = state.worker(b.get("model"), "curves").run(
            lambda net: compute.curves(net, parse(b, net, curves=True)))
        return jsonify(out)

    return app
