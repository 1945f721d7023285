"""Train Sandstorm's built-in model: ``python -m desktop.training --out models/builtin``.

Stages (each resumable: an existing VAE or tokenizer in the work folder is reused unless
``--fresh``):

1. tokenizer — a word-level ``CLIPTokenizer`` for the domain's vocabulary;
2. VAE — ``AutoencoderKL`` 64×64 -> 8×8×4 (``--vae-minutes``);
3. UNet + text encoder — DDPM epsilon objective with CFG dropout and EMA
   (``--unet-minutes``); every ``--save-every`` minutes the EMA weights are exported to
   ``--out`` and probed on held-out prompts, so a usable model exists at any time;
4. preview factors, loss curve, sample grid and the held-out evaluation.

Sub-commands: ``python -m desktop.training train-controlnet ...`` trains the built-in model's
scribble ControlNet (``desktop/training/train_controlnet.py``);
``python -m desktop.training evaluate-controlnet ...`` runs its held-out evaluation
(``desktop/training/evaluate_controlnet.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from desktop.training import data, evaluate, export, plots
from desktop.training.tokenizer import load_tokenizer, write_tokenizer


def _probe(pipe, workdir: Path, step: int, elapsed: float, count: int = 27) -> dict:
    """Quick held-out check with the in-memory pipeline (default sampler, steps and CFG)."""
    d = export.DEFAULTS
    generate = evaluate.pipeline_generator(
        pipe, d["default_sampler"], d["default_steps"], d["default_cfg"]
    )
    result = evaluate.evaluate(generate, data.evaluation_cases(count), batch=count)
    record = {"step": step, "minutes": round(elapsed / 60, 1), **result["accuracy"]}
    with (workdir / "probe.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    print("\nprobe " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in record.items()), flush=True)  # fmt: skip
    return record


def _load_trained(workdir: Path) -> tuple:
    """The UNet and text encoder a previous run saved in ``workdir`` (float32)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    if not (workdir / "unet" / "config.json").is_file():
        raise SystemExit(f"--reuse-unet: no trained UNet in {workdir / 'unet'}")
    unet = UNet2DConditionModel.from_pretrained(workdir / "unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(
        workdir / "text_encoder", torch_dtype=torch.float32
    )
    return unet.eval(), text_encoder.eval()


SUBCOMMANDS = {
    "train-controlnet": "desktop.training.train_controlnet",
    "evaluate-controlnet": "desktop.training.evaluate_controlnet",
}


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[args_list[0]])
        return int(module.main(args_list[1:]))
    parser = argparse.ArgumentParser(prog="python -m desktop.training", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models/builtin"))
    parser.add_argument(
        "--figures", type=Path, default=Path("models/figures"),
        help="where the loss curve and the sample grid go (kept out of the model folder)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("training-runs/builtin"))
    parser.add_argument("--vae-minutes", type=float, default=14.0)
    parser.add_argument("--unet-minutes", type=float, default=58.0)
    parser.add_argument("--decoder-minutes", type=float, default=8.0)
    parser.add_argument("--save-every", type=float, default=10.0, help="minutes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--cache-size", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=2, help="2 on an idle 2-core machine; 1 if it is busy"
    )
    parser.add_argument("--eval-count", type=int, default=64)
    parser.add_argument("--fresh", action="store_true", help="retrain the VAE and tokenizer")
    parser.add_argument(
        "--reuse-unet", action="store_true",
        help="keep the UNet and text encoder of the work folder's last run (then only the "
        "decoder fine-tune, export and evaluation run)",
    )  # fmt: skip
    args = parser.parse_args(args_list)
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    torch.set_num_threads(args.threads)
    workdir: Path = args.workdir
    if args.fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    from diffusers import AutoencoderKL

    from desktop.training.train_unet import train_unet
    from desktop.training.train_vae import finetune_decoder, train_vae

    tokenizer = load_tokenizer(write_tokenizer(workdir / "tokenizer", data.VOCABULARY))
    if not (workdir / "vae" / "config.json").exists():
        train_vae(workdir, args.vae_minutes, seed=args.seed)
    vae = AutoencoderKL.from_pretrained(workdir / "vae").eval()
    ceiling = evaluate.reconstruction_accuracy(vae, data.evaluation_cases(args.eval_count))
    print("VAE reconstructions of the evaluation scenes: "
          + " ".join(f"{k}={v:.2f}" for k, v in ceiling.items()), flush=True)  # fmt: skip

    def checkpoint(unet, text_encoder, step: int, elapsed: float) -> None:
        export.export_model(args.out, vae, text_encoder, tokenizer, unet)
        pipe = export.make_pipeline(vae, text_encoder, tokenizer, unet)
        _probe(pipe, workdir, step, elapsed)

    if args.reuse_unet:
        unet, text_encoder = _load_trained(workdir)
        stats = json.loads((workdir / "unet_stats.json").read_text(encoding="utf-8"))
    else:
        unet, text_encoder, stats = train_unet(
            workdir,
            args.unet_minutes,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            cache_size=args.cache_size,
            save_every_minutes=args.save_every,
            on_checkpoint=checkpoint,
        )
        unet.save_pretrained(workdir / "unet")
        text_encoder.save_pretrained(workdir / "text_encoder")
    if args.decoder_minutes > 0:
        finetune_decoder(workdir, args.decoder_minutes, seed=args.seed)
        # The encoder (and so the latents the UNet learned) is unchanged.
        vae = AutoencoderKL.from_pretrained(workdir / "vae").eval()
        ceiling = evaluate.reconstruction_accuracy(vae, data.evaluation_cases(args.eval_count))
        print("after the decoder fine-tune: "
              + " ".join(f"{k}={v:.2f}" for k, v in ceiling.items()), flush=True)  # fmt: skip
    export.export_model(args.out, vae, text_encoder, tokenizer, unet)
    print(f"model written to {args.out} ({export.folder_size(args.out) / 2**20:.1f} MiB)")
    args.figures.mkdir(parents=True, exist_ok=True)
    plots.loss_curve(workdir, args.figures / "builtin-loss-curve.png")

    generate = evaluate.engine_generator(args.out)
    cases = data.evaluation_cases(args.eval_count)
    result = evaluate.evaluate(generate, cases)
    evaluate.image_grid(result["images"]).save(args.figures / "builtin-samples.png")
    table = evaluate.format_table(result["accuracy"], len(cases))
    print(table)
    summary = {
        **stats,
        "total_minutes": round((time.perf_counter() - started) / 60, 1),
        "accuracy": result["accuracy"],
        "vae_reconstruction_accuracy": ceiling,
        "seconds_per_picture": result["seconds"] / len(cases),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
