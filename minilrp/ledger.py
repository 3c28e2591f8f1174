"""The relevance ledger: per layer, the relevance entering and leaving, and where the
difference went (bias, stabiliser, dropped; for alpha-beta the positive and negative parts).

Rows are in backward order (output layer first). All sums are per example, shape (N,).
"""
from __future__ import annotations

import numpy as np

SHARES = ("bias", "stabiliser", "dropped")


class Ledger:
    def __init__(self):
        self.rows = []

    def add(self, index, layer, rule, R_out, R_in, shares, keep=False):
        row = {"index": index, "layer": layer.describe(), "kind": layer.kind,
               "rule": "pass" if rule is None else rule.label(),
               "entering": R_out.reshape(len(R_out), -1).sum(1),
               "leaving": R_in.reshape(len(R_in), -1).sum(1)}
        zero = np.zeros_like(row["entering"])
        for key in SHARES:
            row[key] = shares.get(key, zero)
        for key in ("positive", "negative"):
            if key in shares:
                row[key] = shares[key]
        if keep:
            row["relevance"] = R_in
        self.rows.append(row)

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
