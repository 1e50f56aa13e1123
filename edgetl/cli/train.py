"""`edgetl finetune`: transfer learning on an image folder."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, percent, table

STRATEGY_HELP = (
    "feature-extract: train only the new head (tiny data, photos close to ImageNet). "
    "finetune: train everything, pretrained layers at lr x --backbone-lr-mult (the usual best with "
    "a few hundred images per class). gradual: start frozen, unfreeze one stage from the top every "
    "--unfreeze-every epochs (little data far from ImageNet: X-rays, digits, satellite). "
    "Default: the backbone recipe's."
)


@click.command(short_help="Fine-tune a pretrained backbone on an image folder.")
@click.argument("data", type=click.Path(), required=False)
@click.option("--model", "-m", default="efficientnet_lite0", show_default=True,
              help="Backbone name (`edgetl models` lists them).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Rerun a saved config.yaml (other options are then ignored).")
@click.option("--strategy", type=click.Choice(["feature-extract", "finetune", "gradual"]), help=STRATEGY_HELP)
@click.option("--epochs", type=int, help="Maximum epochs (recipe default).")
@click.option("--batch-size", type=int, help="Global batch size, split across processes.")
@click.option("--img-size", type=int, help="Square input size in pixels (recipe default).")
@click.option("--lr", type=float, help="Peak learning rate of the new head (AdamW).")
@click.option("--backbone-lr-mult", type=float,
              help="Pretrained layers train at lr x this (discriminative learning rates; recipe default 0.1).")
@click.option("--weight-decay", type=float, help="AdamW weight decay (not applied to biases and norms).")
@click.option("--label-smoothing", type=float, help="Cross-entropy label smoothing.")
@click.option("--warmup-epochs", type=int, help="Linear warm-up before the cosine decay.")
@click.option("--patience", type=int, help="Stop after this many epochs without validation gain (0: never).")
@click.option("--unfreeze-every", type=int, default=1, show_default=True, help="gradual: epochs per unfrozen stage.")
@click.option("--augment", type=click.Choice(["none", "light", "strong"]),
              help="none: evaluation crop only; light: random crops, flips, colour; strong: + TrivialAugment, erasing.")
@click.option("--val-split", type=float, default=0.15, show_default=True, help="Validation fraction (flat layout).")
@click.option("--test-split", type=float, default=0.15, show_default=True, help="Test fraction (flat layout).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split, the initialisation and the data order.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Execution device for training (auto: cuda when a GPU is visible).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: bf16 (or fp16) autocast on a GPU, fp32 on CPU.")
@click.option("--compile/--no-compile", default=False, show_default=True, help="torch.compile the model (GPU).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="Keep image tensors in NHWC memory order (faster convolutions on most GPUs and CPUs).")
@click.option("--workers", type=int, default=-1, help="DataLoader workers (default: all cores on GPU, 0 on CPU).")
@click.option("--cache", type=click.Choice(["auto", "ram", "none"]), default="auto", show_default=True,
              help="Keep decoded training images in RAM (auto: when they fit).")
@click.option("--augment-on", type=click.Choice(["auto", "workers", "device"]), default="auto", show_default=True,
              help="Where crops, flips and colour of --augment light run: auto = on a GPU the training images "
                   "sit on the device and are cut there (no worker starves it), else in the DataLoader workers.")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="Start from ImageNet weights (--no-pretrained: random init).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local weight file instead of downloading.")
@click.option("--precise-bn/--no-precise-bn", default=None,
              help="Recompute BatchNorm statistics on 512 training images after each epoch "
                   "(default: on with --no-pretrained, off from ImageNet weights).")
@click.option("--strict", is_flag=True, help="Stop on unreadable images instead of skipping them.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<model>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt (after a crash or kill).")
@json_option
def finetune(data, config_file, resume, **options):
    """Fine-tune a pretrained backbone on DATA, a folder of class folders.

    \b
    DATA/<class>/<image>                   split here (stratified, --val-split, --test-split, --seed)
    DATA/{train,val,test}/<class>/<image>  your own splits

    Writes a run directory (config.yaml, labels, splits, best.pt, metrics, curves.png,
    confusion.png, summary.json) that export, parity and deploy read. Several GPUs:
    torchrun --nproc_per_node 4 -m edgetl finetune DATA ...
    """
    from edgetl.errors import BadInputError
    from edgetl.train import TrainConfig, finetune as run_finetune
    from edgetl.train.trainer import load_run_config

    if config_file:
        cfg = TrainConfig.from_yaml(config_file)
        if options["out"]:
            cfg.out = options["out"]
    elif resume:
        if not options["out"]:
            raise BadInputError("--resume needs --out RUN_DIR (the run to continue)")
        cfg = load_run_config(options["out"])
    else:
        if not data:
            raise BadInputError("missing DATA, the image folder to train on", "try `edgetl demo-data demo/digits` first")
        cfg = TrainConfig(data=data, **{**options, "out": options["out"] or ""})
    summary = run_finetune(cfg, resume=resume)
    table(f"finetune: {summary['model']} -> {summary['run_dir']}", ["metric", "value"], [
        ["epochs run (best)", f"{summary['epochs_run']} ({summary['best_epoch']})"],
        ["best validation accuracy", percent(summary["best_val_accuracy"])],
        ["test accuracy", percent(summary["test_accuracy"])],
        ["training images/second", summary["images_per_second"]],
        ["worst class", min(summary["per_class_accuracy"].items(), key=lambda kv: kv[1])[0]],
    ])
    return {k: v for k, v in summary.items() if k not in ("confusion", "config")}
