"""Bring your own model: convert PyTorch modules and ONNX graphs into minilrp networks.

    from minilrp.importers import from_torch, from_onnx
    net = from_torch(model, input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    net = from_onnx("model.onnx")
    minilrp.save("model.npz", net)

Both importers accept a *chain*: every layer feeds the next and nothing else. Supported:

- PyTorch: ``nn.Sequential`` (nested too) or any module whose ``forward`` is a plain chain of
  its layers (torchvision's VGG: features, avgpool, ``torch.flatten``, classifier), made of
  Conv2d (groups=1, dilation=1, square kernel, stride and padding, zero padding mode), Linear,
  ReLU, MaxPool2d (no padding, no dilation), AvgPool2d, AdaptiveAvgPool2d (where it is an
  identity or a fixed average pool for the given input size), Flatten / ``torch.flatten`` /
  ``x.view(x.size(0), -1)``, Dropout and Identity (dropped: inference), BatchNorm2d/1d
  (folded into the preceding Conv2d/Linear with the running statistics, i.e. eval mode).
- ONNX: Conv, Gemm, MatMul (+ Add of a constant bias), Relu, MaxPool, AveragePool,
  GlobalAveragePool, Flatten, Reshape (to (batch, features)), BatchNormalization, Dropout,
  Identity.

Anything else is refused with a MinilrpError naming the layer (qualified name and type) or
the ONNX node, and listing what is supported. For PyTorch the forward is traced with
``torch.fx`` to check that it is a chain, and the converted network's output is compared
with the module's on a random input: a mismatch (a residual connection, a layer used twice, a
forward that fx cannot trace and that does something else than run its layers in order) is
refused too. (A layer applied twice in a row is a chain: it is converted into two copies.)

torch and onnx are optional: they are imported only inside these functions.
"""
from __future__ import annotations

import numpy as np

from ..errors import MinilrpError
from ..engine.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
from ..engine.network import Network

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TORCH_SUPPORTED = ("Conv2d (groups=1, dilation=1, square kernel/stride/padding, zero padding), "
                   "Linear, ReLU, MaxPool2d (no padding/dilation), AvgPool2d, AdaptiveAvgPool2d "
                   "(identity or a fixed average pool for the input size), Flatten (torch.flatten, "
                   "x.view(N, -1)), Dropout and Identity (dropped), BatchNorm2d/BatchNorm1d "
                   "(folded into the preceding Conv2d/Linear)")
ONNX_SUPPORTED = ("Conv, Gemm, MatMul (+ Add of a constant bias), Relu, MaxPool, AveragePool, "
                  "GlobalAveragePool, Flatten, Reshape (to (batch, features)), BatchNormalization, "
                  "Dropout, Identity")


# ==========================================================================================
# A small intermediate form shared by both importers
# ==========================================================================================
class _Builder:
    """Collects minilrp layers while tracking the per-example shape, folds batch norms into
    the preceding linear layer, and names the source of every layer in error messages."""

    def __init__(self, input_shape, framework, supported):
        self.shape = tuple(int(s) for s in input_shape)
        self.layers = []
        self.sources = []  # source name of every layer (for messages)
        self.framework = framework
        self.supported = supported
        self.dtype = None

    def refuse(self, where, why):
        raise MinilrpError(f"{where}: {why}. Supported {self.framework} layers: {self.supported}")

    @staticmethod
    def finite(where, what, a):
        """``a`` if every value is finite; else an error naming the parameter (a NaN weight
        would make every output NaN, and the output check would blame the wrong thing)."""
        if a is None:
            return a
        a = np.asarray(a)
        bad = ~np.isfinite(a)
        if bad.any():
            n_nan = int(np.isnan(a).sum())
            raise MinilrpError(f"{where}: {what} holds {n_nan} NaN and {int(bad.sum()) - n_nan} "
                               f"infinite values (of {a.size}); minilrp refuses non-finite parameters")
        return a

    def add(self, layer, where):
        for pname, p in layer.params().items():  # values beyond the dtype's range turn into inf
            self.finite(where, f"its {pname} (in {p.dtype})", p)
        try:
            shape = layer.output_shape(self.shape)
        except MinilrpError as e:
            raise MinilrpError(f"{where}: does not fit the input it receives: {e}") from None
        self.layers.append(layer)
        self.sources.append(where)
        self.shape = shape
        return layer

    def last_linear(self, where, what):
        """The Conv2d/Dense layer a batch norm at ``where`` folds into."""
        if not self.layers or not isinstance(self.layers[-1], (Conv2d, Dense)):
            prev = f"follows {self.sources[-1]}" if self.layers else "is the first layer"
            self.refuse(where, f"{what} {prev}; minilrp folds a batch norm into the Conv2d or "
                               "Linear layer right before it, and there is none")
        return self.layers[-1]

    def fold_batchnorm(self, where, what, gamma, beta, mean, var, eps):
        """Fold y = gamma (x - mean) / sqrt(var + eps) + beta into the preceding layer."""
        layer = self.last_linear(where, what)
        n = layer.weight.shape[0]
        arrays = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (gamma, beta, mean, var)]
        if any(a.size != n for a in arrays):
            self.refuse(where, f"{what} has {arrays[2].size} channels but the preceding layer "
                               f"{self.sources[-1]} has {n} outputs")
        gamma, beta, mean, var = arrays
        if np.any(var + eps <= 0) or not all(np.all(np.isfinite(a)) for a in arrays):
            self.refuse(where, f"{what} has non-finite statistics or a non-positive variance")
        scale = gamma / np.sqrt(var + float(eps))
        dtype = layer.weight.dtype
        w = layer.weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
        b = np.zeros(n) if layer.bias is None else layer.bias.astype(np.float64)
        with np.errstate(over="ignore"):  # refused right below, by name
            layer.weight = np.ascontiguousarray(w, dtype=dtype)
            layer.bias = np.ascontiguousarray((b - mean) * scale + beta, dtype=dtype)
        for pname, p in layer.params().items():
            self.finite(where, f"folding it into {self.sources[-1]} gives a {pname} that", p)
        self.sources[-1] += f" + {where} (folded)"

    def fold_bias(self, where, bias):
        """Add a constant bias (ONNX Add after MatMul/Conv) into the preceding layer."""
        layer = self.last_linear(where, "Add")
        n = layer.weight.shape[0]
        b = np.asarray(bias, dtype=np.float64)
        squeezed = b.reshape(-1) if b.size == n else None
        ok_shapes = {(n,), (1, n)} if isinstance(layer, Dense) else {(n, 1, 1), (1, n, 1, 1)}
        if squeezed is None or b.shape not in ok_shapes:
            self.refuse(where, f"Add of a constant of shape {b.shape}: only a per-output bias of "
                               f"the preceding {type(layer).__name__} ({n} outputs) can be folded")
        old = np.zeros(n) if layer.bias is None else layer.bias.astype(np.float64)
        layer.bias = self.finite(where, f"folding it into {self.sources[-1]} gives a bias that",
                                 np.ascontiguousarray(old + squeezed, dtype=layer.weight.dtype))

    def network(self, classes, name, mean, std, input_range, provenance, input_shape):
        if not self.layers:
            raise MinilrpError(f"the {self.framework} model has no layer minilrp can run")
        if len(self.shape) != 1:
            raise MinilrpError(f"the {self.framework} model's output has shape {self.shape} per "
                               "example; minilrp needs a vector of class scores (add a Flatten?)")
        return Network(self.layers, input_shape, classes=classes, name=name, mean=mean, std=std,
                       input_range=input_range, provenance=provenance)


