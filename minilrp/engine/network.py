"""A sequential classifier: forward with per-layer caches, predictions, input gradients.

The network works in its *input space*: images already scaled and normalised as the model
was trained (``preprocess`` does that for raw uint8 images). ``input_range`` gives the
valid per-channel [low, high] of that space (the z^B bounds of LRP's box rule).
"""
from __future__ import annotations

import copy
import math
import os
import threading

import numpy as np

from ..errors import MinilrpError
from ..explain.composites import get_composite
from ..explain.ledger import Ledger, why_not_finite
from ..fast.relevance import relevance as fast_relevance
from . import kernels
from .layers import Flatten, Layer


class _InUse:
    """Network._in_use: the network's lock, taken without waiting."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            raise MinilrpError("this Network is busy with a call from another thread; a Network "
                               "caches per call, so give each thread its own copy: net.copy()")
        self.blas = kernels.one_blas_thread()
        self.blas.__enter__()

    def __exit__(self, *exc):
        self.blas.__exit__(*exc)
        self.lock.release()


class Network:
    """layers: list of Layer; input_shape: (C, H, W); classes: list of names.

    memory_budget: bytes a call may use (estimated); larger batches run in chunks with the
    same results (default 2 GiB, or MINILRP_MEMORY_BUDGET; settable per network).

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
        # the last layer fed by the network's input itself (through Flatten at most)
        self.first_from_input = next(i for i, layer in enumerate(self.layers) if not isinstance(layer, Flatten) or
                                     i == len(self.layers) - 1)
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
        self.memory_budget = int(os.environ.get("MINILRP_MEMORY_BUDGET", 2 << 30))
        self._lock = threading.RLock()
        self._forward_thread = None
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
        if x.dtype == self.dtype:
            out = np.ascontiguousarray(x)
        else:
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, named below
                out = np.ascontiguousarray(x, dtype=self.dtype)
        if not np.isfinite(out).all():  # NaN and inf stay so in the cast; overflow becomes inf
            raise MinilrpError("input contains NaN or inf" if not np.isfinite(x).all() else
                               f"input values beyond the range of {self.dtype}: use net.astype('float64')")
        return out

    def preprocess(self, images) -> np.ndarray:
        """Raw images -> network input: uint8 in [0, 255] (or floats in [0, 1]), shaped
        (N, H, W) for one channel or (N, C, H, W), scaled to [0, 1] and normalised with
        mean/std."""
        x = np.asarray(images)
        if x.dtype == np.uint8:
            x = x.astype(self.dtype) / 255
        elif x.dtype.kind != "f":
            raise MinilrpError(f"preprocess takes uint8 or float images in [0, 1], got {x.dtype}")
        elif not np.isfinite(x).all():
            raise MinilrpError("float images must lie in [0, 1], got NaN or inf")
        elif x.size and (x.min() < 0 or x.max() > 1):
            raise MinilrpError(f"float images must lie in [0, 1], got values in [{x.min():.4g}, {x.max():.4g}]"
                               + (" (0..255: pass uint8, or divide by 255)" if x.max() > 1 else ""))
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
    def _in_use(self):
        """One call at a time: the layers keep per-call caches, so a second thread's call
        would corrupt the first one's. Refused with an error rather than serialised, so the
        cached values (layer inputs, ledger) always belong to the thread that reads them."""
        return _InUse(self._lock)

    def chunks(self, N, work="forward"):
        """Slices of a batch of N small enough for ``memory_budget`` bytes per call (an
        estimate from the activation sizes: what forward caches, times more for gradient and
        relevance, which keep more alive). Raises when one example alone does not fit."""
        sizes = [math.prod(s) for s in self.shapes]
        factor = {"forward": (1, 2), "gradient": (2, 4), "relevance": (3, 12)}[work]
        per_example = self.dtype.itemsize * (factor[0] * sum(sizes) + factor[1] * max(sizes))
        n = self.memory_budget // per_example
        if n < 1:
            raise MinilrpError(f"one example needs about {per_example / 2**20:.0f} MiB for {work}, more "
                               f"than net.memory_budget = {self.memory_budget / 2**20:.0f} MiB: raise it")
        return [slice(i, min(N, i + n)) for i in range(0, N, n)]

    def forward(self, x) -> np.ndarray:
        """Logits (N, n_classes); every layer caches its input for backward/relevance (for a
        batch above the memory budget, run in chunks, the last chunk's)."""
        x = self.check_input(x)
        with self._in_use():
            parts = [self._forward(x[s]) for s in self.chunks(len(x))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _forward(self, x):
        a = x
        for layer in self.layers:
            a = layer.forward(a)
        self._forward_thread = threading.get_ident()
        return self.check_logits(a)

    def check_logits(self, logits):
        """The logits, if finite; else an error naming the first layer whose output is not,
        and why (its parameters, or overflow of the dtype)."""
        if np.isfinite(logits).all():
            return logits
        outputs = [layer.a for layer in self.layers[1:]] + [logits]
        i = next(i for i, out in enumerate(outputs) if not np.isfinite(out).all())
        raise MinilrpError(f"non-finite output of layer {i} ({self.layers[i].describe()}): "
                           f"{why_not_finite(self.layers[i], self.dtype)}")

    def predict(self, x):
        """Softmax probabilities (N, n_classes) and predicted classes (N,)."""
        logits = self.forward(x)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p, logits.argmax(axis=1)

    def backward(self, g) -> np.ndarray:
        """Gradient w.r.t. the input of sum(g * logits) for the last forward. g: (N, K)."""
        with self._in_use():
            if self.layers[-1].a is None:
                raise MinilrpError("backward called before forward")
            if self._forward_thread != threading.get_ident():
                raise MinilrpError("backward in another thread than the forward it belongs to: "
                                   "give each thread its own copy of the network (net.copy())")
            N = self.layers[0].a.shape[0]
            g = np.asarray(g)
            if g.shape != (N, self.n_classes):
                raise MinilrpError(f"output weighting must have shape ({N}, {self.n_classes}) (the "
                                   f"last forward's batch{', its last chunk' if N < len(g) else ''}), got {g.shape}")
            g = g_out = np.ascontiguousarray(g, dtype=self.dtype)
            for layer in reversed(self.layers):
                g = layer.backward(g)
            if not np.isfinite(g).all():  # again, layer by layer, to name where it happened
                g = g_out
                for i in reversed(range(len(self.layers))):
                    g = self.layers[i].backward(g)
                    if not np.isfinite(g).all():
                        raise MinilrpError(f"non-finite gradient at the input of layer {i} ({self.layers[i].describe()}): "
                                           f"{why_not_finite(self.layers[i], self.dtype)}")
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

    @staticmethod
    def _rows(value, N, what):
        """Per-example arguments (arrays of N rows) are sliced with the batch; others not."""
        if isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) >= 1:
            value = np.asarray(value)
            if len(value) != N:
                raise MinilrpError(f"{len(value)} {what} for a batch of {N}")
            return lambda s: value[s]
        return lambda s: value

    def gradient(self, x, target=None, weights=None) -> np.ndarray:
        """Input gradient of the target logit (default: the predicted class), or of
        sum(weights * logits) for any weighting ``weights`` (N, n_classes). -> x.shape."""
        if weights is not None and target is not None:
            raise MinilrpError("give either target or weights, not both")
        x = self.check_input(x)
        target_of, weights_of = self._rows(target, len(x), "targets"), self._rows(weights, len(x), "output weightings")
        out = np.empty_like(x)
        with self._in_use():
            for s in self.chunks(len(x), "gradient"):
                logits = self._forward(x[s])
                w = weights_of(s)
                if w is None:
                    t = self.targets(target_of(s), logits)
                    w = np.zeros_like(logits)
                    w[np.arange(len(t)), t] = 1
                out[s] = self.backward(w)
        return out

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
                  fast=True, **params) -> np.ndarray:
        """LRP heatmaps (N, *input_shape) for the target class (default: the predicted one).

        composite: a preset name (``composites.PRESETS``; ``params`` go to it), a Composite
        or a Rule; start: see :meth:`initial_relevance`. fast=False runs the readable rules of
        minilrp/explain/rules.py (:meth:`_relevance`, below); fast=True (default) the same rules
        implemented faster (minilrp/fast/, held equal by tests/test_fast_path.py). The
        per-layer ledger of the call is left in ``self.ledger`` (with every layer's relevance
        when ``keep``), the targets in ``self.last_targets``."""
        x = self.check_input(x)
        if fast:
            run = lambda x, t, st: fast_relevance(self, x, composite, params, t, st, keep)  # noqa: E731
        else:
            rules = get_composite(composite, **params).rules(self)
            run = lambda x, t, st: self._relevance(x, rules, t, st, keep)  # noqa: E731
        target_of, start_of = self._rows(target, len(x), "targets"), self._rows(start, len(x), "initial relevances")
        with self._in_use():
            parts = [run(x[s], target_of(s), start_of(s)) for s in self.chunks(len(x), "relevance")]
        if len(parts) == 1:
            R, self.ledger, self.last_targets = parts[0]
            return R
        R, ledgers, targets = zip(*parts)
        self.ledger, self.last_targets = Ledger.concatenate(ledgers), np.concatenate(targets)
        return np.concatenate(R)

    def _relevance(self, x, rules, target, start, keep):
        """The reference path: each layer's rule, output layer first. -> (R, ledger, targets)."""
        logits = self._forward(x)
        targets = self.targets(target, logits)
        R = self.initial_relevance(logits, targets, start)
        ledger = Ledger()
        for i in reversed(range(len(self.layers))):
            layer, rule = self.layers[i], rules[i]
            if rule is None:  # ReLU passes relevance on, Flatten reshapes it
                R_in, shares = R.reshape(layer.a.shape), {}
            else:
                R_in, shares = rule.relevance(layer, layer.a, R, self.context(i))
            ledger.add(i, layer, rule, R, R_in, shares, keep)
            R = R_in
        return R, ledger, targets

    def context(self, i) -> dict:
        """What layer i's rule may know besides the layer: where the layer is fed by the
        network's input (through Flatten at most), that input's shape and valid range (the
        default bounds of z^B)."""
        if i <= self.first_from_input:
            return {"input_shape": self.input_shape, "input_range": (self.input_low, self.input_high)}
        return {}

    def copy(self) -> "Network":
        """An independent copy (parameters included, caches dropped): one per thread."""
        twin = copy.deepcopy(self)
        twin.clear()
        return twin

    def __getstate__(self):  # pickling and copying: no lock, no thread, no fast-path state
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_fast")}
        state["_forward_thread"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def clear(self):
        """Drop every layer's forward cache."""
        for layer in self.layers:
            layer.clear()

    def __repr__(self):
        lines = [f"Network {self.name!r}: input {self.input_shape}, {self.n_classes} classes, {self.dtype}"]
        for i, (layer, shape) in enumerate(zip(self.layers, self.shapes[1:])):
            lines.append(f"  {i:2d} {layer!r:60s} -> {shape}")
        return "\n".join(lines)
