"""LoRA: wrap a loaded model in a peft adapter, and save / load the weights that train.

    setup_lora(model, r, alpha, dropout, targets)   peft LoRA on a loaded model; base weights frozen
    trainable_parameters(model)                     the parameters the optimizer updates (LoRA only)
    enable_activation_checkpointing(model)          recompute activations in the backward (saves memory)
    save_weights(model, folder) / load_weights      a peft model's adapter (adapter_model.safetensors),
                                                    a plain model's full weights (model.safetensors)

lora_B starts at zero, so the wrapped model computes exactly what the base model does until the
first update; `model.disable_adapter()` gives the base model back (the trainers' KL reference).
"""

from __future__ import annotations

from pathlib import Path

import torch

from crosspath.models import peft_without_deprecation_warning


def setup_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0,
               target_modules: list[str] | str = "all-linear"):
    """Wrap a transformers model in a peft LoRA adapter; only the LoRA weights train.

    target_modules: "all-linear" (every linear layer but the output head, as in QLoRA/TRL) or
    module names such as ["q_proj", "v_proj"]. lora_B starts at zero, so the wrapped model
    computes exactly what the base model does until the first update.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(target_modules, (list, tuple)) and list(target_modules) == ["all-linear"]:
        target_modules = "all-linear"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    with peft_without_deprecation_warning():  # peft's own read of a deprecated transformers attribute
        return get_peft_model(model, config)


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in the backward (non-reentrant), with the name transformers has now
    (`activation_checkpointing_enable`; `gradient_checkpointing_enable` before 5.2x)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_weights(model, folder: Path) -> None:
    """A peft model saves its adapter only; a plain model its full weights."""
    model.save_pretrained(folder, safe_serialization=True)


def load_weights(model, folder: Path) -> None:
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