def _square(value, what, where, builder):
    """A scalar from an int or an (equal) pair/list: minilrp layers are square."""
    if isinstance(value, (tuple, list)):
        vals = [int(v) for v in value]
        if len(set(vals)) != 1:
            builder.refuse(where, f"non-square {what} {tuple(vals)}; minilrp supports square "
                                  f"{what}s only")
        return vals[0]
    return int(value)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# ==========================================================================================
# PyTorch
# ==========================================================================================
def _require_torch():
    try:
        import torch
    except ImportError:
        raise MinilrpError("from_torch needs PyTorch: pip install torch==2.13.0 (the CPU build; "
                           "it is an optional dependency of minilrp)") from None
    return torch


def _torch_ops(module):
    """The module's forward as a list of (qualified name, kind, payload): kind 'module'
    (payload the submodule), 'flatten' or 'relu' (functional forms), 'drop'. Traces with
    torch.fx and refuses a graph that is not a chain; falls back to the nested-Sequential
    order when fx cannot trace (the numerical check then decides)."""
    torch = _require_torch()
    import operator

    import torch.fx as fx
    import torch.nn.functional as F

    try:
        gm = fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds of errors on untraceable code
        return _children_ops(module), f"torch.fx could not trace the forward ({type(e).__name__})"

    nodes = list(gm.graph.nodes)
    # x.size(0) / x.shape[0]: batch-size helpers feeding view/reshape, not data flow
    helpers = set()
    for n in nodes:
        if n.op == "call_method" and n.target == "size":
            helpers.add(n)
        elif n.op == "call_function" and getattr(n.target, "__name__", "") == "getattr" and \
                len(n.args) > 1 and n.args[1] == "shape":
            helpers.add(n)
        elif n.op == "call_function" and n.target is operator.getitem and n.args and n.args[0] in helpers:
            helpers.add(n)

    def data_inputs(n):
        found = []
        fx.node.map_arg((n.args, n.kwargs), lambda a: found.append(a) if a not in helpers else None)
        return found

    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise MinilrpError(f"the module's forward takes {len(placeholders)} inputs; minilrp "
                           "converts a chain with one input")
    ops = []
    prev = placeholders[0]
    for n in nodes:
        if n.op == "placeholder" or n in helpers:
            continue
        if n.op == "get_attr":
            raise MinilrpError(f"the forward uses the tensor attribute '{n.target}' directly "
                               "(not through a layer); minilrp converts a plain chain of layers. "
                               f"Supported PyTorch layers: {TORCH_SUPPORTED}")
        inputs = data_inputs(n)
        if n.op == "output":
            if inputs != [prev]:
                raise MinilrpError("the module's forward does not return the end of its layer "
                                   "chain (several outputs, or an output that skips layers)")
            break
        label = _fx_label(gm, n)
        if inputs != [prev]:
            srcs = ", ".join(_fx_label(gm, i) for i in inputs) or "no tensor"
            raise MinilrpError(f"the module's forward is not a chain: {label} takes {srcs} "
                               f"where a chain would feed it only the output of "
                               f"{_fx_label(gm, prev)} (a residual/skip connection or a merge?)")
        users = [u for u in prev.users if u not in helpers]
        if len(users) != 1:
            src = "the input" if prev.op == "placeholder" else f"the output of {_fx_label(gm, prev)}"
            raise MinilrpError(f"the module's forward is not a chain: {src} feeds {len(users)} operations "
                               f"({', '.join(_fx_label(gm, u) for u in users)})")
        ops.append(_fx_op(gm, n, label, torch, F))
        prev = n
    return ops, None


