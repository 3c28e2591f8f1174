"""The checks of one exercise as data: a CaseBook of cases, their inputs, the right outputs and
the outputs of typical mistakes.

A book is built in memory by an exercise's ``committed(book)`` (the worked-by-hand checks,
saved as ``exercises/<name>.npz`` by tools/make_exercise_references.py) and ``fresh(book,
rng)`` (random layers, networks and inputs drawn at check time). The file holds a JSON record
``meta`` (uint8 bytes) and float64/int64 arrays, loaded with ``allow_pickle=False``.

A case is one call of a student's function::

    {"id", "title", "kind": "call", "function", "args": [arg spec, ...], "expected": key,
     "mistakes": {mistake id: key}, options (output, shape_doc, shape_hint, nan_hint,
     show_sums, only_here)}

or a chain (a Dense rule on every Dense layer of a network, from the output back), whose
"layers" are such calls, one per layer. An arg spec is {"name", "array": key},
{"name", "tuple": [...]}, {"name", "network": prefix} or {"name", "value": JSON}.
"""
from __future__ import annotations

import io
import json

import numpy as np

from .compare import close

FORMAT = 2


class CaseBook:
    def __init__(self, exercise, hints):
        self.exercise, self.hints = exercise, hints
        self.cases, self.arrays = [], {}

    # ------------------------------------------------------------------------------
    def put(self, key, value):
        a = np.asarray(value)
        if a.dtype.kind == "f":
            a = a.astype(np.float64)
        elif a.dtype.kind in "iub":
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{key}: unsupported dtype {a.dtype}")
        if key in self.arrays:
            raise KeyError(f"duplicate array {key}")
        self.arrays[key] = np.ascontiguousarray(a)
        return key

    def mistakes(self, prefix, expected, variants):
        """Store the variants that the check tells from ``expected`` (a mistake that passes the
        check is no mistake there); -> {mistake: key}."""
        out = {}
        for m, v in (variants or {}).items():
            if m not in self.hints:
                raise KeyError(f"{self.exercise}: mistake {m!r} has no hint")
            v = np.asarray(v, dtype=np.float64)
            if v.shape != expected.shape or not np.all(np.isfinite(v)):
                continue
            if close(v, expected).all():
                continue
            out[m] = self.put(f"{prefix}.mistake.{m}", v)
        return out

    def _args(self, prefix, args):
        from ..engine.network import Network
        specs = []
        for name, v in args:
            if isinstance(v, np.ndarray):
                specs.append({"name": name, "array": self.put(f"{prefix}.{name}", v)})
            elif isinstance(v, Network):
                specs.append({"name": name, "network": self._network(f"{prefix}.{name}", v)})
            elif isinstance(v, tuple):
                specs.append({"name": name, "tuple": list(v)})
            else:
                specs.append({"name": name, "value": v})
        return specs

    def _network(self, prefix, net):
        from ..models.io import architecture
        record = json.dumps(architecture(net)).encode("utf-8")
        self.arrays[f"{prefix}.architecture"] = np.frombuffer(record, dtype=np.uint8).copy()
        for i, layer in enumerate(net.layers):
            for k, v in layer.params().items():
                if v is not None:
                    self.put(f"{prefix}.layers.{i}.{k}", v)
        return prefix

    def case(self, cid, title, function, args, expected, variants=None, **options):
        """One call: args is a list of (name, value), values arrays, networks, tuples or JSON."""
        if any(c["id"] == cid for c in self.cases):
            raise KeyError(f"duplicate case {cid}")
        expected = np.asarray(expected, dtype=np.float64)
        case = {"id": cid, "title": title, "kind": "call", "function": function,
                "args": self._args(cid, args), "expected": self.put(f"{cid}.expected", expected),
                "mistakes": self.mistakes(cid, expected, variants), **options}
        self.cases.append(case)
        return case

    def chain(self, cid, title, function, steps, **options):
        """A chain of calls, one per layer from the output back: steps is a list of (layer
        index, label, args, expected, variants); the checker stops at the first layer that
        diverges."""
        layers = []
        for index, label, args, expected, variants in steps:
            prefix = f"{cid}.layer{index}"
            expected = np.asarray(expected, dtype=np.float64)
            layers.append({"layer": index, "label": label, "args": self._args(prefix, args),
                           "expected": self.put(f"{prefix}.expected", expected),
                           "mistakes": self.mistakes(prefix, expected, variants)})
        self.cases.append({"id": cid, "title": title, "kind": "chain", "function": function,
                           "layers": layers, **options})

    # ------------------------------------------------------------------------------
    def resolve(self, specs):
        """Arg specs -> (names, values) as the student process receives them (a network is
        its arrays, {"network": {...}})."""
        names, values = [], []
        for spec in specs:
            names.append(spec["name"])
            if "array" in spec:
                values.append(self.arrays[spec["array"]])
            elif "network" in spec:
                prefix = spec["network"] + "."
                values.append({"network": {k[len(prefix):]: v for k, v in self.arrays.items()
                                           if k.startswith(prefix)}})
            elif "tuple" in spec:
                values.append(tuple(spec["tuple"]))
            else:
                values.append(spec["value"])
        return names, values

    def extend(self, other):
        """Append another book's cases (ids and keys must not collide)."""
        for c in other.cases:
            if any(c["id"] == d["id"] for d in self.cases):
                raise KeyError(f"duplicate case {c['id']}")
        clash = set(self.arrays) & set(other.arrays)
        if clash:
            raise KeyError(f"duplicate arrays {sorted(clash)[:3]}")
        self.cases += other.cases
        self.arrays.update(other.arrays)

    # ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "exercise": self.exercise, "cases": self.cases}
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta, indent=0).encode("utf-8"), np.uint8),
                            **self.arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path, exercise, hints):
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        if meta.get("format") != FORMAT or meta.get("exercise") != exercise:
            raise ValueError(f"{path}: reference format {meta.get('format')!r} for "
                             f"{meta.get('exercise')!r}; this checker reads format {FORMAT}: "
                             "regenerate it (python tools/make_exercise_references.py)")
        book = cls(exercise, hints)
        book.cases, book.arrays = meta["cases"], arrays
        return book

    def same_as(self, other) -> bool:
        """Same cases and arrays (floats to 1e-9 relative)."""
        if json.loads(json.dumps(self.cases)) != json.loads(json.dumps(other.cases)):
            return False
        if set(self.arrays) != set(other.arrays):
            return False
        for k, v in self.arrays.items():
            o = other.arrays[k]
            if o.dtype != v.dtype or o.shape != v.shape:
                return False
            if v.dtype.kind == "f":
                scale = max(1.0, float(np.max(np.abs(v)))) if v.size else 1.0
                if not np.allclose(o, v, rtol=1e-9, atol=1e-12 * scale):
                    return False
            elif not np.array_equal(o, v):
                return False
        return True
