"""The relevance ledger: per layer, the relevance entering and leaving, and where the
difference went (bias, stabiliser, dropped; for alpha-beta the positive and negative parts).

Rows are in backward order (output layer first). All sums are per example, shape (N,).
"""
from __future__ import annotations

import numpy as np

from ..errors import MinilrpError

SHARES = ("bias", "stabiliser", "dropped")


def per_example_sums(R):
    """(N, ...) -> (N,) float64, summed in R's dtype (NumPy's pairwise sum)."""
    return np.add.reduce(R.reshape(len(R), -1), axis=1).astype(np.float64)


def why_not_finite(layer, dtype):
    """The likely cause of a non-finite value computed by ``layer``."""
    bad = [k for k, v in layer.params().items() if v is not None and not np.isfinite(v).all()]
    if bad:
        return f"its {' and '.join(bad)} contain NaN or inf"
    if dtype == np.float32:
        return "float32 overflow (values beyond 3.4e38): compute in float64, net.astype('float64')"
    return "overflow beyond the range of float64"


class Ledger:
    """Filled by Network.relevance, one ``add`` per layer in backward order. The sums are taken
    when a step is added; the rows (with the layers' and rules' names) are built when first read."""

    def __init__(self, rows=None):
        self._steps = []
        self._rows = rows

    def add(self, index, layer, rule, R_out, R_in, shares, keep=False):
        """One layer's step: relevance R_out entering it from above, R_in leaving to its
        input, ``shares`` of what did not arrive; rule None: a pass-through layer (ReLU,
        Flatten). keep: also keep R_in itself."""
        entering = self._steps[-1][4] if self._steps else per_example_sums(R_out)
        leaving = entering if rule is None else per_example_sums(R_in)
        if rule is not None and not np.isfinite(leaving + sum(shares.values())).all():  # NaN, inf survive
            raise MinilrpError(f"non-finite relevance at the input of layer {index} ({layer.describe()}) under "
                               f"{rule.label()}: {why_not_finite(layer, R_in.dtype)}")
        self._steps.append((index, layer, rule, entering, leaving, shares, R_in if keep else None))
        self._rows = None

    @property
    def rows(self) -> list:
        """One dict per layer, backward order: index, layer, kind, rule, entering, leaving,
        bias, stabiliser, dropped (and positive/negative for alpha-beta; relevance when kept)."""
        if self._rows is None:
            self._rows = []
            for index, layer, rule, entering, leaving, shares, R_in in self._steps:
                row = {"index": index, "layer": layer.describe(), "kind": layer.kind,
                       "rule": "pass" if rule is None else rule.label(), "entering": entering, "leaving": leaving}
                row.update((k, np.asarray(shares.get(k, 0.0) + np.zeros(len(entering)), dtype=np.float64))
                           for k in SHARES)
                row.update((k, np.asarray(shares[k], dtype=np.float64)) for k in ("positive", "negative") if k in shares)
                if R_in is not None:
                    row["relevance"] = R_in
                self._rows.append(row)
        return self._rows

    @classmethod
    def concatenate(cls, ledgers):
        """One ledger from the ledgers of consecutive chunks of a batch."""
        return cls([{k: np.concatenate([r[k] for r in rows]) if isinstance(v, np.ndarray) else v
                     for k, v in rows[0].items()} for rows in zip(*(ledger.rows for ledger in ledgers))])

    def residual(self) -> np.ndarray:
        """Per row and example: entering - leaving - (bias + stabiliser + dropped); zero up
        to rounding when every share is accounted for. (L, N)."""
        return np.array([r["entering"] - r["leaving"] - sum(r[k] for k in SHARES) for r in self.rows])

    def to_dict(self, example=None):
        """Rows as plain dicts of floats (one example) or lists (all)."""
        def conv(v):
            if isinstance(v, np.ndarray):
                return float(v[example]) if example is not None and v.ndim == 1 else v.tolist()
            return v
        return [{k: conv(v) for k, v in r.items() if k != "relevance"} for r in self.rows]

    def table(self, example=0) -> str:
        """A printable table for one example of the batch."""
        head = (f"{'layer':<27} {'rule':<36} {'entering':>11} {'leaving':>11} {'bias':>10} "
                f"{'stabil.':>10} {'dropped':>9}  {'positive/negative':>19}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            pn = f"{r['positive'][example]:9.4g}/{r['negative'][example]:<9.4g}" if "positive" in r else ""
            lines.append(f"{r['index']:>2} {r['layer'][:24]:<24} {r['rule'][:36]:<36} "
                         f"{r['entering'][example]:11.5g} {r['leaving'][example]:11.5g} "
                         f"{r['bias'][example]:10.3g} {r['stabiliser'][example]:10.3g} "
                         f"{r['dropped'][example]:9.3g}  {pn:>19}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()
