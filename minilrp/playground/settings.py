"""What the page may ask for, and the checks that turn a request into an explanation.

The catalogue is read from the library, not copied: every preset in ``minilrp.PRESETS``,
every SA variant in ``minilrp.sensitivity.METHODS`` and the single LRP rules, each with the
parameters its signature names (a knob for every name in :data:`PARAMS`). A request is a JSON
object; :func:`parse` checks every field and raises :class:`BadRequest` (HTTP 400) with a
message naming the problem, before anything is computed.

Method ids: ``rule:<name>`` (one LRP rule on every linear layer, optionally another rule at
the pixel layer), ``preset:<name>`` (a composite from PRESETS), ``sa:<name>`` (a gradient
method).
"""
from __future__ import annotations

import base64
import binascii
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from .. import (LRP0, PRESETS, AlphaBeta, Composite, Conv2d, Dense, Epsilon, Flat, Gamma, MaxPool2d,
               MinilrpError, Proportional, WinnerTakeAll, WSquare, ZBox, ZPlus, get_composite, sensitivity)


class BadRequest(MinilrpError):
    """A request the server refuses (HTTP 400 unless ``status`` says otherwise)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# One LRP rule on every linear layer (Composite(default=rule)).
RULES = {"LRP-0": LRP0, "Epsilon": Epsilon, "Gamma": Gamma, "AlphaBeta": AlphaBeta, "ZPlus": ZPlus,
         "WSquare": WSquare, "Flat": Flat}
# The rule of the first linear layer (the pixel layer) under a single rule.
PIXEL_RULES = {"same": None, "zbox": ZBox, "flat": Flat, "wsquare": WSquare}
MAXPOOL = {"split": lambda: WinnerTakeAll(ties="split"), "first": lambda: WinnerTakeAll(ties="first"),
           "proportional": Proportional}
# SA variants whose maps are never negative: drawn on the sequential colour map (so is
# SmoothGrad with squared=True).
UNSIGNED = {"sa", "abs_gradient"}
PERTURBATIONS = {"uniform": "uniform noise over the valid input range",
                 "constant:background": "the background value (the image's most common pixel)",
                 "constant:zero": "zero", "blur": "Gaussian blur (sigma 2)"}

# The knobs: kind, the values the server accepts (inclusive), the slider's range and scale.
# Costly counts are bounded so a request cannot hold the server for long.
PARAMS = {
    "epsilon": dict(kind="float", min=0.0, max=1e6, slider=(1e-6, 10.0), scale="log",
                    help="stabiliser added to z (sign-aware)"),
    "gamma": dict(kind="float", min=0.0, max=1e6, slider=(0.0, 4.0), scale="linear",
                  help="how much positive contributions are favoured"),
    "alpha": dict(kind="float", min=1.0, max=1e6, slider=(1.0, 6.0), scale="linear",
                  help="weight of positive contributions; beta = alpha - 1"),
    "relative": dict(kind="bool", help="epsilon times the RMS of z (Montavon's tutorial)"),
    "bias": dict(kind="bool", help="bias in the denominator (its share goes to the ledger)"),
    "low": dict(kind="bound", min=-1e6, max=1e6, help="z^B lower bound (empty: the model's valid range)"),
    "high": dict(kind="bound", min=-1e6, max=1e6, help="z^B upper bound (empty: the model's valid range)"),
    "n_samples": dict(kind="int", min=1, max=256, slider=(1, 64), scale="linear", help="noisy copies"),
    "noise": dict(kind="float", min=0.0, max=10.0, slider=(0.0, 1.0), scale="linear",
                  help="noise std as a fraction of the input range"),
    "seed": dict(kind="int", min=0, max=2**31 - 1, help="seed of the noise"),
    "squared": dict(kind="bool", help="average squared gradients (SmoothGrad-Squared)"),
    "steps": dict(kind="int", min=1, max=256, slider=(1, 128), scale="linear", help="interpolation steps"),
}


def _knobs(fn, skip=()):
    """The parameters of ``fn`` that have a knob: [{name, default, **PARAMS[name]}]. alpha and
    beta together become one knob, alpha (beta = alpha - 1, minilrp's convention)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in PARAMS and p.name not in skip and p.default is not inspect.Parameter.empty:
            spec = dict(PARAMS[p.name], name=p.name, default=p.default)
            if "slider" in spec:
                spec["slider"] = list(spec["slider"])
            out.append(spec)
    return sorted(out, key=lambda spec: spec["kind"] == "bound")  # sliders first, bounds last


def _methods():
    methods = {}
    for name, rule in RULES.items():
        methods[f"rule:{name}"] = dict(group="LRP: one rule on every layer", label=name, kind="rule",
                                       signed=True, params=_knobs(rule), factory=rule)
    for name, preset in PRESETS.items():
        if name not in RULES:  # the single-rule presets are the rules above, with more knobs
            methods[f"preset:{name}"] = dict(group="LRP presets", label=name, kind="preset", signed=True,
                                             params=_knobs(preset), factory=name)
    for name, fn in sensitivity.METHODS.items():
        methods[f"sa:{name}"] = dict(group="Sensitivity analysis (gradients)", label=name, kind="sa",
                                     signed=name not in UNSIGNED, params=_knobs(fn, skip=("target",)),
                                     factory=fn)
    return methods


METHODS = _methods()


def catalogue(net) -> dict:
    """What the page builds its controls from, for one network: methods and their knobs,
    max-pool choices (none without a max pool), fills, classes, input shape and range."""
    has_maxpool = any(isinstance(layer, MaxPool2d) for layer in net.layers)
    return {
        "methods": [{"id": k, **{f: v for f, v in m.items() if f != "factory"}} for k, m in METHODS.items()],
        "maxpool": list(MAXPOOL) if has_maxpool else [],
        "perturbations": PERTURBATIONS,
        "classes": net.classes, "input_shape": list(net.input_shape),
        "input_low": net.input_low.tolist(), "input_high": net.input_high.tolist(),
    }


# ------------------------------------------------------------------------------ requests
@dataclass
class Settings:
    """A checked request: the model, the input pixels (C, H, W) uint8, the explanation."""
    model: str
    pixels: np.ndarray
    method: str
    params: dict = field(default_factory=dict)
    pixel_rule: str = "same"
    maxpool: str = "split"
    target: int | None = None
    perturbation: str = "uniform"
    client: str | None = None
    seq: int = 0

    @property
    def spec(self):
        return METHODS[self.method]

    @property
    def signed(self) -> bool:
        """Whether the map can be negative (diverging colours) or not (sequential)."""
        return self.spec["signed"] and not self.params.get("squared", False)

    def composite(self) -> Composite:
        """The LRP composite this request names (MinilrpError from the rules go to 400)."""
        m, p = self.spec, dict(self.params)
        if "alpha" in p:  # minilrp's convention, alpha - beta = 1
            p["beta"] = p["alpha"] - 1
        if m["kind"] == "preset":
            comp = get_composite(m["factory"], **p)
        else:
            bounds = {k: p.pop(k) for k in ("low", "high") if k in p}
            first = None
            if self.pixel_rule != "same":
                pixel = PIXEL_RULES[self.pixel_rule]
                first = ((Conv2d, Dense), pixel(**bounds) if pixel is ZBox else pixel())
            comp = Composite(self.method, default=m["factory"](**p), first=first)
        comp.maxpool = MAXPOOL[self.maxpool]()  # a fresh composite: set its max-pool rule
        return comp


FIELDS = {"model", "pixels", "method", "params", "pixel_rule", "maxpool", "target", "perturbation",
          "client", "seq"}


def _number(name, value, spec):
    if spec["kind"] == "bool":
        if not isinstance(value, bool):
            raise BadRequest(f"parameter {name} must be true or false, got {value!r}")
        return value
    if spec["kind"] == "bound" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"parameter {name} must be a finite number, got {value!r}")
    if spec["kind"] == "int":
        if value != int(value):
            raise BadRequest(f"parameter {name} must be a whole number, got {value!r}")
        value = int(value)
    if not spec["min"] <= value <= spec["max"]:
        raise BadRequest(f"parameter {name} = {value:g} is out of range: {spec['min']:g} <= {name} <= {spec['max']:g}")
    return value