def _fx_label(gm, n):
    if n.op == "placeholder":
        return "the input"
    if n.op == "call_module":
        return f"'{n.target}' ({type(gm.get_submodule(n.target)).__name__})"
    if n.op == "call_function":
        return f"'{n.name}' ({getattr(n.target, '__module__', '') or ''}.{getattr(n.target, '__name__', n.target)})".replace("(.", "(")
    if n.op == "call_method":
        return f"'{n.name}' (Tensor.{n.target})"
    return f"'{n.name}' ({n.op} {n.target})"


def _fx_op(gm, n, label, torch, F):
    if n.op == "call_module":
        return (n.target, "module", gm.get_submodule(n.target))
    args = list(n.args[1:])
    kwargs = dict(n.kwargs)
    if n.op == "call_function":
        fn = n.target
        if fn in (torch.flatten,):
            start = args[0] if args else kwargs.get("start_dim", 0)
            end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
            if start == 1 and end == -1:
                return (n.name, "flatten", None)
        elif fn in (torch.relu, F.relu, torch.relu_):
            return (n.name, "relu", None)
        elif fn in (F.dropout, torch.dropout, F.dropout2d):
            return (n.name, "drop", None)
    elif n.op == "call_method":
        if n.target == "flatten":
            start = args[0] if args else kwargs.get("start_dim", 0)
            end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
            if start == 1 and end == -1:
                return (n.name, "flatten", None)
        elif n.target in ("view", "reshape"):
            dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            if len(dims) == 2 and (dims[1] == -1 or dims[0] == -1 or
                                   isinstance(dims[0], torch.fx.Node)):
                return (n.name, "reshape", tuple(d if not isinstance(d, torch.fx.Node) else None
                                                 for d in dims))
        elif n.target in ("relu", "relu_"):
            return (n.name, "relu", None)
    raise MinilrpError(f"{label}: unsupported operation in the forward (args {n.args[1:]}). "
                       f"Supported PyTorch layers: {TORCH_SUPPORTED}")


def _children_ops(module):
    """Leaf modules in registration order, nested containers flattened (fallback when fx
    cannot trace; only the numerical check can then tell whether the forward is this chain)."""
    ops = []

    def walk(m, prefix):
        children = list(m.named_children())
        if not children:
            ops.append((prefix or type(m).__name__, "module", m))
            return
        for name, child in children:
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(module, "")
    return ops


