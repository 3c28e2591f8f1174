"""The relevance ledger: per layer, the relevance entering and leaving, and where the
difference went (bias, stabiliser, dropped; for alpha-beta the positive and negative parts).

Rows are in backward order (output layer first). All sums are per example, shape (N,).
"""
from __future__ import annotations

import numpy as np

SHARES = ("bias", "stabiliser", "dropped")


def _sums(R):
    return np.add.reduce(R.reshape(len(R), -1), axis=1)


LAZY_MAX = 1 << 20  # bytes: internal relevance arrays up to this size are summed when read


class Ledger:
    """Filled by Network.relevance in backward order; ``rows`` are built when first read
    (the labels, dicts and sums cost as much as a small layer's relevance step)."""

    def __init__(self):
        self._entries = []
        self._rows = None

    def add(self, index, layer, rule, R_out, R_in, shares, keep=False, internal=False):
        """One layer's step, added in backward order: relevance R_out entering it from above
        (the previous step's R_in, whose sums are reused), R_in leaving to its input,
        ``shares`` of what did not arrive. rule None: a pass-through layer (R_in is R_out
        reshaped). internal: R_in is never handed out or changed (the next rule's input), so
        when small it is kept and summed only when the ledger is read."""
        entering = self._entries[-1][4] if self._entries else _sums(R_out)
        if rule is None:
            leaving = entering
        else:
            leaving = R_in if internal and R_in.nbytes <= LAZY_MAX else _sums(R_in)
        self._entries.append((index, layer, rule, entering, leaving, shares, R_in if keep else None))
        self._rows = None

    @property
    def rows(self) -> list:
        """One dict per layer, backward order: index, layer, kind, rule, entering, leaving,
        bias, stabiliser, dropped (and positive/negative for alpha-beta; relevance when kept)."""
        if self._rows is None:
            summed = {}  # id -> sums of the relevance arrays kept unsummed (lazy entries)

            def total(v):
                if v.ndim == 1:  # already sums
                    return v
                if id(v) not in summed:
                    summed[id(v)] = _sums(v)
                return summed[id(v)]
            self._rows = [self._row(index, layer, rule, total(entering), total(leaving), shares, R_in)
                          for index, layer, rule, entering, leaving, shares, R_in in self._entries]
        return self._rows

    @staticmethod
    def _row(index, layer, rule, entering, leaving, shares, R_in):
        row = {"index": index, "layer": layer.describe(), "kind": layer.kind,
               "rule": "pass" if rule is None else rule.label(),
               "entering": entering, "leaving": leaving}
        zero = np.zeros_like(entering)
        for key in SHARES:
            row[key] = shares.get(key, zero)
        for key in ("positive", "negative"):
            if key in shares:
                row[key] = shares[key]
        if R_in is not None:
            row["relevance"] = R_in
        return row

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
