"""LoRA: wrap a loaded model in a peft adapter, and save / load the weights that train.

    setup_lora(model, r, alpha, dropout, targets)   peft LoRA on a loaded model; base weights frozen
    load_trainable_adapter(model, folder, r, alpha) a trained adapter to go on training (--init-adapter)
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


def check_adapter(folder: str | Path, r: int, alpha: int) -> Path:
    """A LoRA adapter folder whose rank and alpha are the run's (they are in config.yaml, and a vLLM
    rollout engine is sized by the rank), or a ValueError that says what to give."""
    import json

    folder = Path(folder)
    conf = folder / "adapter_config.json"
    if not conf.is_file():
        raise ValueError(f"--init-adapter {folder}: no adapter_config.json there (give a peft LoRA adapter folder, "
                         f"e.g. a run's final/ or distill leap-t's OUT/adapter)")
    try:
        saved = json.loads(conf.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--init-adapter {conf}: unreadable ({e})") from None
    if saved.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"--init-adapter {folder}: a {saved.get('peft_type')} adapter; only LoRA adapters train here")
    if (saved.get("r"), saved.get("lora_alpha")) != (r, alpha):
        raise ValueError(f"--init-adapter {folder} has LoRA rank {saved.get('r')} and alpha {saved.get('lora_alpha')}; "
                         f"give --lora-r {saved.get('r')} --lora-alpha {saved.get('lora_alpha')}")
    return folder


def load_trainable_adapter(model, folder: str | Path, r: int, alpha: int):
    """Wrap a transformers model in the LoRA adapter saved in ``folder``, trainable: the run starts
    from it (an SFT / LeaP-T adapter before RL) instead of from lora_B = 0."""
    from peft import PeftModel

    folder = check_adapter(folder, r, alpha)
    with peft_without_deprecation_warning():
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


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