def _convert_torch_module(b, where, m, torch):
    nn = torch.nn
    kind = type(m).__name__
    label = f"'{where}' ({kind})"

    def arr(t, pname):
        a = None if t is None else t.detach().cpu().numpy().copy()
        return b.finite(label, f"parameter '{where}.{pname}'", a)

    if isinstance(m, nn.Conv2d) and type(m) in (nn.Conv2d,):
        if m.groups != 1:
            b.refuse(label, f"groups={m.groups} (grouped/depthwise convolution)")
        if tuple(m.dilation) != (1, 1):
            b.refuse(label, f"dilation={tuple(m.dilation)}")
        if m.padding_mode != "zeros":
            b.refuse(label, f"padding_mode={m.padding_mode!r} (only zero padding)")
        k = _square(m.kernel_size, "kernel", label, b)
        s = _square(m.stride, "stride", label, b)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                p = 0
            elif k % 2 == 1:  # 'same' (PyTorch allows it with stride 1 only)
                p = (k - 1) // 2
            else:
                b.refuse(label, f"padding='same' with an even kernel {k} (asymmetric padding)")
        else:
            p = _square(m.padding, "padding", label, b)
        b.add(Conv2d(m.in_channels, m.out_channels, k, s, p, weight=arr(m.weight, "weight"),
                     bias=arr(m.bias, "bias"), use_bias=m.bias is not None), label)
    elif isinstance(m, nn.Linear) and type(m) in (nn.Linear,):
        b.add(Dense(m.in_features, m.out_features, weight=arr(m.weight, "weight"),
                    bias=arr(m.bias, "bias"), use_bias=m.bias is not None), label)
    elif type(m) is nn.ReLU:
        b.add(ReLU(), label)
    elif type(m) is nn.MaxPool2d:
        if _pair(m.padding) != (0, 0):
            b.refuse(label, f"padding={m.padding} (minilrp's MaxPool2d has no padding)")
        if _pair(m.dilation) != (1, 1):
            b.refuse(label, f"dilation={m.dilation}")
        if m.return_indices:
            b.refuse(label, "return_indices=True")
        k = _square(m.kernel_size, "kernel", label, b)
        s = _square(m.stride if m.stride is not None else m.kernel_size, "stride", label, b)
        layer = MaxPool2d(k, s)
        _check_ceil(b, label, m.ceil_mode, k, s, 0)
        b.add(layer, label)
    elif type(m) is nn.AvgPool2d:
        k = _square(m.kernel_size, "kernel", label, b)
        s = _square(m.stride if m.stride is not None else m.kernel_size, "stride", label, b)
        p = _square(m.padding, "padding", label, b)
        if p and not m.count_include_pad:
            b.refuse(label, "count_include_pad=False with padding (minilrp counts the padding)")
        if m.divisor_override is not None:
            b.refuse(label, f"divisor_override={m.divisor_override}")
        _check_ceil(b, label, m.ceil_mode, k, s, p)
        b.add(AvgPool2d(k, s, p), label)
    elif type(m) is nn.AdaptiveAvgPool2d:
        _adaptive_pool(b, label, m.output_size)
    elif type(m) is nn.Flatten:
        if (m.start_dim, m.end_dim) != (1, -1):
            b.refuse(label, f"start_dim={m.start_dim}, end_dim={m.end_dim} (only (1, -1))")
        b.add(Flatten(), label)
    elif type(m) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity):
        pass  # inference: identity
    elif type(m) in (nn.BatchNorm2d, nn.BatchNorm1d):
        if m.running_mean is None or m.running_var is None:
            b.refuse(label, "track_running_stats=False: no running statistics to fold")
        gamma = arr(m.weight, "weight") if m.affine else np.ones(m.num_features)
        beta = arr(m.bias, "bias") if m.affine else np.zeros(m.num_features)
        prev = b.layers[-1] if b.layers else None
        if type(m) is nn.BatchNorm2d and isinstance(prev, Dense):
            b.refuse(label, "BatchNorm2d after a Linear layer")
        if type(m) is nn.BatchNorm1d and isinstance(prev, Conv2d):
            b.refuse(label, "BatchNorm1d after a Conv2d layer")
        b.fold_batchnorm(label, kind, gamma, beta, arr(m.running_mean, "running_mean"),
                         arr(m.running_var, "running_var"), m.eps)
    else:
        hint = ""
        if type(m).__name__ in ("Softmax", "LogSoftmax"):
            hint = " (explanations start from the logits: drop the final softmax before converting)"
        b.refuse(label, f"unsupported layer type {type(m).__module__}.{kind}{hint}")


