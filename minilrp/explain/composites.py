"""Composites: which LRP rule serves which layer, and the registry of named presets.

ReLU always passes relevance and Flatten reshapes it; a composite picks the rule of every
linear layer (Dense, Conv2d, AvgPool2d) and every max pool. The Zennit-named presets follow
Zennit 0.5.1 exactly (../shared/ZENNIT_SEMANTICS.md): the "first" layer is the first layer
of the given types met in order (for EpsilonGammaBox the first *conv*: an MLP gets no box).
"""
from __future__ import annotations

from ..errors import MinilrpError
from ..engine.layers import AvgPool2d, Conv2d, Dense, MaxPool2d
from .rules import (LINEAR, AlphaBeta, Epsilon, Flat, Gamma, Rule, WinnerTakeAll,
                    WSquare, ZBox, ZPlus)


class Composite:
    """A rule per layer, resolved in this order:

    by_index: {layer index: rule}, overrides everything;
    first:    (types, rule): the first layer of one of ``types``;
    by_type:  {layer class: rule}, e.g. {Conv2d: Gamma(), Dense: Epsilon()};
    default:  rule for any other linear layer (Epsilon(1e-6));
    maxpool:  rule for max pools (WinnerTakeAll(); Proportional() on request).

    Average pools get the default rule, except a sign-splitting one (Gamma, AlphaBeta, z+),
    which is replaced by Epsilon with the same epsilon unless ``by_type``/``by_index`` say
    otherwise: a pool's weights are fixed and positive, so gamma and z+ reduce to epsilon
    there anyway and alpha-beta would multiply the relevance by alpha. Zennit's rules leave
    the parameter-less pool unmodified, which amounts to the same.
    """

    def __init__(self, name="custom", default=None, by_type=None, first=None, by_index=None,
                 maxpool=None):
        self.name = name
        self.default = Epsilon() if default is None else default
        pool = Epsilon(self.default.epsilon) if isinstance(self.default, (Gamma, AlphaBeta)) else self.default
        self.by_type = {AvgPool2d: pool, **dict(by_type or {})}
        if first is not None and not (isinstance(first, tuple) and len(first) == 2):
            raise MinilrpError(f"composite {name!r}: first takes a (layer types, rule) pair, e.g. "
                               f"first=((Conv2d,), ZBox()), got {first!r}")
        self.first = first
        self.by_index = dict(by_index or {})
        self.maxpool = WinnerTakeAll() if maxpool is None else maxpool
        for rule in [self.default, self.maxpool, *self.by_type.values(), *self.by_index.values()] + \
                ([first[1]] if first else []):
            if not isinstance(rule, Rule):
                raise MinilrpError(f"composite {name!r}: {rule!r} is not an LRP rule")

    def rules(self, net) -> list:
        """The rule of every layer of ``net`` (None for ReLU and Flatten). Raises when a
        rule is given to a layer it cannot serve."""
        out = []
        first_index = None
        if self.first is not None:
            types = self.first[0]
            first_index = next((i for i, layer in enumerate(net.layers) if isinstance(layer, types)), None)
        for i, layer in enumerate(net.layers):
            if i in self.by_index:
                rule = self.by_index[i]
            elif i == first_index:
                rule = self.first[1]
            elif isinstance(layer, MaxPool2d):
                rule = self.maxpool
            elif isinstance(layer, LINEAR):
                rule = next((r for t, r in self.by_type.items() if isinstance(layer, t)), self.default)
            else:
                rule = None
            if rule is not None:
                rule.check_layer(layer)
            out.append(rule)
        bad = [i for i in self.by_index if not 0 <= i < len(net.layers)]
        if bad:
            raise MinilrpError(f"composite {self.name!r}: layer index {bad[0]} out of range "
                               f"(the network has {len(net.layers)} layers)")
        return out

    def __repr__(self):
        return f"Composite({self.name!r})"


CONV = (Conv2d,)
ANY_LINEAR = (Conv2d, Dense)


def _zennit(name, conv_rule, first=None, epsilon=1e-6):
    return Composite(name, default=Epsilon(epsilon), first=first,
                     by_type={Conv2d: conv_rule, Dense: Epsilon(epsilon), AvgPool2d: Epsilon(epsilon)})


def epsilon_gamma_box(low=None, high=None, epsilon=1e-6, gamma=0.25):
    """Zennit's EpsilonGammaBox: first conv z^B, other convs gamma, dense epsilon."""
    return _zennit("EpsilonGammaBox", Gamma(gamma, epsilon), (CONV, ZBox(low, high, epsilon)), epsilon)


def epsilon_plus(epsilon=1e-6):
    """Zennit's EpsilonPlus: convs z+, dense epsilon."""
    return _zennit("EpsilonPlus", ZPlus(epsilon), None, epsilon)


