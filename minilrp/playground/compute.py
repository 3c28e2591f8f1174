"""What one request computes: the prediction, the heatmap and its pictures, the relevance at
the input of every layer, the ledger, and (on request) the region-perturbation curves.

Pictures are coloured by ``minilrp.render`` (the field's conventions: signed maps on the
diverging map centred on zero with symmetric scaling, SA maps on the sequential one) and sent
as small PNG data URIs at the model's resolution; the page scales them up without smoothing.
The raw numbers travel beside them (base64 of float32), so the page can show a pixel's value
and a test can compare what the page shows with ``net.relevance``.
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np

from .. import Flatten, plots, render, report
from .. import perturbation as P
from .settings import Settings

ORDERINGS = {"morf": "MoRF (most relevant first)", "lerf": "LeRF (least relevant first)", "random": "random"}


def png_uri(rgb) -> str:
    """RGB floats in [0, 1] (H, W, 3) -> a PNG data URI, one pixel per value."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def floats(a) -> dict:
    """An array as {"shape", "data": base64 of little-endian float32}, for the page."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def network_input(net, pixels) -> np.ndarray:
    """uint8 pixels (C, H, W) -> a batch of one in the network's input space."""
    return net.preprocess(pixels[None])


def heatmap(net, x, s: Settings, keep=False):
    """The method's map for the batch x: (map shaped like x, or (N, H, W) for SA; the
    targets). LRP leaves its ledger (and with ``keep`` every layer's relevance) in net.ledger."""
    m = s.spec
    if m["kind"] == "sa":
        t = net.targets(s.target, net.forward(x))
        return m["factory"](net, x, target=t, **s.params), t
    R = net.relevance(x, s.composite(), target=s.target, keep=keep)
    return R, net.last_targets


def _colour(maps, signed):
    """(N, [C,] H, W) -> (the channel-reduced map (N, H, W), RGB (N, H, W, 3), scale max |map|)."""
    m = render.reduce_channels(maps, "sum" if signed else "norm")
    rgb = render.signed_rgb(m) if signed else render.unsigned_rgb(m)
    return m, rgb, float(np.abs(m).max())


def colour_bar(signed) -> str:
    """The colour map from -scale (or 0) to +scale as a 256 x 1 PNG."""
    v = np.linspace(-1 if signed else 0, 1, 256).reshape(1, 1, 256)
    return png_uri((render.signed_rgb(v) if signed else render.unsigned_rgb(v))[0])


def _layer_maps(net, rows):
    """Small multiples: the relevance at the input of every layer with a rule (ReLU passes it
    on, Flatten only reshapes), in forward order. A vector fed by a Flatten is shown in the
    shape before the Flatten; any other vector as a near-square grid of its units."""
    out = []
    for r in sorted(rows, key=lambda r: r["index"]):
        if r["rule"] == "pass":
            continue
        i, R = r["index"], r["relevance"]
        shape = net.shapes[i]
        if R.ndim == 2 and i > 0 and isinstance(net.layers[i - 1], Flatten):
            shape = net.shapes[i - 1]
            R = R.reshape((len(R),) + shape)
        if R.ndim == 2:  # a vector of units: a grid, padded with zeros (white)
            F = R.shape[1]
            cols = math.ceil(math.sqrt(F))
            R = np.pad(R, ((0, 0), (0, cols * math.ceil(F / cols) - F))).reshape(len(R), -1, cols)
        _, rgb, scale = _colour(R, True)
        out.append({"index": i, "layer": r["layer"], "rule": r["rule"], "shape": list(shape),
                    "sum": float(R[0].sum()), "scale": scale, "png": png_uri(rgb[0])})
    return out


def explain(net, s: Settings) -> dict:
    """Everything the page shows for one setting of the knobs (one image)."""
    x = network_input(net, s.pixels)
    probs, pred = net.predict(x)
    R, t = heatmap(net, x, s, keep=True)
    signed = s.signed
    m, rgb, scale = _colour(R, signed)
    picture = render.image_rgb(x, net.input_low, net.input_high)
    out = {
        "probabilities": probs[0].tolist(), "predicted": int(pred[0]), "target": int(t[0]),
        "method": s.method, "signed": signed,
        "heatmap": {"png": png_uri(rgb[0]), "overlay": png_uri(render.overlay(picture, rgb)[0]),
                    "colour_bar": colour_bar(signed), "scale": scale, "values": floats(m[0]),
                    "sum": float(np.sum(R[0])), "positive": float(np.sum(R[0], where=R[0] > 0)),
                    "negative": float(np.sum(R[0], where=R[0] < 0))},
    }
    if s.spec["kind"] != "sa":
        rows = net.ledger.rows
        out["layers"] = _layer_maps(net, rows)
        out["ledger"] = net.ledger.to_dict(example=0)
    return out


def curves(net, s: Settings) -> dict:
    """MoRF, LeRF and random region-perturbation curves of the image under the request's
    method and fill (minilrp.perturbation, default region size, every region), with AOPC."""
    x = network_input(net, s.pixels)
    R, t = heatmap(net, x, s)
    regions = P.grid(x.shape[1:])
    c = {o: P.heatmap_curves(net, x, R, o, s.perturbation, target=t, seed=0) for o in ORDERINGS}
    fig = plots.plot_curves({ORDERINGS[o]: v for o, v in c.items()}, band=None, ylabel="target logit f(x_k)",
                            title=f"{net.name}, {s.method}, fill: {s.perturbation}, class {net.classes[t[0]]}")
    fig.set_size_inches(5.6, 3.4)
    return {"curves": {o: v[0].tolist() for o, v in c.items()},
            "aopc": {o: float(P.aopc(v)[0]) for o, v in c.items()},
            "region_size": regions.size, "n_regions": regions.n_regions, "target": int(t[0]),
            "perturbation": s.perturbation, "png": report.figure_uri(fig)}