def _check_ceil(b, label, ceil_mode, k, s, p):
    if not ceil_mode or len(b.shape) != 3:
        return
    for n in b.shape[1:]:
        floor = (n + 2 * p - k) // s + 1
        ceil = -(-(n + 2 * p - k) // s) + 1
        if ceil != floor and (ceil - 1) * s < n + p:  # PyTorch drops a window starting in the padding
            b.refuse(label, f"ceil_mode=True changes the output size for input {b.shape[1:]} "
                            "(minilrp pools in floor mode)")


def _adaptive_pool(b, label, output_size):
    if len(b.shape) != 3:
        b.refuse(label, f"adaptive average pool on an input of shape {b.shape}")
    C, H, W = b.shape
    oh, ow = _pair(output_size)
    oh = H if oh is None else int(oh)
    ow = W if ow is None else int(ow)
    if (oh, ow) == (H, W):
        return  # identity for this input size: dropped
    if H % oh == 0 and W % ow == 0 and H // oh == W // ow:
        k = H // oh
        b.add(AvgPool2d(k, k, 0), label + f" as AvgPool2d({k})")
        return
    b.refuse(label, f"output size {(oh, ow)} from a {H}x{W} input is neither an identity nor a "
                    "fixed square average pool (input sizes must be equal multiples of the "
                    "output size)")


def from_torch(module, input_shape, classes=None, name=None, mean=None, std=None,
               input_range=None, provenance=None, check=True) -> Network:
    """Convert a PyTorch chain of layers into a minilrp Network (see the module docstring
    for what is supported).

    input_shape: (C, H, W) (or (features,)) of one example, needed to resolve adaptive
    pools and check shapes. mean/std/input_range: as for :class:`Network` (normalisation of
    raw [0, 1] pixels; the z^B box in the network's input space). Parameters keep the
    module's float dtype (float32 or float64). BatchNorm layers are folded with their running
    statistics (eval mode), whatever the module's training flag.

    check: run the module (in eval mode) and the converted network on a random input and
    refuse the conversion when the outputs differ (relative 1e-3 in float32, 1e-8 in float64):
    this catches forwards that are not the chain of their layers.
    """
    torch = _require_torch()
    if not isinstance(module, torch.nn.Module):
        raise MinilrpError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    if isinstance(module, torch.jit.ScriptModule):
        raise MinilrpError("TorchScript modules cannot be converted: pass the nn.Module itself "
                           "(or export to ONNX and use from_onnx)")
    ops, untraced = _torch_ops(module)
    b = _Builder(input_shape, "PyTorch", TORCH_SUPPORTED)
    try:
        _build_torch(b, ops, torch)
    except MinilrpError as e:
        if untraced:
            raise MinilrpError(f"{e} [{untraced}, so its layers were taken in registration "
                               "order; if the forward does more than run them in that order, "
                               "minilrp cannot convert it]") from None
        raise
    provenance = dict(provenance or {})
    provenance.setdefault("converted_from", f"PyTorch {type(module).__name__} (torch {torch.__version__})")
    net = b.network(classes, name or type(module).__name__, mean, std, input_range, provenance,
                    input_shape)
    if check:
        _check_against_torch(module, net, torch, untraced)
    return net


def _build_torch(b, ops, torch):
    for where, kind, payload in ops:
        if kind == "module":
            _convert_torch_module(b, where, payload, torch)
        elif kind == "relu":
            b.add(ReLU(), f"'{where}' (relu)")
        elif kind == "drop":
            pass
        elif kind in ("flatten", "reshape"):
            label = f"'{where}' ({kind})"
            if kind == "reshape" and payload[1] not in (-1, None) and payload[1] != int(np.prod(b.shape)):
                b.refuse(label, f"reshape to {payload} is not a flatten of {b.shape}")
            b.add(Flatten(), label)


def _check_against_torch(module, net, torch, untraced):
    params = list(module.parameters())
    tdtype = params[0].dtype if params else torch.float32
    ndtype = np.float64 if tdtype == torch.float64 else np.float32
    rng = np.random.default_rng(0)
    x = rng.uniform(net.input_low, net.input_high, size=(1,) + net.input_shape[1:] + (len(net.input_low),)) \
        if len(net.input_shape) == 3 else rng.normal(size=(1,) + net.input_shape)
    if len(net.input_shape) == 3:
        x = np.moveaxis(x, -1, 1)
    x = np.ascontiguousarray(x, dtype=ndtype)
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            try:
                ref = module(torch.from_numpy(x.copy()))
            except Exception as e:  # noqa: BLE001
                raise MinilrpError(f"the module fails on an input of shape {x.shape} "
                                   f"({type(e).__name__}: {e}); is input_shape right?") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not isinstance(ref, torch.Tensor):
        raise MinilrpError(f"the module's forward returns a {type(ref).__name__}, not a tensor")
    ref = ref.detach().cpu().numpy().astype(np.float64)
    _finite_output("the module itself", ref, ndtype)
    out = net.forward(x).astype(np.float64)
    net.clear()
    _finite_output("the converted network", out, ndtype)
    why = f" ({untraced})" if untraced else ""
    if ref.shape != out.shape:
        raise MinilrpError(f"the converted chain's output {out.shape} differs in shape from the "
                           f"module's {ref.shape}: the forward is not a plain chain of its "
                           f"layers{why}")
    err = float(np.max(np.abs(ref - out)) / max(float(np.max(np.abs(ref))), 1e-30))
    tol = 1e-8 if ndtype == np.float64 else 1e-3
    if not err <= tol:
        raise MinilrpError(f"the converted chain does not reproduce the module's output "
                           f"(relative difference {err:.3g} on a random input): the forward is "
                           f"not a plain chain of its layers (a skip connection, or an operation between layers "
                           f"that minilrp does not see){why}")


def _finite_output(who, v, dtype):
    if not np.isfinite(v).all():
        raise MinilrpError(f"{who} gives non-finite outputs on a random input of the valid "
                           f"range (overflow in {np.dtype(dtype).name}? very large weights or "
                           "biases); the conversion cannot be checked")


# ==========================================================================================
# Architectures for the command-line converter (torchvision layouts, the bundled models)
# ==========================================================================================
VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}

FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def vgg(cfg="vgg16", batch_norm=False, num_classes=1000, hidden=4096, pool=7):
    """torchvision's VGG as an nn.Module with the same state-dict keys (``features.<i>``,
    ``avgpool``, ``classifier.{0,3,6}``), built without torchvision. Weights are PyTorch's
    default initialisation; load a torchvision state dict into it. ``cfg`` may be a list
    (channel counts and "M" for max pools) and ``hidden``/``pool`` shrink the classifier, for
    VGG-like test networks."""
    torch = _require_torch()
    nn = torch.nn
    layers_cfg = VGG_CFGS[cfg] if isinstance(cfg, str) else cfg

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for v in layers_cfg:
                if v == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
                    if batch_norm:
                        layers.append(nn.BatchNorm2d(v))
                    layers.append(nn.ReLU(inplace=True))
                    c = v
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
            self.classifier = nn.Sequential(
                nn.Linear(c * pool * pool, hidden), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(hidden, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return self.classifier(x)

    return VGG()


def random_vgg_state_dict(cfg="vgg16", batch_norm=False, num_classes=1000, seed=0,
                          dtype=np.float32, widths=None, hidden=4096, pool=7) -> dict:
    """A torchvision-layout VGG state dict of random numpy arrays (no torch needed): He-normal
    convs and dense layers (std sqrt(2 / fan_in), so activations neither explode nor vanish
    with depth), small random biases and, with ``batch_norm``, non-trivial running statistics.
    Deterministic for a seed. ``widths``/``hidden``/``pool`` shrink it into a VGG-like test net
    (then build the module with :func:`vgg` and the same arguments)."""
    rng = np.random.default_rng(seed)
    layers_cfg = VGG_CFGS[cfg] if isinstance(cfg, str) else cfg
    state, c, i = {}, 3, 0

    def normal(shape, std):  # in place: no temporary copy of VGG's 400 MB matrix
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std)
        return a.astype(dtype, copy=False)

    for v in layers_cfg:
        if v == "M":
            i += 1
            continue
        state[f"features.{i}.weight"] = normal((v, c, 3, 3), np.sqrt(2.0 / (9 * c)))
        state[f"features.{i}.bias"] = normal((v,), 0.05)
        if batch_norm:
            i += 1
            state[f"features.{i}.weight"] = rng.uniform(0.5, 1.5, v).astype(dtype)
            state[f"features.{i}.bias"] = rng.uniform(-0.2, 0.2, v).astype(dtype)
            state[f"features.{i}.running_mean"] = rng.uniform(-0.3, 0.3, v).astype(dtype)
            state[f"features.{i}.running_var"] = rng.uniform(0.5, 2.0, v).astype(dtype)
            state[f"features.{i}.num_batches_tracked"] = np.array(100, dtype=np.int64)
        i += 2
        c = v
    dims = [c * pool * pool, hidden, hidden, num_classes]
    for j, (a, b) in zip((0, 3, 6), zip(dims[:-1], dims[1:])):
        state[f"classifier.{j}.weight"] = normal((b, a), np.sqrt(2.0 / a))
        state[f"classifier.{j}.bias"] = normal((b,), 0.05)
    return state


def fmnist_model(kind, dropout=True):
    """The bundled Fashion-MNIST architectures as trained by tools/train_fmnist.py (same
    nn.Sequential indices, so its state dicts load; fmnist-vgg was trained with Dropout)."""
    nn = _require_torch().nn
    if kind == "fmnist-mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    if kind == "fmnist-cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    if kind == "fmnist-vgg":
        drop = [nn.Dropout(0.3)] if dropout else []
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), *drop, nn.Linear(3136, 256), nn.ReLU(),
                             *drop, nn.Linear(256, 10))
    raise MinilrpError(f"unknown Fashion-MNIST architecture {kind!r}")


def _arch_table():
    table = {}
    for cfg in VGG_CFGS:
        for bn in (False, True):
            table[cfg + ("_bn" if bn else "")] = dict(
                build=lambda num_classes=1000, cfg=cfg, bn=bn: vgg(cfg, bn, num_classes),
                input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, classes=None)
    for kind in ("fmnist-mlp", "fmnist-cnn", "fmnist-vgg"):
        table[kind] = dict(build=lambda num_classes=10, kind=kind: fmnist_model(kind),
                           input_shape=(1, 28, 28), mean=(0.0,), std=(1.0,), classes=FMNIST_CLASSES)
    return table


ARCHITECTURES = _arch_table()
"""Architecture name -> dict(build, input_shape, mean, std, classes) for the converter."""


def build_architecture(arch, num_classes=None):
    """An nn.Module of a named architecture (``ARCHITECTURES``)."""
    spec = ARCHITECTURES.get(arch)
    if spec is None:
        raise MinilrpError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return spec["build"]() if num_classes is None else spec["build"](num_classes=num_classes)


def load_state_dict_strict(module, state_dict, what="the state dict", assign=False):
    """Load ``state_dict`` (tensors or numpy arrays) into ``module``, refusing (with every
    problem named) missing or unexpected keys and shape mismatches. ``assign``: use the given
    tensors as the parameters (no copy; for a module built on the meta device)."""
    torch = _require_torch()
    own = module.state_dict()
    state = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
             for k, v in state_dict.items()}
    problems = []
    for k, v in own.items():
        if k not in state:
            if k.endswith("num_batches_tracked"):
                continue
            problems.append(f"missing '{k}' {tuple(v.shape)}")
        elif not isinstance(state[k], torch.Tensor):
            problems.append(f"'{k}' is a {type(state[k]).__name__}, not a tensor")
        elif tuple(state[k].shape) != tuple(v.shape):
            problems.append(f"'{k}' has shape {tuple(state[k].shape)}, the architecture needs "
                            f"{tuple(v.shape)}")
    extra = [k for k in state if k not in own]
    problems += [f"unexpected '{k}'" for k in extra]
    if problems:
        more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
        raise MinilrpError(f"{what} does not fit the architecture: "
                           f"{'; '.join(problems[:6])}{more}")
    module.load_state_dict(state, strict=False, assign=assign)
    return module


# ==========================================================================================
# ONNX
# ==========================================================================================
def _require_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise MinilrpError("from_onnx needs the onnx package: pip install onnx (an optional "
                           "dependency of minilrp; PyTorch is not needed)") from None
    return onnx, numpy_helper