def parse(body, net, curves=False) -> Settings:
    """Check a request body (a dict from JSON) against the catalogue and the network ``net``
    it names (the caller looks it up by body["model"]). Raises BadRequest naming the first
    problem."""
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(FIELDS))}")
    for key in ("model", "pixels", "method"):
        if key not in body:
            raise BadRequest(f"missing field {key!r}")
        if not isinstance(body[key], str):
            raise BadRequest(f"field {key!r} must be a string")
    s = Settings(model=body["model"], pixels=decode_pixels(body["pixels"], net.input_shape), method=body["method"])
    if s.method not in METHODS:
        raise BadRequest(f"unknown method {s.method!r}; methods: {', '.join(METHODS)}")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise BadRequest("field 'params' must be an object of parameter values")
    knobs = {p["name"]: p for p in s.spec["params"]}
    pixel_rule = body.get("pixel_rule", "same")
    if s.spec["kind"] == "rule" and pixel_rule == "zbox":
        knobs.update({k: dict(PARAMS[k], name=k) for k in ("low", "high")})
    for name, value in params.items():
        if name not in knobs:
            raise BadRequest(f"method {s.method} has no parameter {name!r}"
                             + (f" (parameters: {', '.join(knobs)})" if knobs else " (it takes none)"))
        s.params[name] = _number(name, value, knobs[name])
    if s.spec["kind"] == "rule":
        if pixel_rule not in PIXEL_RULES:
            raise BadRequest(f"unknown pixel_rule {pixel_rule!r}; choose {', '.join(PIXEL_RULES)}")
        s.pixel_rule = pixel_rule
    elif "pixel_rule" in body and pixel_rule != "same":
        raise BadRequest(f"pixel_rule applies to the single rules (rule:...), not to {s.method}")
    s.maxpool = body.get("maxpool", "split")
    if s.maxpool not in MAXPOOL:
        raise BadRequest(f"unknown maxpool {s.maxpool!r}; choose {', '.join(MAXPOOL)}")
    target = body.get("target")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, int):
            raise BadRequest(f"target must be a class index or null (the predicted class), got {target!r}")
        if not 0 <= target < net.n_classes:
            raise BadRequest(f"target class {target} out of range: the model has classes 0..{net.n_classes - 1}")
    s.target = target
    if curves:
        s.perturbation = body.get("perturbation", "uniform")
        if s.perturbation not in PERTURBATIONS:
            raise BadRequest(f"unknown perturbation {s.perturbation!r}; choose {', '.join(PERTURBATIONS)}")
    s.client, s.seq = client_of(body)
    if s.spec["kind"] != "sa":
        try:  # a bad combination (alpha-beta convention, a rule on the wrong layer) fails here
            s.composite().rules(net)
        except MinilrpError as e:
            raise BadRequest(str(e)) from None
    return s


def client_of(body):
    """The page a request comes from and its number: (client str or None, seq int >= 0)."""
    client, seq = body.get("client"), body.get("seq", 0)
    if client is not None and (not isinstance(client, str) or not 0 < len(client) <= 64):
        raise BadRequest("client must be a string of 1 to 64 characters")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise BadRequest(f"seq must be a non-negative integer, got {seq!r}")
    return client, seq


def decode_pixels(text, input_shape) -> np.ndarray:
    """Base64 of C*H*W bytes (uint8, channel-major) -> (C, H, W) uint8."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("pixels must be base64 of the image's bytes (uint8, C x H x W)") from None
    C, H, W = input_shape
    if len(raw) != C * H * W:
        raise BadRequest(f"pixels: {len(raw)} bytes, but the model takes {C}x{H}x{W} = {C * H * W}")
    return np.frombuffer(raw, np.uint8).reshape(C, H, W)


def encode_pixels(pixels) -> str:
    return base64.b64encode(np.ascontiguousarray(pixels, np.uint8).tobytes()).decode("ascii")
