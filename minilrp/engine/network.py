"""A sequential classifier: forward with per-layer caches, predictions, input gradients.

The network works in its *input space*: images already scaled and normalised as the model
was trained (``preprocess`` does that for raw uint8 images). ``input_range`` gives the
valid per-channel [low, high] of that space (the z^B bounds of LRP's box rule).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import MinilrpError
from .layers import Flatten, Layer
from ..explain.ledger import Ledger

PRODUCT_BUDGET = 8 << 20  # bytes: the largest rule product the forward computes and keeps


class Network:
    """layers: list of Layer; input_shape: (C, H, W); classes: list of names.

    mean, std: per-channel normalisation applied by :meth:`preprocess` to pixels in [0, 1];
    input_range: (low, high) per channel in the network's input space (default: the image
    of [0, 1] under the normalisation). provenance: free-form dict (dataset, training).
    """

    def __init__(self, layers, input_shape, classes=None, name="network", mean=None, std=None,
                 input_range=None, provenance=None):
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise MinilrpError("a Network needs a non-empty list of minilrp layers")
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) not in (1, 3):
            raise MinilrpError(f"input_shape must be (C, H, W) or (features,), got {input_shape}")
        shape = self.input_shape
        self.shapes = [shape]  # shapes[i] = input shape of layer i (without batch)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            self.shapes.append(shape)
        if len(shape) != 1:
            raise MinilrpError(f"the network's output must be a vector of class scores per "
                               f"example, got shape {shape}")
        self.n_classes = shape[0]
        self.classes = [str(c) for c in classes] if classes is not None else \
            [f"class {k}" for k in range(self.n_classes)]
        if len(self.classes) != self.n_classes:
            raise MinilrpError(f"{len(self.classes)} class names for {self.n_classes} outputs")
        self.name = str(name)
        C = self.input_shape[0] if len(self.input_shape) == 3 else 1
        self.mean = self._per_channel(0.0 if mean is None else mean, C, "mean")
        self.std = self._per_channel(1.0 if std is None else std, C, "std")
        if np.any(self.std <= 0):
            raise MinilrpError("std must be positive")
        if input_range is None:
            input_range = ((0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std)
        low, high = input_range
        self.input_low = self._per_channel(low, C, "input_range low")
        self.input_high = self._per_channel(high, C, "input_range high")
        if np.any(self.input_low > self.input_high):
            raise MinilrpError("input_range low exceeds high")
        self.provenance = dict(provenance or {})
        self._rules_cache = self._bounds_cache = None
        dtypes = {p.dtype for layer in self.layers for p in layer.params().values() if p is not None}
        self.dtype = np.dtype(np.float32) if not dtypes else max(dtypes, key=lambda d: d.itemsize)
        self.astype(self.dtype)

    @staticmethod
    def _per_channel(value, C, what):
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if v.size == 1:
            v = np.repeat(v, C)
        if v.size != C or not np.all(np.isfinite(v)):
            raise MinilrpError(f"{what} needs {C} finite per-channel values, got {value!r}")
        return v

    # ----------------------------------------------------------------------------------
    def astype(self, dtype):
        """Convert every parameter to float32 or float64 (float64 for references)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise MinilrpError(f"a Network computes in float32 or float64, not {dtype}")
        for layer in self.layers:
            layer.astype(dtype)
        self.dtype = dtype
        return self

    def check_input(self, x) -> np.ndarray:
        """Validate a batch (N, *input_shape) and return it C-contiguous in the network's
        dtype; raise MinilrpError naming the problem otherwise."""
        x = np.asarray(x)
        if x.dtype.kind not in "f":
            hint = " (raw images: use net.preprocess(images) first)" if x.dtype.kind in "uib" else ""
            raise MinilrpError(f"input dtype {x.dtype} is not floating point{hint}")
        if x.ndim == len(self.input_shape) and x.shape == self.input_shape:
            raise MinilrpError(f"input has shape {x.shape}: a single example; pass a batch "
                               f"of shape (N, {', '.join(map(str, self.input_shape))}), e.g. x[None]")
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise MinilrpError(f"input shape {x.shape} does not match the network's "
                               f"(N, {', '.join(map(str, self.input_shape))})")
        if x.shape[0] == 0:
            raise MinilrpError("empty batch: the input has 0 examples")
        if not np.isfinite(x).all():
            raise MinilrpError("input contains NaN or inf")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def preprocess(self, images) -> np.ndarray:
        """Raw images -> network input: uint8 in [0, 255] (or floats in [0, 1]), shaped
        (N, H, W) for one channel or (N, C, H, W), scaled to [0, 1] and normalised with
        mean/std."""
        x = np.asarray(images)
        if x.dtype == np.uint8:
            x = x.astype(self.dtype) / 255
        elif x.dtype.kind != "f":
            raise MinilrpError(f"preprocess takes uint8 or float images in [0, 1], got {x.dtype}")
        if len(self.input_shape) == 3 and x.ndim == 3 and self.input_shape[0] == 1:
            x = x[:, None]
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise MinilrpError(f"images of shape {x.shape} do not fit the network's input "
                               f"{self.input_shape}")
        if len(self.input_shape) == 3:
            x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        else:
            x = (x - self.mean[0]) / self.std[0]
        return self.check_input(x)

    # ----------------------------------------------------------------------------------
    def forward(self, x) -> np.ndarray:
        """Logits (N, n_classes); every layer caches its input for backward/relevance."""
        a = self.check_input(x)
        for layer in self.layers:
            a = layer.forward(a)
        return a

    def _forward_for(self, x, rules, call):
        """The forward of :meth:`relevance`: where a rule will need its layer's input times
        other weights (P = a w+ for z+, alpha-beta and gamma), the forward computes that too
        while the input is at hand (a conv's im2col columns), if the product is small (it is
        kept until the rule runs). The logits are forward()'s, bit for bit. call:
        ctx["call"] of the relevance call. -> logits, {layer index: product}."""
        a = self.check_input(x)
        products = {}
        for i, (layer, rule) in enumerate(zip(self.layers, rules)):
            W = None if rule is None else rule.forward_weights(layer, a, {"call": call})
            if W is not None and len(W) * a.itemsize * len(a) * math.prod(self.shapes[i + 1][1:]) <= PRODUCT_BUDGET:
                a, products[i] = layer.forward_with(a, W)
            else:
                a = layer.forward(a)
        return a, products

    def predict(self, x):
        """Softmax probabilities (N, n_classes) and predicted classes (N,)."""
        logits = self.forward(x)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p, logits.argmax(axis=1)

    def backward(self, g) -> np.ndarray:
        """Gradient w.r.t. the input of sum(g * logits) for the last forward. g: (N, K)."""
        if self.layers[-1].a is None:
            raise MinilrpError("backward called before forward")
        N = self.layers[0].a.shape[0]
        g = np.asarray(g)
        if g.shape != (N, self.n_classes):
            raise MinilrpError(f"output weighting must have shape ({N}, {self.n_classes}), got {g.shape}")
        g = np.ascontiguousarray(g, dtype=self.dtype)
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def targets(self, target, logits) -> np.ndarray:
        """Resolve ``target`` to class indices (N,): None = the predicted class; an int for
        every example; or one index per example. Raises on indices out of range."""
        N = logits.shape[0]
        if target is None:
            return logits.argmax(axis=1)
        t = np.asarray(target)
        if t.dtype.kind not in "iu" or t.ndim > 1:
            raise MinilrpError(f"target must be an int or one int per example, got {target!r}")
        t = np.broadcast_to(t, (N,)) if t.ndim == 0 else t
        if t.shape != (N,):
            raise MinilrpError(f"{t.shape[0]} targets for a batch of {N}")
        if np.any(t < 0) or np.any(t >= self.n_classes):
            bad = t[(t < 0) | (t >= self.n_classes)][0]
            raise MinilrpError(f"target class {bad} out of range: the network has "
                               f"{self.n_classes} classes (0..{self.n_classes - 1})")
        return t.astype(np.int64)

    def gradient(self, x, target=None, weights=None) -> np.ndarray:
        """Input gradient of the target logit (default: the predicted class), or of
        sum(weights * logits) for any weighting ``weights`` (N, n_classes). -> x.shape."""
        logits = self.forward(x)
        if weights is None:
            t = self.targets(target, logits)
            weights = np.zeros_like(logits)
            weights[np.arange(len(t)), t] = 1
        elif target is not None:
            raise MinilrpError("give either target or weights, not both")
        return self.backward(weights)

    def initial_relevance(self, logits, targets, start="logit") -> np.ndarray:
        """Relevance entering the output layer (N, n_classes): ``"logit"`` = the target logit
        times one-hot (LRP Toolbox, Montavon's tutorial), ``"onehot"`` = one-hot (Zennit's
        usual start), or a user array of that shape."""
        N = logits.shape[0]
        R = np.zeros_like(logits)
        rows = np.arange(N)
        if isinstance(start, str):
            if start == "logit":
                R[rows, targets] = logits[rows, targets]
            elif start == "onehot":
                R[rows, targets] = 1
            else:
                raise MinilrpError(f"start must be 'logit', 'onehot' or an array, got {start!r}")
            return R
        start = np.asarray(start)
        if start.shape != logits.shape or start.dtype.kind not in "fiu":
            raise MinilrpError(f"initial relevance must be a numeric array of shape {logits.shape}, "
                               f"got {start.dtype} {start.shape}")
        if not np.all(np.isfinite(start)):
            raise MinilrpError("initial relevance contains NaN or inf")
        return start.astype(self.dtype)

    def relevance(self, x, composite="EpsilonGammaBox", target=None, start="logit", keep=False,
                  **params) -> np.ndarray:
        """LRP heatmaps (N, *input_shape) for the target class (default: the predicted one).

        composite: a preset name (``composites.PRESETS``; ``params`` go to it), a Composite
        or a Rule; start: see :meth:`initial_relevance`. The per-layer ledger of the call is
        left in ``self.ledger`` (with every layer's relevance when ``keep``), the targets in
        ``self.last_targets``."""
        rules = self._rules(composite, params)
        call = object()  # marks this call for the rules (rules._derived compares weights once)
        logits, products = self._forward_for(x, rules, call)
        targets = self.targets(target, logits)
        R = self.initial_relevance(logits, targets, start)
        ledger = Ledger()
        last = min((i for i, rule in enumerate(rules) if rule is not None), default=0)
        for i in reversed(range(len(self.layers))):
            layer, rule = self.layers[i], rules[i]
            a = layer.a
            if rule is None:  # ReLU passes relevance, Flatten reshapes it
                R_in, shares = R.reshape(a.shape), {}
            else:
                z = self.layers[i + 1].a if i + 1 < len(self.layers) else logits
                ctx = {"z": z, "P": products.pop(i, None), "call": call, **self._box_bounds(rule, i, a)}
                R_in, shares = rule.relevance(layer, a, R, ctx)
            # internal: another rule takes R_in before it is returned (then it is never changed)
            ledger.add(i, layer, rule, R, R_in, shares, keep, internal=i > last and not keep)
            R = R_in
        self.ledger, self.last_targets = ledger, targets
        return R

    def _rules(self, composite, params):
        """The rule of every layer under ``composite`` (see composites.get_composite). A
        preset's rules are kept for its name, parameters and these layers: rules are
        immutable, and building a preset costs as much as a small layer's relevance."""
        from ..explain.composites import get_composite
        key = None
        if isinstance(composite, str):
            key = (composite.lower(), tuple(sorted(params.items())), tuple(map(id, self.layers)))
            try:
                hash(key)
            except TypeError:  # unhashable parameters (e.g. array bounds): not kept
                key = None
            else:
                if self._rules_cache is not None and self._rules_cache[0] == key:
                    return self._rules_cache[1]
        rules = get_composite(composite, **params).rules(self)
        if key is not None:
            self._rules_cache = (key, rules, self.layers[:])  # the layers: their ids stay theirs
        return rules

    def _box_bounds(self, rule, i, a):
        """z^B bounds for layer i's input ``a``: {"bounds": (low, high) shaped like a,
        "channel_bounds": (l, h) per-channel tuples when every image and position of a channel
        shares them, else None}; {} for other rules. The network's own bounds are prepared
        once per input shape; the input is checked against them on every call."""
        if not hasattr(rule, "low"):
            return {}
        if any(not isinstance(layer, Flatten) for layer in self.layers[:i]):
            raise MinilrpError(f"ZBox serves the pixel layer: layer {i} ({self.layers[i]!r}) is "
                               "not fed by the network input directly")
        x = self.layers[0].a
        key = (x.shape, a.shape, self.dtype, self.input_low.tobytes(), self.input_high.tobytes()) \
            if rule.low is None and rule.high is None else None
        cached = self._bounds_cache
        prep = cached[1] if key is not None and cached is not None and cached[0] == key else None
        if prep is None:
            prep = self._prepare_bounds(rule, x, a)
            if key is not None:
                self._bounds_cache = (key, prep)
        (low, high), axes = prep["arrays"], prep["axes"]
        lo, hi = (x.min(axis=axes), x.max(axis=axes)) if axes else (x, x)
        if (lo < prep["floor"]).any() or (hi > prep["ceiling"]).any():
            out = max(float(np.max(low - lo)), float(np.max(hi - high)))
            raise MinilrpError(f"z^B bounds do not contain the input: it lies up to "
                               f"{out:.3g} outside [low, high] (set ZBox low/high, or "
                               "check the input normalisation)")
        return {"bounds": prep["bounds"], "channel_bounds": prep["channel_bounds"]}

    def _prepare_bounds(self, rule, x, a):
        """Validate the rule's bounds (or the network's) against the input's shape; their
        views for ZBox, the per-channel values when they are per channel, the check limits."""
        bounds = []
        for given, default, what in ((rule.low, self.input_low, "low"), (rule.high, self.input_high, "high")):
            v = np.asarray(default if given is None else given, dtype=np.float64)
            if v.ndim == 1 and len(self.input_shape) == 3:
                if v.size not in (1, self.input_shape[0]):
                    raise MinilrpError(f"ZBox {what} needs 1 or {self.input_shape[0]} per-channel "
                                       f"values, got {v.size}")
                v = v.reshape(-1, 1, 1)
            try:
                np.broadcast_to(v, x.shape)
            except ValueError:
                raise MinilrpError(f"ZBox {what} of shape {v.shape} does not fit the input "
                                   f"{x.shape[1:]}") from None
            bounds.append(v)
        low, high = bounds
        C = x.shape[1]
        prep = {"bounds": tuple(self._bounds_view(v, x, a) for v in bounds), "axes": None,
                "arrays": (low, high), "channel_bounds": None}
        if x.ndim == 4 and low.size <= C and high.size <= C:
            # per-channel bounds (the usual case): compare each channel's extremes only
            l, h = (np.broadcast_to(v.reshape(-1), (C,)).copy() for v in (low, high))
            prep.update(axes=(0, 2, 3), arrays=(l, h), channel_bounds=(tuple(l.tolist()), tuple(h.tolist())))
        low, high = prep["arrays"]
        tol = 1e-5 * np.maximum(1.0, np.abs(high - low))  # rounding of the normalisation
        prep.update(floor=low - tol, ceiling=high + tol)
        return prep

    def _bounds_view(self, v, x, a):
        """Bounds v (broadcastable to the input x) in the network's dtype, shaped like a:
        a broadcast view (stride 0 over the batch, so ZBox computes their terms once) when
        every example shares them."""
        if v.ndim == x.ndim and v.shape[0] != 1:  # per-example bounds
            return np.ascontiguousarray(np.broadcast_to(v, x.shape), dtype=self.dtype).reshape(a.shape)
        one = np.broadcast_to(v.reshape(v.shape[1:]) if v.ndim == x.ndim else v, x.shape[1:])
        return np.broadcast_to(np.ascontiguousarray(one, dtype=self.dtype).reshape(a.shape[1:]), a.shape)

    def clear(self):
        """Drop every layer's forward cache."""
        for layer in self.layers:
            layer.clear()

    def __repr__(self):
        lines = [f"Network {self.name!r}: input {self.input_shape}, {self.n_classes} classes, {self.dtype}"]
        for i, (layer, shape) in enumerate(zip(self.layers, self.shapes[1:])):
            lines.append(f"  {i:2d} {layer!r:60s} -> {shape}")
        return "\n".join(lines)
