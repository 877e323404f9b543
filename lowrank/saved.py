"""Save a compressed model and load it again without the original weights.

:func:`save` writes two files: ``model.safetensors`` (the compressed model's tensors, tied
weights stored once) and ``lowrank.json`` (which layers were factorised, by which scheme and at
which rank, and which tensors pruning made smaller). A Hugging Face model's config goes
beside them (``config.json``), so that loading needs no network.

:func:`load` builds the architecture from ``base`` (a module of the original architecture,
whose weights are never read, a function that makes one, a zoo entry's name, or nothing for a
Hugging Face model or a model saved with ``zoo=``), puts the factorised layers in at their
ranks, gives every tensor pruning made smaller its saved size, and reads the weights. Only
the factorised layers' modules are needed, not the solvers: a loaded model runs and exports in
a process that never imports them.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .kinds.conv1d import FactorizedConv1d
from .kinds.conv2d import FactorizedConv2d
from .kinds.linear import FactorizedLinear
from .kinds.prune import PrunedConv2d
from .version import __version__

FORMAT = 1
WEIGHTS, MANIFEST, HF_CONFIG = "model.safetensors", "lowrank.json", "config.json"


@dataclass(frozen=True)
class SavedModel:
    """Where :func:`save` wrote, and how large it is against the original."""

    directory: Path
    bytes: int  # the weights file on disk
    original_bytes: int | None  # the original's tensors (each tied tensor once), where save was given it
    layers: int  # factorised or pruned layers recorded

    @property
    def ratio(self) -> float | None:
        return self.bytes / self.original_bytes if self.original_bytes else None

    def __str__(self) -> str:
        size = f"{self.bytes / 2**20:.2f} MiB"
        if self.original_bytes:
            size += f" ({self.ratio:.1%} of the original's {self.original_bytes / 2**20:.2f} MiB)"
        return f"saved to {self.directory}: {size}, {self.layers} compressed layers"


def save(result_or_model, directory: str | Path, *, original: nn.Module | None = None, zoo: str | None = None) -> SavedModel:
    """Write a compressed model (a :class:`~lowrank.CompressionResult` or its ``.model``) to
    ``directory``. ``original``: the uncompressed model, for the size comparison only.
    ``zoo``: the zoo entry it came from, so that :func:`load` needs no ``base``."""
    from safetensors.torch import save_model

    # (a module first: a Hugging Face causal LM has a ``.model`` too, its inner network)
    model = result_or_model if isinstance(result_or_model, nn.Module) else getattr(result_or_model, "model", None)
    if not isinstance(model, nn.Module):
        raise TypeError(f"save takes a CompressionResult or an nn.Module, not {type(result_or_model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT, "lowrank": __version__, "class": type(model).__name__,
        "dtype": str(_dtype(model)).removeprefix("torch."), "training": model.training,
        "layers": _layers(model), "narrowed": _narrowed(result_or_model, model, original), "tied": _tied(model), "zoo": zoo,
        "hugging_face": _is_hugging_face(model),
    }
    if manifest["hugging_face"]:
        model.config.save_pretrained(directory)
    save_model(model, str(directory / WEIGHTS), metadata={"format": "pt"}, force_contiguous=True)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return SavedModel(directory, (directory / WEIGHTS).stat().st_size, _tensor_bytes(original) if original is not None else None,
                      len(manifest["layers"]))


def load(directory: str | Path, base: nn.Module | Callable[[], nn.Module] | str | None = None) -> nn.Module:
    """The model :func:`save` wrote to ``directory``, rebuilt on ``base``'s architecture (see
    the module doc); ``base`` itself is not changed. Raises ``ValueError`` naming the
    tensors that do not fit where ``base`` is another architecture."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    directory = Path(directory)
    if not (directory / MANIFEST).exists():
        raise FileNotFoundError(f"{directory} holds no {MANIFEST}: not a directory lowrank.save wrote")
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{directory} was saved in format {manifest.get('format')}; this lowrank ({__version__}) reads format {FORMAT}")
    model = _base(base, manifest, directory)
    model.to(getattr(torch, manifest["dtype"]))
    with safe_open(str(directory / WEIGHTS), framework="pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    for name, layer in manifest["layers"].items():
        try:
            model.set_submodule(name, _placeholder(model, name, layer, shapes))
        except (AttributeError, KeyError, TypeError, ValueError) as e:  # no such layer, or not the kind saved
            raise ValueError(f"the base model ({type(model).__name__}) has no layer {name!r} that a {layer['type']} can "
                             f"stand in for ({e}). Pass base= the architecture the compressed model came from (it was a "
                             f"{manifest['class']})") from None
    _resize(model, shapes, manifest["narrowed"] or [])
    try:
        load_model(model, str(directory / WEIGHTS), strict=True)
    except RuntimeError as e:
        hint = "" if manifest["narrowed"] is not None else (" If pruning narrowed its layers, save the CompressionResult (or pass original="
                                                 " to lowrank.save), so that the file says which.")
        raise ValueError(f"the weights in {directory} do not fit the base model ({type(model).__name__}): "
                         f"{' '.join(str(e).split())} Pass base= "
                         f"the architecture the compressed model came from (it was a {manifest['class']}).{hint}") from None
    _check_tied(model, manifest["tied"])
    return model.train(manifest["training"])


# --- what save records ---------------------------------------------------------------------

def _layers(model: nn.Module) -> dict[str, dict]:
    """The modules lowrank put in, by name: their type and what their constructor needs."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, FactorizedConv2d):  # out_channels: pruning the next layer may have narrowed it
            out[name] = {"type": "FactorizedConv2d", "rank": module.rank, "scheme": module.scheme, "out_channels": module.out_channels}
        elif isinstance(module, FactorizedConv1d):
            out[name] = {"type": "FactorizedConv1d", "rank": module.rank, "out_channels": module.out_channels}
        elif isinstance(module, FactorizedLinear):
            out[name] = {"type": "FactorizedLinear", "rank": module.rank}
        elif isinstance(module, PrunedConv2d):
            out[name] = {"type": "PrunedConv2d"}
    return out


def _narrowed(result, model: nn.Module, original: nn.Module | None) -> list[str] | None:
    """The modules pruning made narrower (a pruned conv, the layer that makes its channels, the
    norms between): from the result's plan, else by comparing with ``original``. Load resizes
    these alone, so a base of another architecture is refused, not bent to fit. None: not known
    (a bare module saved without its original)."""
    plan, table = getattr(result, "plan", None), getattr(result, "table", None)
    if plan is not None and table is not None:
        names = set()
        for row in plan.rows:
            chain = table.layers[row.name].pruning if row.scheme == "prune" and not row.dense else None
            if chain is not None:
                names |= {row.name, chain.producer, *chain.norms}
        return sorted(names)
    if original is None:
        return None
    dense = dict(original.named_modules())
    return sorted(name for name, module in model.named_modules() if name in dense and _sizes(module) != _sizes(dense[name]))


def _sizes(module: nn.Module) -> dict:
    """A module's widths, as far as pruning can change them."""
    return {key: getattr(module, key, None) for key in ("in_channels", "out_channels", "num_features", "in_features", "out_features")}


def _tied(model: nn.Module) -> list[list[str]]:
    """Names of parameters that are one tensor (a tied embedding and head)."""
    by_tensor: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(p), []).append(name)
    return [names for names in by_tensor.values() if len(names) > 1]


