"""The playground: its API against the library (net.relevance, sensitivity, perturbation curves
computed here independently), its refusals (4xx with a message, and it keeps serving), path
traversal, coalescing, the command line, and the page end to end in a real headless Chromium
(skipped where none is installed)."""
import base64
import http.client
import io
import json
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("flask")

import minilrp  # noqa: E402
from minilrp import (AlphaBeta, Composite, Conv2d, Dense, Epsilon, Gamma, Proportional,  # noqa: E402
                     WinnerTakeAll, ZBox, get_composite, perturbation, render, sensitivity)
from minilrp.models.images import load_image  # noqa: E402
from minilrp.playground.app import create_app  # noqa: E402
from minilrp.playground.browser import chromium, find_chromium, wait_for  # noqa: E402
from minilrp.playground.cli import serving  # noqa: E402
from minilrp.playground.settings import METHODS  # noqa: E402


@pytest.fixture(scope="module")
def app():
    app = create_app()
    yield app
    app.extensions["playground"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def net():
    return minilrp.load_model("fmnist-cnn")  # the test's own copy, not the server's


@pytest.fixture(scope="module")
def samples():
    return minilrp.load_samples()


def b64(pixels):
    return base64.b64encode(np.ascontiguousarray(pixels, np.uint8).tobytes()).decode()


def floats(f):
    return np.frombuffer(base64.b64decode(f["data"]), "<f4").reshape(f["shape"])


def png(uri):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def request(samples, index=0, **fields):
    return {"model": "fmnist-cnn", "pixels": b64(samples[0][index][None]), **fields}


# ---------------------------------------------------------------------------- the catalogue
def test_options_offer_every_preset_rule_and_sa_variant(client):
    o = client.get("/api/options?model=fmnist-cnn").get_json()
    ids = {m["id"] for m in o["methods"]}
    for name in minilrp.PRESETS:
        assert f"preset:{name}" in ids or f"rule:{name}" in ids, name
    for name in sensitivity.METHODS:
        assert f"sa:{name}" in ids
    assert {"rule:Flat", "rule:ZPlus", "rule:AlphaBeta"} <= ids
    knobs = {m["id"]: [p["name"] for p in m["params"]] for m in o["methods"]}
    assert knobs["preset:EpsilonGammaBox"] == ["epsilon", "gamma", "low", "high"]
    assert knobs["rule:AlphaBeta"] == ["alpha", "epsilon", "bias"]  # beta = alpha - 1
    assert knobs["sa:smoothgrad"] == ["n_samples", "noise", "seed", "squared"]
    assert o["classes"][9] == "Ankle boot" and o["input_shape"] == [1, 28, 28] and o["samples"] == 1000
    assert o["maxpool"] == ["split", "first", "proportional"]
    assert client.get("/api/options?model=fmnist-mlp").get_json()["maxpool"] == []  # no max pool


def test_sample(client, samples):
    s = client.get("/api/sample?model=fmnist-cnn&index=17").get_json()
    assert np.array_equal(np.frombuffer(base64.b64decode(s["pixels"]), np.uint8), samples[0][17].ravel())
    assert s["label"] == samples[1][17] and s["label_name"] == samples[2][samples[1][17]]


# ---------------------------------------------------------------------------- explanations
IMAGE = 3  # a trouser


def expected_lrp(net, x, method, params, pixel_rule="same", maxpool="split", target=None):
    """The same explanation built here from the public API (not through the playground)."""
    pool = {"split": WinnerTakeAll(), "first": WinnerTakeAll(ties="first"), "proportional": Proportional()}[maxpool]
    kind, name = method.split(":")
    if kind == "rule":
        p = {k: v for k, v in params.items() if k not in ("low", "high")}
        if name == "AlphaBeta":
            rule = AlphaBeta(p.pop("alpha"), params["alpha"] - 1, **p)
        else:
            rule = {"Gamma": Gamma, "Epsilon": Epsilon}[name](**p)
        first = None if pixel_rule == "same" else ((Conv2d, Dense), ZBox(params.get("low"), params.get("high")))
        comp = Composite("expected", default=rule, first=first, maxpool=pool)
    else:
        comp = get_composite(name, **params)
        comp.maxpool = pool
    R = net.relevance(x, comp, target=target, keep=True)
    return R, net.ledger


@pytest.mark.parametrize("method,params,extra", [
    ("preset:EpsilonGammaBox", {}, {}),
    ("preset:EpsilonGammaBox", {"gamma": 1.5, "epsilon": 0.01}, {"maxpool": "first"}),
    ("rule:Gamma", {"gamma": 0.5}, {"pixel_rule": "zbox", "maxpool": "proportional"}),
    ("rule:Gamma", {"gamma": 0.5, "low": -0.5, "high": 2.0}, {"pixel_rule": "zbox"}),
    ("rule:AlphaBeta", {"alpha": 3.0}, {"target": 0}),
    ("rule:Epsilon", {"epsilon": 0.3, "bias": False, "relative": True}, {}),
    ("preset:Montavon", {"gamma": 0.1}, {"target": 8}),
    ("preset:EpsilonAlpha2Beta1Flat", {}, {}),
])
def test_lrp_explanation_matches_net_relevance(client, net, samples, method, params, extra):
    r = client.post("/api/explain", json=request(samples, IMAGE, method=method, params=params, **extra))
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    x = net.preprocess(samples[0][IMAGE][None])
    probs, pred = net.predict(x)
    np.testing.assert_allclose(out["probabilities"], probs[0], rtol=1e-5, atol=1e-7)
    assert out["predicted"] == pred[0] == samples[1][IMAGE]
    assert out["target"] == extra.get("target", pred[0])
    R, ledger = expected_lrp(net, x, method, params, extra.get("pixel_rule", "same"),
                             extra.get("maxpool", "split"), extra.get("target"))
    values = floats(out["heatmap"]["values"])
    np.testing.assert_allclose(values, R[0, 0], rtol=1e-5, atol=1e-6 * np.abs(R).max())
    assert out["heatmap"]["scale"] == pytest.approx(np.abs(R).max(), rel=1e-5)
    # the pictures are minilrp.render's colours of those numbers
    assert np.abs(png(out["heatmap"]["png"]).astype(int) - np.round(render.signed_rgb(R)[0] * 255)).max() <= 1
    assert png(out["heatmap"]["overlay"]).shape == (28, 28, 3)
    # the ledger is the library's, row by row
    rows = ledger.to_dict(example=0)
    assert [r["layer"] for r in out["ledger"]] == [r["layer"] for r in rows]
    for got, want in zip(out["ledger"], rows):
        assert got["rule"] == want["rule"]
        for key in ("entering", "leaving", "bias", "stabiliser", "dropped"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (got["layer"], key)
    # one small multiple per layer with a rule, its sum the relevance leaving that layer
    ruled = [r for r in rows if r["rule"] != "pass"]
    assert [m["index"] for m in out["layers"]] == sorted(r["index"] for r in ruled)
    for m in out["layers"]:
        want = next(r for r in rows if r["index"] == m["index"])
        assert m["sum"] == pytest.approx(want["leaving"], rel=1e-4, abs=1e-5)
    assert out["layers"][-1]["shape"] == [128] and out["layers"][-2]["shape"] == [64, 7, 7]


@pytest.mark.parametrize("name,params", [
    ("sa", {}), ("gradient", {}), ("abs_gradient", {}), ("gradient_x_input", {}),
    ("smoothgrad", {"n_samples": 4, "noise": 0.2, "seed": 3, "squared": True}),
    ("integrated_gradients", {"steps": 8}),
])
def test_sa_explanation_matches_sensitivity(client, net, samples, name, params):
    out = client.post("/api/explain", json=request(samples, IMAGE, method=f"sa:{name}", params=params)).get_json()
    x = net.preprocess(samples[0][IMAGE][None])
    S = sensitivity.METHODS[name](net, x, **params)
    signed = name not in ("sa", "abs_gradient") and not params.get("squared")
    assert out["signed"] is signed and "ledger" not in out and "layers" not in out
    m = render.reduce_channels(S, "sum" if signed else "norm")
    np.testing.assert_allclose(floats(out["heatmap"]["values"]), m[0], rtol=1e-5, atol=1e-6 * np.abs(m).max())
    colours = render.signed_rgb(m) if signed else render.unsigned_rgb(m)
    assert np.abs(png(out["heatmap"]["png"]).astype(int) - np.round(colours[0] * 255)).max() <= 1


@pytest.mark.slow
def test_every_method_of_the_catalogue_runs_on_every_bundled_model(client, samples):
    for model in minilrp.available_models():
        for method in METHODS:
            body = request(samples, 0, method=method, model=model)
            if method.startswith("sa:") and METHODS[method]["params"]:  # keep the costly ones short
                body["params"] = {"n_samples": 2} if "smoothgrad" in method else {"steps": 2}
            r = client.post("/api/explain", json=body)
            assert r.status_code == 200, (model, method, r.get_json())
            assert np.isfinite(floats(r.get_json()["heatmap"]["values"])).all()


def test_gamma_zero_is_lrp_epsilon_and_large_gamma_approaches_z_plus(client, samples):
    """The claims of docs/playground.md's lesson, through the playground itself."""
    def values(method, **params):
        out = client.post("/api/explain", json=request(samples, IMAGE, method=method, params=params)).get_json()
        return floats(out["heatmap"]["values"])
    eps, zplus = values("rule:Epsilon"), values("rule:ZPlus")
    # float32: the gamma path sums in another order (and recovers Q = z - b - P)
    np.testing.assert_allclose(values("rule:Gamma", gamma=0.0), eps, rtol=1e-4, atol=1e-5 * np.abs(eps).max())
    gaps = [np.abs(values("rule:Gamma", gamma=g) - zplus).max() / np.abs(zplus).max() for g in (0.25, 1, 100)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01
    negative = [-np.minimum(values("rule:Gamma", gamma=g), 0).sum() for g in (0.0, 0.25, 4.0)]
    assert negative[0] > negative[1] > negative[2] >= 0


def test_the_gamma_lesson_says_what_the_page_shows(client, samples):
    """docs/playground.md, steps 1-4, on sample 0 (an ankle boot) through the playground."""
    def heat(gamma, target=None):
        body = request(samples, 0, method="rule:Gamma", params={"gamma": gamma}, target=target)
        out = client.post("/api/explain", json=body).get_json()
        return out, floats(out["heatmap"]["values"])
    out, boot0 = heat(0.0)
    h, logit = out["heatmap"], out["ledger"][0]["entering"]
    assert out["predicted"] == 9 and logit == pytest.approx(14.3, abs=0.05)
    assert (h["sum"], h["positive"], h["negative"]) == pytest.approx((8.3, 23.7, -15.4), abs=0.05)
    assert h["positive"] + h["negative"] == pytest.approx(h["sum"], rel=1e-4)
    out, boot1 = heat(1.0)
    assert out["heatmap"]["sum"] == pytest.approx(10.1, abs=0.05)
    bias = [sum(r["bias"] for r in heat(g)[0]["ledger"]) for g in (0.0, 1.0)]
    assert bias[0] > bias[1] > 0
    out, _ = heat(0.0)
    second = int(np.argsort(out["probabilities"])[-2])
    assert second == 7  # Sneaker, the runner-up
    corr = [np.corrcoef(heat(g)[1].ravel(), heat(g, second)[1].ravel())[0, 1] for g in (0.0, 1.0, 4.0)]
    assert abs(corr[0]) < 0.2 and corr[1] > 0.7 and corr[2] > 0.9
    assert -np.minimum(heat(0.25, second)[1], 0).sum() > 0.05 * np.abs(heat(0.25, second)[1]).sum()


@pytest.mark.slow
def test_the_gamma_lessons_table_comes_from_its_code():
    """The lesson's table is what its code block prints (float64, the first 16 test images)."""
    from pathlib import Path
    doc = (Path(__file__).parents[1] / "docs" / "playground.md").read_text()
    code, table = re.search(r"<!-- gamma-lesson.*?```python\n(.*?)```\s*```text\n(.*?)```", doc, re.S).groups()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == table.strip()


def test_perturbation_curves_match_the_library(client, net, samples):
    body = request(samples, IMAGE, method="rule:Gamma", params={"gamma": 0.5}, perturbation="constant:background")
    out = client.post("/api/curves", json=body).get_json()
    x = net.preprocess(samples[0][IMAGE][None])
    R = net.relevance(x, Composite("g", default=Gamma(0.5)))
    for ordering in ("morf", "lerf", "random"):
        want = perturbation.heatmap_curves(net, x, R, ordering, "constant:background", seed=0)
        np.testing.assert_allclose(out["curves"][ordering], want[0], rtol=1e-5, atol=1e-5)
        assert out["aopc"][ordering] == pytest.approx(perturbation.aopc(want)[0], rel=1e-5, abs=1e-6)
        assert len(out["curves"][ordering]) == 49 + 1
    assert out["aopc"]["morf"] > out["aopc"]["random"] > out["aopc"]["lerf"]
    assert png(out["png"]).shape[0] > 200  # the plot


def test_a_colour_model_from_a_weight_file(tmp_path, rng):
    """A user's RGB model (not 28x28): no samples, pixels C x H x W, uploads in colour, and
    the explanation is the library's."""
    from minilrp import Flatten, MaxPool2d, Network, ReLU
    layers = [Conv2d(3, 4, 3, padding=1, weight=rng.normal(size=(4, 3, 3, 3)), bias=rng.normal(size=4) * 0.1),
              ReLU(), MaxPool2d(2), Flatten(), Dense(4 * 6 * 5, 3, weight=rng.normal(size=(3, 120)) * 0.2,
                                                      bias=np.zeros(3))]
    mine = Network(layers, (3, 12, 10), classes=["red", "green", "blue"], name="rgb", mean=[0.5] * 3, std=[0.25] * 3)
    path = tmp_path / "rgb.npz"
    minilrp.save(path, mine)
    net = minilrp.load_model(str(path))
    app = create_app({"rgb": str(path)}, bundled=False)
    try:
        c = app.test_client()
        o = c.get("/api/options?model=rgb").get_json()
        assert o["samples"] == 0 and o["input_shape"] == [3, 12, 10] and o["classes"] == ["red", "green", "blue"]
        r = c.get("/api/sample?model=rgb&index=0")
        assert r.status_code == 400 and "draw or upload instead" in r.get_json()["error"]
        photo = np.zeros((24, 20, 3), np.uint8)
        photo[..., 0] = 200  # a red picture stays red: no inversion for colour models
        up = c.post("/api/image?model=rgb", data=picture_bytes(photo)).get_json()
        pixels = np.frombuffer(base64.b64decode(up["pixels"]), np.uint8).reshape(3, 12, 10)
        assert (pixels[0] == 200).all() and (pixels[1:] == 0).all()
        out = c.post("/api/explain", json={"model": "rgb", "pixels": up["pixels"], "method": "rule:Gamma",
                                           "params": {"gamma": 0.5}, "pixel_rule": "zbox"}).get_json()
        x = net.preprocess(pixels[None])
        R = net.relevance(x, Composite("g", default=Gamma(0.5), first=((Conv2d, Dense), ZBox())))
        np.testing.assert_allclose(floats(out["heatmap"]["values"]), R[0].sum(axis=0), rtol=1e-4,
                                   atol=1e-5 * np.abs(R).max())
        assert c.get("/api/options?model=fmnist-cnn").status_code == 400  # only the file was offered
    finally:
        app.extensions["playground"].close()


# ---------------------------------------------------------------------------- refusals
BAD = [
    ({"pixels": "AAAA"}, "pixels: 3 bytes, but the model takes 1x28x28 = 784"),
    ({"pixels": "not base64!"}, "pixels must be base64"),
    ({"model": "fmnist-xl"}, "unknown model 'fmnist-xl'"),
    ({"method": "rule:Sharpen"}, "unknown method 'rule:Sharpen'"),
    ({"method": "rule:Gamma", "params": {"gama": 1}}, "has no parameter 'gama'"),
    ({"method": "rule:Gamma", "params": {"gamma": -1}}, "gamma = -1 is out of range"),
    ({"method": "rule:Gamma", "params": {"gamma": None}}, "gamma must be a finite number"),
    ({"method": "rule:Gamma", "params": {"gamma": "0.5"}}, "gamma must be a finite number"),
    ({"method": "rule:Gamma", "params": {"gamma": True}}, "gamma must be a finite number"),
    ({"method": "rule:Epsilon", "params": {"bias": 1}}, "bias must be true or false"),
    ({"method": "rule:AlphaBeta", "params": {"alpha": 0.5}}, "alpha = 0.5 is out of range: 1 <= alpha"),
    ({"method": "sa:smoothgrad", "params": {"n_samples": 100000}}, "n_samples = 100000 is out of range"),
    ({"method": "sa:integrated_gradients", "params": {"steps": 2.5}}, "steps must be a whole number"),
    ({"method": "rule:Gamma", "pixel_rule": "zbox", "params": {"low": 0.5}}, "z^B bounds do not contain the input"),
    ({"method": "rule:Gamma", "pixel_rule": "sharp"}, "unknown pixel_rule 'sharp'"),
    ({"method": "preset:EpsilonPlus", "pixel_rule": "zbox"}, "pixel_rule applies to the single rules"),
    ({"maxpool": "largest"}, "unknown maxpool 'largest'"),
    ({"target": 10}, "target class 10 out of range"),
    ({"target": "Bag"}, "target must be a class index or null"),
    ({"seq": -1, "client": "a"}, "seq must be a non-negative integer"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"method": None}, "field 'method' must be a string"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_bad_settings_get_400_with_a_clear_message(client, samples, change, message):
    body = {**request(samples, IMAGE, method="preset:EpsilonGammaBox"), **change}
    r = client.post("/api/explain", json=body)
    assert r.status_code == 400 and message in r.get_json()["error"], r.get_json()


def test_malformed_requests_and_the_server_keeps_serving(client, samples):
    r = client.post("/api/explain", data=b"{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.get_json()["error"]
    r = client.post("/api/explain", json=[1, 2])
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    r = client.post("/api/explain", json={"model": "fmnist-cnn", "method": "sa:sa"})
    assert r.status_code == 400 and "missing field 'pixels'" in r.get_json()["error"]
    r = client.post("/api/curves", json=request(samples, method="sa:sa", perturbation="smudge"))
    assert r.status_code == 400 and "unknown perturbation 'smudge'" in r.get_json()["error"]
    r = client.get("/api/explain")
    assert r.status_code == 405 and "GET is not allowed" in r.get_json()["error"]
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.get_json()["error"]
    for query, message in (("index=1000", "out of range 0..999"), ("index=x", "whole number"),
                           ("index=-1", "out of range")):
        r = client.get(f"/api/sample?model=fmnist-cnn&{query}")
        assert r.status_code == 400 and message in r.get_json()["error"]
    r = client.post("/api/explain", json=request(samples, method="sa:sa"))
    assert r.status_code == 200 and r.get_json()["probabilities"]


def picture_bytes(array, fmt="PNG"):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def test_upload_converts_like_the_demo_and_refuses_bad_files(client, net, tmp_path):
    img = np.full((60, 40, 3), 250, np.uint8)
    img[10:50, 8:30] = 30  # a dark garment on white paper
    data = picture_bytes(img)
    r = client.post("/api/image?model=fmnist-cnn&name=shirt.png", data=data)
    out = r.get_json()
    (tmp_path / "shirt.png").write_bytes(data)
    want, note = load_image(str(tmp_path / "shirt.png"), net)  # minilrp's one image loader
    got = np.frombuffer(base64.b64decode(out["pixels"]), np.uint8).reshape(1, 28, 28)
    assert np.array_equal(got, np.round(want * 255).astype(np.uint8))
    assert out["note"] == note and "inverted" in note and "40x60" in note
    r = client.post("/api/image?model=fmnist-cnn&name=../../etc/broken.png", data=b"\x89PNG\r\n\x1a\n garbage")
    message = r.get_json()["error"]
    assert r.status_code == 400 and message.startswith("cannot read broken.png as an image")
    assert "/tmp" not in message and "minilrp-upload" not in message  # the server's folders stay private
    r = client.post("/api/image?model=fmnist-cnn", data=b"")
    assert r.status_code == 400 and "empty upload" in r.get_json()["error"]
    r = client.post("/api/image?model=fmnist-cnn", data=b"\0" * (9 << 20))
    assert r.status_code == 413 and "request too large" in r.get_json()["error"]
    from PIL import Image
    buf = io.BytesIO()
    Image.new("1", (10000, 6000)).save(buf, format="PNG")  # 60 Mpx in a few kB: a decompression bomb
    assert len(buf.getvalue()) < 100_000
    r = client.post("/api/image?model=fmnist-cnn", data=buf.getvalue())
    assert r.status_code == 400 and "10000x6000 = 60,000,000 pixels is more than the limit" in r.get_json()["error"]
    assert client.get("/api/sample?model=fmnist-cnn&index=0").status_code == 200


def raw_get(port, path, host=None):
    """A GET with the path sent byte for byte (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


TRAVERSALS = ["/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/%2e%2e/pyproject.toml",
              "/static/..%2f..%2f__init__.py", "/static/%2e%2e%2fsettings.py", "/../../../../etc/passwd",
              "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/app.py", "/static/__init__.py",
              "/static/playground.js/../../cli.py", "/static/.%2e/cli.py", "/static/..\\app.py",
              "/static/playground.js%00.py", "/app.py", "/minilrp/playground/app.py"]


def test_serves_nothing_outside_its_own_files(app):
    with serving(app) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        status, body = raw_get(port, "/")
        assert status == 200 and b"minilrp playground" in body
        status, body = raw_get(port, "/static/playground.js")
        assert status == 200 and b"window.playground" in body
        for path in TRAVERSALS:
            status, body = raw_get(port, path)
            assert status in (400, 404), path
            assert b"import " not in body and b"root:" not in body and b"[project]" not in body, path
        # a page elsewhere that rebinds its DNS name to 127.0.0.1 is refused (Host header)
        status, body = raw_get(port, "/api/models", host="evil.example:80")
        assert status == 400
        assert raw_get(port, "/api/models")[0] == 200


# ---------------------------------------------------------------------------- coalescing
def test_requests_queued_behind_a_running_one_coalesce_to_the_latest(app, samples):
    state = app.extensions["playground"]
    worker = state.worker("fmnist-cnn")
    release, started = threading.Event(), threading.Event()
    blocker = worker.submit(lambda net: (started.set(), release.wait(30)))  # a long-running request
    assert started.wait(30)
    results = {}

    def send(client_id, seq):
        r = app.test_client().post("/api/explain", json=request(samples, seq, method="rule:Gamma",
                                                               client=client_id, seq=seq))
        results[(client_id, seq)] = r.get_json()
    threads = [threading.Thread(target=send, args=a) for a in [("page-a", 1), ("page-a", 2), ("page-a", 3),
                                                               ("page-b", 1)]]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while state.coalescer.latest("page-a") != 3 or state.coalescer.latest("page-b") != 1:
        assert time.time() < deadline, "the requests never queued"
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(60)
    blocker.result()
    for seq in (1, 2):  # overtaken while they waited: answered at once, nothing computed
        assert results[("page-a", seq)]["superseded"] is True and "heatmap" not in results[("page-a", seq)]
    assert "heatmap" in results[("page-a", 3)] and results[("page-a", 3)]["seq"] == 3
    assert "heatmap" in results[("page-b", 1)]  # another page is not coalesced with page-a


@pytest.mark.slow
def test_two_threads_explaining_at_once_get_what_each_gets_alone(app, samples, net):
    """The live and curves workers own separate network copies: running both at once on the
    same model gives each the results it gives alone."""
    body = request(samples, IMAGE, method="preset:EpsilonGammaBox")
    alone = app.test_client().post("/api/explain", json=body).get_json()
    curves_alone = app.test_client().post("/api/curves", json=body).get_json()
    out = {}

    def explain(k):
        out[("explain", k)] = app.test_client().post("/api/explain", json=body).get_json()

    def curves():
        out["curves"] = app.test_client().post("/api/curves", json=body).get_json()
    threads = [threading.Thread(target=explain, args=(k,)) for k in range(4)] + [threading.Thread(target=curves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in range(4):
        assert out[("explain", k)]["heatmap"]["values"] == alone["heatmap"]["values"]
    assert out["curves"]["curves"] == curves_alone["curves"]


# ---------------------------------------------------------------------------- the command
PLAYGROUND = [sys.executable, "-m", "minilrp.playground"]


def run_cli(*args):
    return subprocess.run(PLAYGROUND + list(args), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--port", "70000"], "--port 70000 is not a port number"),
    (["--model", "/nonexistent/mine.npz"], "no such weight file: /nonexistent/mine.npz"),
    (["--model", __file__], "test_playground.py"),
])
def test_cli_bad_options_one_line_error(args, message):
    r = run_cli(*args, "--no-browser")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_serves_on_localhost_and_reports_a_busy_port(tmp_path):
    import shutil
    mine = tmp_path / "my model.npz"
    shutil.copy(minilrp.data.model_path("fmnist-mlp"), mine)
    p = subprocess.Popen(PLAYGROUND + ["--no-browser", "--port", "0", "--model", str(mine)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        port = int(m.group(1))
        status, body = raw_get(port, "/api/models")
        assert status == 200 and json.loads(body)["models"][-1] == "my model"
        r = run_cli("--no-browser", "--port", str(port))
        assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr
    finally:
        p.terminate()
        p.wait(30)
    r = run_cli("--help")
    assert r.returncode == 0 and "--no-browser" in r.stdout and "127.0.0.1" in r.stdout


# ---------------------------------------------------------------------------- in a real browser
needs_browser = pytest.mark.skipif(not all(find_chromium()), reason="no Chromium/chromedriver installed")


@pytest.fixture(scope="module")
def page(app, tmp_path_factory):
    pytest.importorskip("selenium")
    driver = chromium(tmp_path_factory.mktemp("profile"))
    try:
        with serving(app) as url:
            driver.get(url)
            wait_for(driver, "window.playground && window.playground.shown > 0 && window.playground.settled()", 120)
            yield driver
    finally:
        driver.quit()


def settle(driver, shown_before):
    """Wait until the page has drawn an answer newer than ``shown_before`` and nothing waits."""
    wait_for(driver, f"window.playground.shown > {shown_before} && window.playground.settled()", 60)


def page_state(driver):
    return driver.execute_script(
        "const p = window.playground; return {pixels: p.lastRequest.pixels, current: p.pixels ? btoa(String.fromCharCode(...p.pixels)) : null,"
        " request: p.lastRequest, last: p.last, shown: p.shown, error: p.error,"
        " probs: Array.from(document.querySelectorAll('#probabilities .value')).map(e => e.textContent),"
        " heat: (() => { const i = document.getElementById('heatmap'), c = document.createElement('canvas');"
        "   c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);"
        "   return Array.from(g.getImageData(0, 0, c.width, c.height).data); })()}")


def check_page_against_library(state, net, composite):
    """What the page shows (numbers, picture, probabilities) is what the library computes for
    the pixels the page sent."""
    pixels = np.frombuffer(base64.b64decode(state["pixels"]), np.uint8).reshape(1, 28, 28)
    assert state["pixels"] == state["current"]  # the answer shown is for the current drawing
    x = net.preprocess(pixels)
    R = net.relevance(x, composite)
    values = floats(state["last"]["heatmap"]["values"])
    np.testing.assert_allclose(values, R[0, 0], rtol=1e-5, atol=1e-6 * np.abs(R).max())
    heat = np.array(state["heat"], np.int64).reshape(28, 28, 4)[..., :3]
    assert np.abs(heat - np.round(render.signed_rgb(R)[0] * 255)).max() <= 2
    probs, _ = net.predict(x)
    assert state["probs"] == [f"{p:.3f}" for p in probs[0]]
    return values, probs[0]


@needs_browser
@pytest.mark.slow
def test_page_draw_change_rule_and_slider(page, net, samples):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    d = page
    state = page_state(d)
    assert state["request"]["method"] == "preset:EpsilonGammaBox" and state["error"] is None
    before, probs_before = check_page_against_library(state, net, "EpsilonGammaBox")

    # a stroke across the canvas (280 x 280 CSS pixels for 28 x 28)
    canvas = d.find_element(By.ID, "canvas")
    shown = state["shown"]
    ActionChains(d).move_to_element_with_offset(canvas, -100, -80).click_and_hold() \
        .move_by_offset(60, 40).move_by_offset(60, 40).move_by_offset(60, 40).release().perform()
    settle(d, shown)
    state = page_state(d)
    drawn, probs_drawn = check_page_against_library(state, net, "EpsilonGammaBox")
    assert not np.allclose(drawn, before) and not np.allclose(probs_drawn, probs_before)

    def ink(state):
        return np.frombuffer(base64.b64decode(state["pixels"]), np.uint8).astype(int).sum()

    # the eraser takes part of the stroke away; clear empties the canvas; load brings a sample
    d.find_element(By.ID, "eraser").click()
    shown = state["shown"]
    ActionChains(d).move_to_element_with_offset(canvas, -100, -80).click_and_hold() \
        .move_by_offset(60, 40).release().perform()
    settle(d, shown)
    erased = page_state(d)
    assert 0 < ink(erased) < ink(state)
    check_page_against_library(erased, net, "EpsilonGammaBox")
    d.find_element(By.ID, "pen").click()
    shown = erased["shown"]
    d.find_element(By.ID, "clear").click()
    settle(d, shown)
    assert ink(page_state(d)) == 0
    shown = page_state(d)["shown"]
    d.find_element(By.ID, "load-sample").click()
    settle(d, shown)
    state = page_state(d)
    assert state["pixels"] == b64(samples[0][0][None]) and "Ankle boot" in d.find_element(By.ID, "sample-label").text

    # another rule, then its slider moved with the keyboard as a person would
    shown = state["shown"]
    Select(d.find_element(By.ID, "method")).select_by_value("rule:Gamma")
    settle(d, shown)
    slider = d.find_element(By.CSS_SELECTOR, "#params .knob[data-name=gamma] input[type=range]")
    field = d.find_element(By.CSS_SELECTOR, "#params .knob[data-name=gamma] input[type=number]")
    gamma_before = float(field.get_attribute("value"))
    heat_before = floats(page_state(d)["last"]["heatmap"]["values"])
    shown = page_state(d)["shown"]
    slider.send_keys(Keys.ARROW_RIGHT * 10)
    settle(d, shown)
    state = page_state(d)
    gamma = float(field.get_attribute("value"))
    assert gamma > gamma_before and state["request"]["params"]["gamma"] == gamma
    after, _ = check_page_against_library(state, net, Composite("g", default=Gamma(gamma)))
    assert not np.allclose(after, heat_before)
    figures = d.find_elements(By.CSS_SELECTOR, "#layers figure")
    assert len(figures) == 6 and d.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")


@needs_browser
@pytest.mark.slow
def test_page_every_method_builds_its_knobs_and_draws(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    d = page
    d.get_log("browser")  # drop what came before
    for method in METHODS:
        shown = d.execute_script("return window.playground.shown")
        Select(d.find_element(By.ID, "method")).select_by_value(method)
        settle(d, shown)
        state = d.execute_script("return [window.playground.error, window.playground.lastRequest.method, "
                                 "Array.from(document.querySelectorAll('#params .knob')).map(k => k.dataset.name)]")
        assert state[:2] == [None, method]
        assert state[2] == [p["name"] for p in METHODS[method]["params"]]
        kind = METHODS[method]["kind"]
        assert d.find_element(By.ID, "pixel-rule-field").is_displayed() == (kind == "rule")
        assert d.find_element(By.ID, "maxpool-field").is_displayed() == (kind != "sa")
        assert d.find_element(By.ID, "ledger-panel").is_displayed() == (kind != "sa")
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@needs_browser
@pytest.mark.slow
def test_page_curves_button(page, net):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    d = page
    if d.find_element(By.ID, "method").get_attribute("value") != "preset:EpsilonPlusFlat":
        shown = d.execute_script("return window.playground.shown")
        Select(d.find_element(By.ID, "method")).select_by_value("preset:EpsilonPlusFlat")
        settle(d, shown)
    Select(d.find_element(By.ID, "perturbation")).select_by_value("uniform")
    d.find_element(By.ID, "run-curves").click()
    wait_for(d, "window.playground.curves && window.playground.curvesRequest.perturbation === 'uniform'", 60)
    out = d.execute_script("return [window.playground.curves, window.playground.curvesRequest, "
                           "document.getElementById('curves').naturalWidth, "
                           "document.querySelectorAll('#aopc tbody tr').length]")
    curves, req, width, rows = out
    assert width > 300 and rows == 3
    pixels = np.frombuffer(base64.b64decode(req["pixels"]), np.uint8).reshape(1, 28, 28)
    x = net.preprocess(pixels)
    assert req["method"] == "preset:EpsilonPlusFlat"
    R, _ = expected_lrp(net, x, req["method"], req["params"], req.get("pixel_rule", "same"),
                        req.get("maxpool", "split"), req.get("target"))
    for ordering in ("morf", "lerf", "random"):
        want = perturbation.heatmap_curves(net, x, R, ordering, "uniform", seed=0)
        np.testing.assert_allclose(curves["curves"][ordering], want[0], rtol=1e-5, atol=1e-5)


@needs_browser
@pytest.mark.slow
def test_page_shows_the_servers_refusal_and_recovers(page, net, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    d = page
    Select(d.find_element(By.ID, "method")).select_by_value("rule:Gamma")
    field = d.find_element(By.CSS_SELECTOR, "#params .knob[data-name=gamma] input[type=number]")
    field.clear()
    field.send_keys("-2")
    wait_for(d, "window.playground.settled() && (window.playground.error || '').includes('-2')", 60)
    box = d.find_element(By.ID, "error")
    assert box.is_displayed() and "gamma = -2 is out of range" in box.text
    shown = d.execute_script("return window.playground.shown")
    field.clear()
    field.send_keys("0.75")
    settle(d, shown)
    assert not d.find_element(By.ID, "error").is_displayed()
    assert d.execute_script("return window.playground.lastRequest.params.gamma") == 0.75
    # an upload: converted by the server, shown in the canvas, explained
    img = np.full((50, 50), 255, np.uint8)
    img[10:40, 20:30] = 0
    path = tmp_path / "trousers.png"
    path.write_bytes(picture_bytes(img))
    shown = d.execute_script("return window.playground.shown")
    d.find_element(By.ID, "upload").send_keys(str(path))
    settle(d, shown)
    assert "inverted" in d.find_element(By.ID, "upload-note").text
    state = page_state(d)
    assert state["pixels"] == state["current"]
    want, _ = load_image(str(path), net)
    got = np.frombuffer(base64.b64decode(state["pixels"]), np.uint8).reshape(1, 28, 28)
    assert np.array_equal(got, np.round(want * 255).astype(np.uint8))
    # a corrupt upload: the page says what the server said
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    d.find_element(By.ID, "upload").send_keys(str(bad))
    wait_for(d, "window.playground.error", 30)
    assert "cannot read broken.png as an image" in d.find_element(By.ID, "error").text
