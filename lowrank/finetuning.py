"""Evaluation and recovery: the entry's metric, and fine-tuning with optional distillation."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .util.inputs import call_model, class_loss, main_output, take


def evaluate(model: nn.Module, entry, limit: int | None = None) -> float:
    """The zoo entry's metric on its test split (first ``limit`` samples if given)."""
    return entry.evaluate(model, limit=limit)


def distillation_loss(student_logits, teacher_logits, targets, kd: float, temperature: float):
    """(1 - kd) * cross-entropy + kd * T^2 * KL(teacher || student) on softened outputs; a
    language model's (batch, length, vocabulary) logits are scored per position."""
    task = class_loss(student_logits, targets)
    if kd <= 0:
        return task
    if student_logits.dim() > 2:  # one distribution a position, averaged like the task loss
        student_logits = student_logits.reshape(-1, student_logits.shape[-1])
        teacher_logits = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, -1), F.log_softmax(teacher_logits / temperature, -1),
        reduction="batchmean", log_target=True,
    ) * temperature**2
    return (1 - kd) * task + kd * soft


#: The recipe for an entry that names none (the zoo's CNNs); an entry's ``finetune_recipe``
#: overrides it (a language model trains at a far smaller rate, in smaller batches).
RECIPE = {"lr": 1e-3, "batch_size": 128, "temperature": 4.0, "train": "all", "clip": None}
TRAIN_CHOICES = ("all", "factors")


def trainable(model: nn.Module, train: str) -> list[nn.Parameter]:
    """The parameters a fine-tune updates: ``all``, or ``factors`` (only the factorised layers'
    thin factors; everything else, embeddings and dense layers included, stays as it is)."""
    if train not in TRAIN_CHOICES:
        raise ValueError(f"train must be one of {TRAIN_CHOICES}, got {train!r}")
    if train == "all":
        return [p for p in model.parameters() if p.requires_grad]
    from .kinds.conv1d import FactorizedConv1d
    from .kinds.conv2d import FactorizedConv2d
    from .kinds.linear import FactorizedLinear

    factorised = (FactorizedLinear, FactorizedConv1d, FactorizedConv2d)
    params = [p for m in model.modules() if isinstance(m, factorised) for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train='factors' found no factorised layer in the model; use train='all'")
    return params


def recipe_for(entry, **given) -> dict:
    """The fine-tuning settings by name: each given one (not None), else the entry's
    ``finetune_recipe``, else :data:`RECIPE`."""
    own = getattr(entry, "finetune_recipe", None) or {}
    unknown = sorted(set(own) - set(RECIPE))
    if unknown:  # a misspelt setting would otherwise fall back to the default unnoticed
        raise ValueError(f"zoo entry {getattr(entry, 'name', entry)!r}: finetune_recipe has unknown setting(s) "
                         f"{', '.join(map(repr, unknown))}; the settings are {', '.join(sorted(RECIPE))}")
    recipe = {**RECIPE, **own}
    return {k: recipe[k] if given.get(k) is None else given[k] for k in RECIPE}


def _checked_kd(kd: float | None, teacher, epochs: int) -> float:
    """The distillation weight (default 0.5 with a teacher, else 0), refused where it cannot work."""
    if kd is None:
        kd = 0.5 if teacher is not None else 0.0
    if not 0.0 <= kd <= 1.0:
        raise ValueError(f"kd must be a weight in [0, 1], got {kd}")
    if kd > 0 and teacher is None:
        raise ValueError("kd > 0 needs a teacher model (e.g. the uncompressed original)")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    return kd


def finetune(
    result, entry, epochs: int = 1, teacher: nn.Module | None = None, kd: float | None = None,
    temperature: float | None = None, lr: float | None = None, batch_size: int | None = None,
    samples_per_epoch: int | None = None, seed: int = 0, progress: bool = True, eval_limit: int | None = None,
    train: str | None = None, clip: float | None = None,
) -> list[float]:
    """Fine-tune a compressed model on the entry's train split; returns the metric after each epoch.

    ``result`` is a CompressionResult (its model is trained in place) or a model. With a
    ``teacher`` (usually the uncompressed original), ``kd`` (default 0.5) weighs the
    soft-target KL against the task loss. ``samples_per_epoch`` caps an epoch's length (for
    quick runs). ``train='factors'`` updates only the factorised layers. ``clip`` caps the
    gradient norm. Whatever is left ``None`` comes from the entry's ``finetune_recipe``, else
    :data:`RECIPE`.
    """
    model = result if isinstance(result, nn.Module) else result.model  # (a Hugging Face model has a .model too: its trunk)
    settings = recipe_for(entry, lr=lr, batch_size=batch_size, temperature=temperature, train=train, clip=clip)
    lr, batch_size, temperature, train, clip = (settings[k] for k in ("lr", "batch_size", "temperature", "train", "clip"))
    kd = _checked_kd(kd, teacher, epochs)
    params = trainable(model, train)
    teacher = copy.deepcopy(teacher).eval() if teacher is not None else None
    x, y = entry.splits.train
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = len(y) if samples_per_epoch is None else min(len(y), samples_per_epoch)
    steps = (n + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)[:n]
        bar = tqdm(range(steps), desc=f"fine-tune {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for s in bar:
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb, yb = take(x, idx), y[idx]
            out = call_model(model, xb)  # moved to the model's device
            yb = yb.to(main_output(out).device)
            if teacher is not None and kd > 0:
                with torch.no_grad():
                    t_out = call_model(teacher, xb)
                loss = distillation_loss(main_output(out), main_output(t_out), yb, kd, temperature)
            else:
                loss = class_loss(main_output(out), yb)
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        history.append(evaluate(model, entry, limit=eval_limit))
    return history
