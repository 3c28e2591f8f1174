"""python -m minilrp.playground: the LRP playground, a local web app in your browser.

Pick a bundled Fashion-MNIST test image, draw one or upload a picture; choose SA or an LRP rule
or preset and turn its knobs; the prediction, the heatmap, the relevance at every layer and the
relevance ledger follow every change. One button runs the MoRF / LeRF / random region-
perturbation curves of the image. Serves on 127.0.0.1 only unless --host says otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import sys
import threading
import webbrowser
from pathlib import Path

from ..errors import MinilrpError

PROG = "python -m minilrp.playground"


def parse(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8765, help="port to serve on (0: any free port) (default: 8765)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only); another address makes "
                        "the playground reachable from the network, with no authentication")
    p.add_argument("--model", action="append", default=[], metavar="FILE.npz",
                   help="also offer this minilrp weight file (repeatable); the bundled models are always offered")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return p.parse_args(argv)


def model_files(paths) -> dict:
    """Check the weight files given on the command line (each must load and take images) ->
    {display name: path}; names are the file stems, made unique."""
    from .. import available_models, load_model
    files = {}
    for path in paths:
        if not os.path.isfile(path):
            raise MinilrpError(f"no such weight file: {path}")
        net = load_model(os.path.abspath(path))
        if len(net.input_shape) != 3 or net.input_shape[0] not in (1, 3):
            raise MinilrpError(f"{path}: the playground shows image models (1 or 3 channels, H, W); "
                               f"this one takes {net.input_shape}")
        name, k = Path(path).stem, 2
        while name in files or name in available_models():
            name, k = f"{Path(path).stem}-{k}", k + 1
        files[name] = os.path.abspath(path)
    return files


def serve(app, host, port):
    """A threaded HTTP server for ``app`` (werkzeug); ``.server_port`` is the port it got.
    The address is tried first, so that a busy port gets this command's one-line error
    (werkzeug would print its own and exit)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args):  # one line per slider move is noise; errors still print
            pass
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
            probe.bind((host, port))
        return make_server(host, port, app, threaded=True, request_handler=Quiet)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise MinilrpError(f"port {port} on {host} is in use: choose another with --port (0: any free)") from None
        raise MinilrpError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


@contextlib.contextmanager
def serving(app, host="127.0.0.1", port=0):
    """Serve ``app`` from a background thread for the duration of a ``with`` block (tests,
    benchmarks, screenshots); yields the URL."""
    server = serve(app, host, port)
    thread = threading.Thread(target=server.serve_forever, name="playground-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv=None) -> int:
    args = parse(argv)
    try:
        try:
            from .app import LOOPBACK, create_app
        except ModuleNotFoundError as e:
            if e.name not in ("flask", "werkzeug"):
                raise
            raise MinilrpError("the playground needs Flask: pip install 'minilrp[playground]'") from None
        if not 0 <= args.port <= 65535:
            raise MinilrpError(f"--port {args.port} is not a port number (0..65535)")
        files = model_files(args.model)
        local = args.host in LOOPBACK
        app = create_app(files, trusted_hosts=LOOPBACK if local else None)
        server = serve(app, args.host, args.port)
        state = app.extensions["playground"]
        state.warm_up("fmnist-cnn" if "fmnist-cnn" in state.sources else next(iter(state.sources)))
    except MinilrpError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if shown == '0.0.0.0' else shown}:{server.server_port}/"
    print(f"minilrp playground on {url}  (Ctrl+C stops it)", flush=True)
    if not local:
        print(f"warning: bound to {args.host}: anyone who reaches this machine can use the playground",
              file=sys.stderr)
    if not args.no_browser:
        threading.Timer(0.3, webbrowser.open, (url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["playground"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