def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def from_onnx(path_or_model, input_shape=None, classes=None, name=None, mean=None, std=None,
              input_range=None, provenance=None, dtype=np.float32) -> Network:
    """Convert an ONNX model (a path or an ``onnx.ModelProto``) whose graph is a chain of the
    supported operators (see the module docstring) into a minilrp Network.

    input_shape: (C, H, W) of one example; taken from the graph's input when it is static
    there. Parameters are converted to ``dtype`` (float32 by default)."""
    onnx, numpy_helper = _require_onnx()
    if isinstance(path_or_model, onnx.ModelProto):
        model, source = path_or_model, "ONNX model"
    else:
        source = str(path_or_model)
        try:
            model = onnx.load(source)
        except FileNotFoundError:
            raise MinilrpError(f"{source}: no such ONNX file") from None
        except Exception as e:  # noqa: BLE001 - protobuf decode errors have many types
            raise MinilrpError(f"{source}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            a = _attrs(n)
            if "value" not in a:
                raise MinilrpError(f"ONNX node '{n.name}' (Constant): only tensor constants are supported")
            consts[n.output[0]] = numpy_helper.to_array(a["value"])
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise MinilrpError(f"the ONNX graph has {len(inputs)} data inputs "
                           f"({', '.join(i.name for i in inputs)}); minilrp converts a chain with one input")
    gin = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in gin.type.tensor_type.shape.dim]
    if input_shape is None:
        if len(dims) < 2 or any(d is None or d <= 0 for d in dims[1:]):
            raise MinilrpError(f"the ONNX input '{gin.name}' has shape {dims} with dynamic "
                               "dimensions: give input_shape=(C, H, W)")
        input_shape = tuple(dims[1:])
    input_shape = tuple(int(s) for s in input_shape)
    if len(dims) == len(input_shape) + 1:
        for d, s in zip(dims[1:], input_shape):
            if d and d != s:
                raise MinilrpError(f"input_shape {input_shape} disagrees with the ONNX input "
                                   f"'{gin.name}' of shape {dims}")
    elif dims:
        raise MinilrpError(f"input_shape {input_shape} does not fit the ONNX input '{gin.name}' "
                           f"of rank {len(dims)}")

    nodes = [n for n in g.node if n.op_type != "Constant"]
    consumers = {}
    for n in nodes:
        for t in n.input:
            if t and t not in consts:
                consumers.setdefault(t, []).append(n)

    def label(n):
        return f"ONNX node '{n.name or n.output[0]}' ({n.op_type})"

    b = _Builder(input_shape, "ONNX", ONNX_SUPPORTED)
    cur = gin.name
    visited = []
    while True:
        users = consumers.get(cur, [])
        if not users:
            break
        if len(users) > 1:
            raise MinilrpError(f"the ONNX graph branches: tensor '{cur}' feeds "
                               f"{', '.join(label(u) for u in users)}; minilrp converts chains only")
        n = users[0]
        data_in = [t for t in n.input if t and t not in consts]
        if data_in != [cur]:
            raise MinilrpError(f"the ONNX graph is not a chain: {label(n)} takes "
                               f"{', '.join(data_in)} (a merge of branches)")
        used_outputs = [o for o in n.output[1:] if o and (o in consumers or o in {x.name for x in g.output})]
        if used_outputs:
            raise MinilrpError(f"{label(n)}: its extra output {used_outputs[0]} is used; minilrp "
                               "converts chains only")
        _convert_onnx_node(b, n, label(n), consts, dtype)
        visited.append(n)
        cur = n.output[0]
    left = [n for n in nodes if n not in visited]
    if left:
        raise MinilrpError(f"{label(left[0])} is not on the chain from the input "
                           f"'{gin.name}' to the output (the graph branches or has unused parts)")
    outs = [o.name for o in g.output]
    if outs != [cur]:
        raise MinilrpError(f"the ONNX graph's outputs {outs} are not the end of its chain '{cur}'")
    provenance = dict(provenance or {})
    provenance.setdefault("converted_from", f"ONNX ({model.producer_name or 'unknown producer'} "
                                            f"{model.producer_version}), opset "
                                            f"{max((o.version for o in model.opset_import), default=0)}")
    return b.network(classes, name or g.name or "onnx-model", mean, std, input_range, provenance,
                     input_shape)


def _const(b, consts, name, where, what, dtype):
    if name not in consts:
        b.refuse(where, f"its {what} '{name}' is not a constant (initializer)")
    a = consts[name]
    if a.dtype.kind != "f":
        b.refuse(where, f"its {what} '{name}' has dtype {a.dtype}, not floating point")
    b.finite(where, f"its {what} '{name}'", a)
    with np.errstate(over="ignore"):  # refused right below, by name
        a = np.ascontiguousarray(a, dtype=dtype)
    return b.finite(where, f"its {what} '{name}' in {np.dtype(dtype).name} (values beyond its "
                           "range become infinite)", a)


def _spatial(b, where, a, key, default, n=2):
    v = list(a.get(key, [default] * n))
    if len(set(v)) != 1:
        b.refuse(where, f"non-square {key} {v}")
    return int(v[0])


def _pads(b, where, a):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        b.refuse(where, f"auto_pad={a['auto_pad']!r}; export with explicit pads")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if len(set(pads)) != 1:
        b.refuse(where, f"asymmetric or non-square pads {pads}")
    return int(pads[0])