def epsilon_plus_flat(epsilon=1e-6):
    """Zennit's EpsilonPlusFlat: first linear layer (conv or dense) flat, convs z+, dense epsilon."""
    return _zennit("EpsilonPlusFlat", ZPlus(epsilon), (ANY_LINEAR, Flat(epsilon)), epsilon)


def epsilon_alpha2_beta1(epsilon=1e-6):
    """Zennit's EpsilonAlpha2Beta1: convs alpha=2 beta=1, dense epsilon."""
    return _zennit("EpsilonAlpha2Beta1", AlphaBeta(2, 1, epsilon), None, epsilon)


def epsilon_alpha2_beta1_flat(epsilon=1e-6):
    """Zennit's EpsilonAlpha2Beta1Flat: as EpsilonAlpha2Beta1 with the first linear layer flat."""
    return _zennit("EpsilonAlpha2Beta1Flat", AlphaBeta(2, 1, epsilon), (ANY_LINEAR, Flat(epsilon)), epsilon)


class DepthBanded(Composite):
    """Montavon et al. (2019)'s depth-banded composite: z^B at the pixels (first linear
    layer), gamma on the lower half of the remaining convs, epsilon (relative: epsilon x RMS
    of z) on the upper convs and hidden dense layers, LRP-0 on the output layer."""

    def __init__(self, low=None, high=None, gamma=0.25, epsilon=0.25, maxpool=None):
        super().__init__("Montavon", maxpool=maxpool)
        self.band_rules = (ZBox(low, high), Gamma(gamma), Epsilon(epsilon, relative=True), Epsilon(0.0))

    def rules(self, net):
        box, lower, middle, top = self.band_rules
        linear = [i for i, layer in enumerate(net.layers) if isinstance(layer, (Conv2d, Dense))]
        convs = [i for i in linear[1:] if isinstance(net.layers[i], Conv2d)]
        lower_convs = set(convs[:(len(convs) + 1) // 2])
        by_index = {i: lower if i in lower_convs else middle for i in linear[1:-1]}
        by_index.update({linear[0]: box, linear[-1]: top} if len(linear) > 1 else {linear[0]: box})
        return Composite(self.name, default=middle, by_index=by_index, maxpool=self.maxpool).rules(net)


# The one registry of names the API, the CLI and the tests share.
PRESETS = {
    "LRP-0": lambda: Composite("LRP-0", default=Epsilon(0.0)),
    "Epsilon": lambda epsilon=0.25: Composite("Epsilon", default=Epsilon(epsilon)),
    "Gamma": lambda gamma=0.25: Composite("Gamma", default=Gamma(gamma)),
    "AlphaBeta": lambda alpha=2.0, beta=1.0: Composite("AlphaBeta", default=AlphaBeta(alpha, beta)),
    "ZPlus": lambda: Composite("ZPlus", default=ZPlus()),
    "WSquare": lambda: Composite("WSquare", default=WSquare()),
    "EpsilonGammaBox": epsilon_gamma_box,
    "EpsilonPlus": epsilon_plus,
    "EpsilonPlusFlat": epsilon_plus_flat,
    "EpsilonAlpha2Beta1": epsilon_alpha2_beta1,
    "EpsilonAlpha2Beta1Flat": epsilon_alpha2_beta1_flat,
    "Montavon": DepthBanded,
}


def get_composite(spec, maxpool=None, **params) -> Composite:
    """A Composite from a preset name (case-insensitive; ``params`` go to the preset), a
    Composite, or a single Rule (applied to every linear layer). maxpool: the max-pool rule
    for a preset or a Rule, e.g. WinnerTakeAll(ties="first") (Zennit's routing)."""
    if isinstance(spec, Composite):
        if params or maxpool is not None:
            raise MinilrpError(f"parameters go to a preset name, not to a Composite ({spec!r}): got "
                               f"{sorted(params) + (['maxpool'] if maxpool is not None else [])}")
        return spec
    if maxpool is not None and not isinstance(maxpool, Rule):
        raise MinilrpError(f"maxpool must be an LRP rule for max pools (e.g. WinnerTakeAll()), got {maxpool!r}")
    if isinstance(spec, Rule):
        if params:
            raise MinilrpError(f"parameters go to a preset name, not to a rule ({spec!r}): got {sorted(params)}")
        return Composite(repr(spec), default=spec, maxpool=maxpool)
    if isinstance(spec, str):
        key = {k.lower(): k for k in PRESETS}.get(spec.lower())
        if key is None:
            raise MinilrpError(f"unknown composite {spec!r}; presets: {', '.join(PRESETS)}")
        try:
            composite = PRESETS[key](**params)
        except TypeError as e:
            raise MinilrpError(f"composite {key!r}: bad parameters {params} ({e})") from None
        if maxpool is not None:
            composite.maxpool = maxpool
        return composite
    raise MinilrpError(f"a composite must be a preset name, a Composite or a Rule, got {spec!r}")
