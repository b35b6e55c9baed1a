"""``ssl-zoo pretrain-decoder RECIPE``: pre-train the synth decoder with the encoder frozen.

Paper, Appendix B.2: before encoder training the decoder is trained on the target data with the
encoder's parameters fixed, MSE reconstruction loss, Adam, batch 128, 200 epochs, images only
resized. This module contributes the recipe changes (Adam, constant lr) and runs the tiny ``SSLMethod``
``ssl_zoo.methods.decoder.DecoderPretraining`` (frozen encoder + decoder, one "plain" view; its
docstring says how the frozen encoder's BatchNorm behaves); the one training loop ``ssl_zoo.train.train``
does the rest (checkpoints, ``--resume``, multi-process). At the end the decoder is exported as
``OUTPUT/decoder.safetensors``, which a synth run loads with ``--set decoder_weights=...``.

``ssl-zoo train <synth recipe>`` runs this stage itself (``run_decoder_stage``) into
``RUN/decoder_pretrain`` for the recipe's ``decoder_pretrain_epochs`` when no decoder is given.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The decoder and the stage's method live below both this command and the synth add-on (one-way imports).
from .methods.decoder import DecoderPretraining
from .parsers.decoder_pretrain import configure_parser
from .recipe import Recipe

DECODER_FILE = "decoder.safetensors"
STAGE_DIR = "decoder_pretrain"  # inside a synth run folder
DEFAULT_EPOCHS = 200  # paper
ADAM_LR = 1e-3  # the paper's value is not legible; Adam's usual default


def pretraining_overrides(recipe: Recipe, epochs: int | None = None, lr: float = ADAM_LR) -> dict[str, Any]:
    """Recipe changes for the decoder stage: its own name, Adam at a constant lr, no weight decay."""
    if recipe.method != "synth":
        raise ValueError(f"Recipe {recipe.name!r} uses method {recipe.method!r}; pretrain-decoder needs a synth "
                         f"recipe (`ssl-zoo list '*synth*'`).")
    recipe_epochs = int(recipe.method_args.get("decoder_pretrain_epochs") or DEFAULT_EPOCHS)
    n_epochs = epochs if epochs is not None else recipe_epochs
    return {"name": f"{recipe.name}_decoder", "description": f"decoder pre-training for {recipe.name}",
            "train": {"optimizer": "adam", "base_lr": lr, "lr_batch_denom": recipe.train.batch_size,
                      "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 0.0, "epochs": n_epochs}}


def build_pretraining_method(recipe: Recipe) -> DecoderPretraining:
    """The recipe's encoder (with its ``backbone.init``) frozen, in the BatchNorm groups of the synth run's base,
    and a fresh decoder shaped like synth's."""
    from .factory import create_backbone
    from .methods import method_parameters

    args = recipe.method_args
    channels = args.get("decoder_channels", method_parameters("synth")["decoder_channels"])
    base = str(args.get("base", method_parameters("synth")["base"]))
    # The base's own default when the recipe leaves it out (MoCo v2 / LeOCLR: 32; SimSiam has no such argument).
    base_args = {**method_parameters(base), **dict(args.get("base_args") or {})}
    return DecoderPretraining(create_backbone(recipe), image_size=recipe.image_size, decoder_channels=channels,
                              bn_group_size=base_args.get("bn_group_size"))


def save_decoder(decoder: nn.Module, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}, str(path))
    return path


def export_decoder_from_checkpoint(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``decoder.safetensors`` from a synth (or pre-training) run's ``checkpoint.pt``."""
    from .checkpoint import load_checkpoint

    state = load_checkpoint(run_dir)["model"]
    dec = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    if not dec:
        raise ValueError(f"The checkpoint in {run_dir} holds no decoder (keys 'decoder.*'): it is not a synth run.")
    from safetensors.torch import save_file

    path = Path(out) if out is not None else Path(run_dir) / DECODER_FILE
    save_file({k: v.contiguous() for k, v in dec.items()}, str(path))
    return path


def pretrain_decoder(recipe_or_name: str | Recipe, *, data: str | None = None, epochs: int | None = None,
                     batch_size: int | None = None, lr: float = ADAM_LR, output: str | Path | None = None,
                     resume: bool | str | Path = False, max_steps: int | None = None,
                     overrides: dict[str, Any] | None = None, **train_kwargs: Any) -> dict[str, Any]:
    """Run the decoder stage through ``ssl_zoo.train.train``; returns its summary plus ``"decoder"``."""
    from .train import resolve_recipe, train

    recipe = resolve_recipe(recipe_or_name, batch_size=batch_size, overrides=overrides)
    stage = recipe.with_overrides(**pretraining_overrides(recipe, epochs, lr))
    out_dir = Path(output) if output is not None else Path("runs") / stage.name
    # Same seed as train() uses, so a resumed run rebuilds the same initial decoder before loading.
    torch.manual_seed(train_kwargs.get("seed", 0))
    method = build_pretraining_method(stage)
    result = train(stage, data=data, output=out_dir, resume=resume, max_steps=max_steps, method=method,
                   **train_kwargs)
    if not result["interrupted"]:
        from .distributed import rank
        if rank() == 0:
            save_decoder(method.decoder, out_dir / DECODER_FILE)
        result["decoder"] = str(out_dir / DECODER_FILE)
    return result


def run_decoder_stage(recipe: Recipe, run_dir: str | Path, *, epochs: int, resume: bool = False,
                      **train_kwargs: Any) -> tuple[Path | None, dict[str, Any] | None]:
    """The decoder stage of a synth run: ``(decoder file, None)``, or ``(None, result)`` if interrupted.

    With ``resume`` a finished stage is skipped and an interrupted one continues from its checkpoint.
    """
    from .checkpoint import CHECKPOINT_NAME

    stage_dir = Path(run_dir) / STAGE_DIR
    done = stage_dir / DECODER_FILE
    if resume and done.is_file():
        return done, None
    stage_resume = resume and (stage_dir / CHECKPOINT_NAME).is_file()
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process
        print(f"{recipe.name}: pre-training the decoder for {epochs} epochs (encoder frozen) into {stage_dir}"
              + (" (resuming)" if stage_resume else ""))
    result = pretrain_decoder(recipe, output=stage_dir, epochs=epochs, resume=stage_resume, **train_kwargs)
    if result["interrupted"]:
        return None, result
    return Path(result["decoder"]), None


def run_cli(args: argparse.Namespace) -> int:
    from .errors import SslZooError, report_user_error
    from .train import parse_overrides

    try:
        result = pretrain_decoder(args.recipe, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                                  lr=args.lr, output=args.output, resume=args.resume, max_steps=args.max_steps,
                                  overrides=parse_overrides(args.overrides), num_workers=args.num_workers,
                                  seed=args.seed)
    except (SslZooError, ValueError, TypeError, KeyError, OSError, RuntimeError) as exc:
        return report_user_error(exc)
    if result["interrupted"]:
        return 3
    print(f"Decoder saved to {result['decoder']}. Use it with: ssl-zoo train {args.recipe} "
          f"--set decoder_weights={result['decoder']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_zoo.decoder_pretrain", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run_cli(parser.parse_args(argv))


__all__ = ["DecoderPretraining", "pretrain_decoder", "run_decoder_stage", "pretraining_overrides",
           "build_pretraining_method",
           "save_decoder", "export_decoder_from_checkpoint", "configure_parser", "run_cli"]

if __name__ == "__main__":
    sys.exit(main())