def _convert_onnx_node(b, n, where, consts, dtype):
    op = n.op_type
    a = _attrs(n)
    if op == "Conv":
        w = _const(b, consts, n.input[1], where, "weight", dtype)
        bias = _const(b, consts, n.input[2], where, "bias", dtype) if len(n.input) > 2 and n.input[2] else None
        if w.ndim != 4:
            b.refuse(where, f"a {w.ndim - 2}-D convolution (minilrp has 2-D convolutions)")
        if a.get("group", 1) != 1:
            b.refuse(where, f"group={a['group']} (grouped/depthwise convolution)")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            b.refuse(where, f"dilations={list(a['dilations'])}")
        if w.shape[2] != w.shape[3]:
            b.refuse(where, f"non-square kernel {w.shape[2:]}")
        k = w.shape[2]
        s = _spatial(b, where, a, "strides", 1)
        p = _pads(b, where, a)
        if len(b.shape) != 3:
            b.refuse(where, f"input of shape {b.shape}")
        b.add(Conv2d(w.shape[1], w.shape[0], k, s, p, weight=w, bias=bias,
                     use_bias=bias is not None), where)
    elif op == "Gemm":
        if a.get("transA", 0):
            b.refuse(where, "transA=1")
        w = _const(b, consts, n.input[1], where, "B", dtype)
        if not a.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        w = w * dtype(a.get("alpha", 1.0))
        bias = None
        if len(n.input) > 2 and n.input[2]:
            c = _const(b, consts, n.input[2], where, "C", dtype) * dtype(a.get("beta", 1.0))
            if c.size == 1 and w.shape[0] != 1:
                c = np.full(w.shape[0], c.reshape(-1)[0], dtype)
            if c.size != w.shape[0]:
                b.refuse(where, f"bias C of shape {c.shape} for {w.shape[0]} outputs")
            bias = c.reshape(-1)
        b.add(Dense(w.shape[1], w.shape[0], weight=w, bias=bias, use_bias=bias is not None), where)
    elif op == "MatMul":
        w = _const(b, consts, n.input[1], where, "weight", dtype)
        if w.ndim != 2:
            b.refuse(where, f"a weight of shape {w.shape} (only a matrix)")
        b.add(Dense(w.shape[0], w.shape[1], weight=np.ascontiguousarray(w.T), use_bias=False), where)
    elif op == "Add":
        b.fold_bias(where, _const(b, consts, n.input[1] if n.input[1] in consts else n.input[0],
                                  where, "addend", dtype))
    elif op == "Relu":
        b.add(ReLU(), where)
    elif op == "MaxPool":
        k = _spatial(b, where, a, "kernel_shape", 1)
        s = _spatial(b, where, a, "strides", 1)
        if _pads(b, where, a):
            b.refuse(where, "padding (minilrp's MaxPool2d has no padding)")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            b.refuse(where, f"dilations={list(a['dilations'])}")
        if a.get("storage_order", 0):
            b.refuse(where, "storage_order=1")
        _check_ceil(b, where, a.get("ceil_mode", 0), k, s, 0)
        b.add(MaxPool2d(k, s), where)
    elif op == "AveragePool":
        k = _spatial(b, where, a, "kernel_shape", 1)
        s = _spatial(b, where, a, "strides", 1)
        p = _pads(b, where, a)
        if p and not a.get("count_include_pad", 0):
            b.refuse(where, "count_include_pad=0 with padding (minilrp counts the padding)")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            b.refuse(where, f"dilations={list(a['dilations'])}")
        _check_ceil(b, where, a.get("ceil_mode", 0), k, s, p)
        b.add(AvgPool2d(k, s, p), where)
    elif op == "GlobalAveragePool":
        if len(b.shape) != 3 or b.shape[1] != b.shape[2]:
            b.refuse(where, f"global pooling of a non-square input {b.shape}")
        b.add(AvgPool2d(b.shape[1], b.shape[1], 0), where)
    elif op == "Flatten":
        if a.get("axis", 1) != 1:
            b.refuse(where, f"axis={a['axis']} (only axis=1)")
        _flatten(b, where)
    elif op == "Reshape":
        shape = consts.get(n.input[1])
        if shape is None:
            b.refuse(where, "its target shape is computed, not a constant (export with "
                            "torch.flatten(x, 1) or a constant shape)")
        shape = [int(v) for v in np.asarray(shape).reshape(-1)]
        total = int(np.prod(b.shape))
        if len(shape) != 2 or shape[0] not in (0, 1, -1) or shape[1] not in (-1, total) or \
                shape == [-1, -1]:
            b.refuse(where, f"reshape to {shape}: only a flatten to (batch, {total})")
        _flatten(b, where)
    elif op in ("Dropout", "Identity"):
        if op == "Dropout" and len(n.input) > 2 and n.input[2]:
            mode = consts.get(n.input[2])
            if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                b.refuse(where, "training_mode is on (or not a constant)")
    elif op == "BatchNormalization":
        if a.get("training_mode", 0):
            b.refuse(where, "training_mode=1")
        gamma, beta, mean, var = (_const(b, consts, t, where, w, np.float64)
                                  for t, w in zip(n.input[1:5], ("scale", "B", "mean", "var")))
        b.fold_batchnorm(where, "BatchNormalization", gamma, beta, mean, var, a.get("epsilon", 1e-5))
    else:
        hint = " (explanations start from the logits: drop the softmax)" if op in ("Softmax", "LogSoftmax") else ""
        b.refuse(where, f"unsupported operator {op}{hint}")


def _flatten(b, where):
    if len(b.shape) == 1:
        return  # already flat: nothing to do
    b.add(Flatten(), where)