def _tensor_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _is_hugging_face(model: nn.Module) -> bool:
    return callable(getattr(getattr(model, "config", None), "save_pretrained", None))


# --- what load rebuilds --------------------------------------------------------------------

def _base(base, manifest: dict, directory: Path) -> nn.Module:
    if isinstance(base, nn.Module):
        return copy.deepcopy(base)
    if callable(base):
        return base()
    name = base if isinstance(base, str) else manifest.get("zoo")
    if name:
        from .zoo import get

        return get(name).builder()  # the architecture alone: its weights come from the file
    if manifest.get("hugging_face") and (directory / HF_CONFIG).exists():
        import transformers

        config = transformers.AutoConfig.from_pretrained(directory)
        return getattr(transformers, manifest["class"])(config)
    raise ValueError(f"{directory} does not say how to build its architecture (a {manifest['class']}): "
                     f"pass base= a model of that architecture, a function that makes one, or a zoo entry's name")


def _placeholder(model: nn.Module, name: str, layer: dict, shapes: dict) -> nn.Module:
    """A module of the saved layer's type at its rank, its weights to be read from the file."""
    dense = model.get_submodule(name)
    kind = layer["type"]
    if kind in ("FactorizedConv2d", "FactorizedConv1d"):
        module = FactorizedConv2d(dense, layer["rank"], layer["scheme"]) if kind == "FactorizedConv2d" else FactorizedConv1d(dense, layer["rank"])
        module.out_channels = layer["out_channels"]
        return module
    if kind == "FactorizedLinear":  # also a Hugging Face Conv1D's factorised form: sizes from the file
        rank = layer["rank"]
        in_features = shapes[f"{name}.first.weight"][1] if rank else _in_features(dense)
        out_features = shapes[f"{name}.second.weight"][0] if rank else shapes[f"{name}.second.bias"][0]
        return FactorizedLinear(in_features, out_features, rank, bias=f"{name}.second.bias" in shapes)
    if kind == "PrunedConv2d":
        return PrunedConv2d(dense, torch.zeros(shapes[f"{name}.index"], dtype=torch.long))
    raise ValueError(f"layer {name!r} was saved as a {kind}, which this lowrank ({__version__}) does not know")


def _in_features(dense: nn.Module) -> int:
    return dense.in_features if isinstance(dense, nn.Linear) else dense.weight.shape[0]  # HF Conv1D: (in, out)


def _resize(model: nn.Module, shapes: dict, narrowed: list[str]) -> None:
    """Give every tensor of the modules pruning made narrower its saved size, and the module's
    own record of its sizes (channels, features) with it."""
    for prefix, module in model.named_modules():
        if not any(prefix == name or prefix.startswith(name + ".") for name in narrowed):
            continue
        changed = False
        for kind in ("_parameters", "_buffers"):
            for key, t in getattr(module, kind).items():
                saved = shapes.get(f"{prefix}.{key}" if prefix else key)
                if t is None or saved is None or tuple(t.shape) == saved:
                    continue
                new = torch.empty(saved, dtype=t.dtype, device=t.device)
                getattr(module, kind)[key] = nn.Parameter(new, requires_grad=t.requires_grad) if kind == "_parameters" else new
                changed = True
        if changed:
            _resized(prefix, module)


def _resized(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.modules.conv._ConvNd):
        module.out_channels, module.in_channels = module.weight.shape[0], module.weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = (module.running_mean if module.running_mean is not None else module.weight).shape[0]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif not isinstance(module, (FactorizedConv2d, FactorizedConv1d)):  # (their out_channels come from the manifest)
        raise ValueError(f"the saved tensors of {name!r} ({type(module).__name__}) have other sizes than the base's, "
                         "and lowrank resizes only convs, norms and linear layers: pass base= the architecture the model came from")


def _check_tied(model: nn.Module, tied: list[list[str]]) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    for names in tied:
        if len({id(params[n]) for n in names if n in params}) != 1:
            raise ValueError(f"the parameters {names} were one tied tensor when saved but are not on the base model: "
                             "build the base with its weights tied (as its config says)")
