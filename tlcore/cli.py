"""Command line: `python -m tlcore backbones | train | sweep | predict | runs | export | report | lr-find`.

Bad arguments exit with status 2 and one line that says what is valid; a run that fails
exits 1 with its message.
"""

from __future__ import annotations

import argparse
import json
import sys

from tlcore.insight_cli import add_lr_find_arguments, add_report_arguments, cmd_lr_find, cmd_report, write_cams
from tlcore.names import BACKBONES, BUILTIN, HEAD_KINDS, STRATEGIES
from tlcore.paths import runs_root
from tlcore.sweep_cli import add_sweep_arguments

# Nothing here imports torch, numpy or pandas at module level: `runs` and `--help` start in a
# fraction of a second (torch alone takes 1.5 s); each command imports what it needs.
from tlcore.training.config import AUGMENTS, DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig, default_lr

RUNS_SCREEN = 20  # `runs` lists a screenful by default


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _usage_error(message: str) -> int:
    print(f"tlcore: error: {message}", file=sys.stderr)
    return 2


def _add_runs_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default=None, help="runs folder (default: $TLCORE_RUNS or ./runs)")


def _add_run_options(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """--backbone, --strategy and every train option (train and lr-find share them)."""
    p.add_argument("--backbone", default=d.backbone, choices=BACKBONES)
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES)
    _add_train_options(p, d)


def _add_train_options(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """The settings a run takes (shared by `train` and `sweep`), except backbone and strategy."""
    p.add_argument("--data", default=d.data, help=f"{', '.join(BUILTIN)}, a folder of class folders, or a .zip")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: per strategy and optimizer, e.g. 1e-3 for feature_extraction, "
                        "1e-4 for finetune with adam)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES)
    p.add_argument("--head", default=d.head, choices=HEAD_KINDS)
    p.add_argument("--hidden", type=int, nargs="*", default=[], help="MLP head widths (default 1024 1024 512)")
    p.add_argument("--augment", default=d.augment, choices=AUGMENTS)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=DEVICES)
    p.add_argument("--subset", type=int, default=None, help="at most N training images per class")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--unfreeze-groups", type=int, default=d.unfreeze_groups, help="partial: last N groups train")
    p.add_argument("--lr-factor", type=float, default=d.lr_factor, help="discriminative/gradual LR ratio per group")
    p.add_argument("--head-epochs", type=int, default=d.head_epochs, help="gradual: head-only epochs")
    p.add_argument("--no-feature-cache", action="store_true", help="always run the full backbone")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="arithmetic: auto (bf16/fp16 autocast on CUDA, fp32 for the backbones measured slower in it; bf16 on a CPU with native bf16 for the "
                        "backbones it speeds up), fp32, or bf16")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tlcore", description="Transfer learning on images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("backbones", help="list backbones and whether their weights are available offline")
    p.add_argument("--json", action="store_true")

    d = TrainConfig()
    p = sub.add_parser("train", help="train a run and save it")
    _add_run_options(p, d)
    _add_runs_dir(p)
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on GPUs: BatchNorm layers that train average their statistics over all GPUs")
    p.add_argument("--run-id", dest="new_run_id", metavar="RUN_ID",
                   help="the new run's id (default: time-backbone-strategy-random); the app uses it to follow "
                        "the runs it launches")
    p.add_argument("--json", action="store_true", help="last line: one JSON object with the result")

    p = sub.add_parser("predict", help="top-k classes for images")
    p.add_argument("images", nargs="+")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--backbone", choices=BACKBONES)
    who.add_argument("--run", dest="run_id")
    who.add_argument("--model", help="an exported bundle folder or .zip (see `export`)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay per image to DIR/<stem>.cam.png")
    _add_runs_dir(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="write a run as a bundle: model.onnx, model.safetensors, tlcore.json, README")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--out", required=True, help="folder to write the bundle into (created)")
    p.add_argument("--format", default="onnx,safetensors", help="onnx, safetensors or both (default: both)")
    _add_runs_dir(p)
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")

    p = sub.add_parser("sweep", help="an experiment: strategies x backbones x seeds, with a verdict")
    add_sweep_arguments(p, d.backbone)
    _add_train_options(p, d)
    _add_runs_dir(p)
    p.add_argument("--json", action="store_true", help="last line: one JSON object with groups and the verdict")

    p = sub.add_parser("report", help="a run's confusion matrix, per-class table, most confused, highest losses")
    add_report_arguments(p)
    _add_runs_dir(p)

    p = sub.add_parser("lr-find", help="sweep the learning rate (fastai's lr_find) and suggest one")
    _add_run_options(p, d)
    add_lr_find_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: lrs, losses, suggested_lr")

    p = sub.add_parser("cancel", help="stop a queued or running run, whichever process trains it")
    p.add_argument("run_id", metavar="RUN_ID")
    _add_runs_dir(p)

    p = sub.add_parser("runs", help="list saved runs, newest first")
    _add_runs_dir(p)
    p.add_argument("--limit", type=int, default=None,
                   help=f"show the newest N matching runs (default {RUNS_SCREEN}; with --json all; 0: all)")
    for flag, what in (("status", "queued, running, finished, failed, cancelled, interrupted"),
                       ("backbone", "e.g. resnet18"), ("strategy", "e.g. finetune"),
                       ("data", "a built-in name, a folder's or zip's name"), ("experiment", "an experiment id")):
        p.add_argument(f"--{flag}", default=None, help=f"only runs with this {flag} ({what}); several: a,b")
    p.add_argument("--json", action="store_true")
    return parser


def cmd_backbones(args) -> int:
    from tlcore.models.catalog import backbone_table

    rows = backbone_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':20} {'params':>8} {'input':>5}  offline  weights")
    for r in rows:
        print(f"{r['name']:20} {r['params'] / 1e6:7.1f}M {r['input_size']:5}  "
              f"{'yes' if r['available_offline'] else 'no':7}  {r['weights']}")
    return 0


def _config_from_args(args) -> TrainConfig:
    return TrainConfig(
        backbone=args.backbone, data=args.data, strategy=args.strategy, epochs=args.epochs,
        batch_size=args.batch_size, lr=default_lr(args.strategy, args.optimizer) if args.lr is None else args.lr,
        optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        head=args.head, hidden=tuple(args.hidden), augment=args.augment, image_size=args.image_size,
        seed=args.seed, device=args.device, subset=args.subset, val_fraction=args.val_fraction,
        unfreeze_groups=args.unfreeze_groups, lr_factor=args.lr_factor, head_epochs=args.head_epochs,
        feature_cache=not args.no_feature_cache, precision=args.precision, sync_bn=getattr(args, "sync_bn", False),
    )


def cmd_train(args) -> int:
    from tlcore.data.sources import check_data_spec
    from tlcore.runs import validate_run_id
    from tlcore.training import distributed
    from tlcore.training.device import check_precision

    cfg = _config_from_args(args)
    try:
        cfg.validate()
        check_data_spec(cfg.data)
        if args.new_run_id is not None:
            validate_run_id(args.new_run_id)
        distributed.check_sync_bn(cfg.sync_bn, cfg.device)
        check_precision(cfg.device, cfg.precision, cfg.backbone)
    except ValueError as exc:
        return _usage_error(str(exc))
    world = distributed.init_from_env(cfg.device)  # one process of one outside torchrun
    cfg.distributed = world.describe(cfg.batch_size)
    if world.size == 1:
        return _train_main(args, cfg, world)
    distributed.leave(_train_main(args, cfg, world) if world.is_main else _train_follower(cfg, world))


def _train_main(args, cfg: TrainConfig, world) -> int:
    """The run in this process (rank 0 under torchrun): the run folder, the progress, the result."""
    from tlcore.training import distributed
    from tlcore.training.jobs import get_manager

    manager = get_manager(args.runs_dir or runs_root())
    out = sys.stderr if args.json else sys.stdout

    def show(kind: str, data: dict) -> None:
        if kind == "epoch":
            print(f"epoch {data['epoch']}/{cfg.epochs}  train loss {data['train_loss']:.4f} acc {data['train_acc']:.3f}"
                  f"  val loss {data['val_loss']:.4f} acc {data['val_acc']:.3f}  lr {data['lr']:.2g}"
                  f"  {data['seconds']:.1f}s", file=out, flush=True)
        elif kind == "log":
            print(f"  {data['message']}", file=out, flush=True)
        elif kind == "started":
            print(f"started: {len(data['class_names'])} classes, {data['num_train']} train / {data['num_val']} val"
                  f" images on {data['device']} ({data['path']})", file=out, flush=True)

    try:
        run_id = manager.submit(cfg, listener=show, run_id=args.new_run_id)
    except ValueError as exc:  # --run-id names a run that exists
        return _usage_error(str(exc))
    print(f"run {run_id} queued", file=out, flush=True)
    if world.size > 1:
        distributed.raise_on_sigterm()
    try:
        manager.wait(run_id)
    except KeyboardInterrupt:
        manager.cancel(run_id)
        manager.wait(run_id)
    except distributed.Terminated:
        # torchrun stops every process when one exits: the run failed; the others' errors are in its output.
        manager.cancel(run_id, failure=f"stopped by torchrun: another of the {world.size} training processes "
                                       "exited (its error is in torchrun's output)")
        manager.wait(run_id, timeout=20)
    snap = manager.snapshot(run_id)
    status = snap["status"]
    if status != "finished":
        print(f"run {run_id} {status}: {snap.get('message', '')}", file=sys.stderr)
    else:
        print(f"run {run_id} finished: best val acc {snap['best_val_acc']:.4f} at epoch {snap['best_epoch']}"
              f" in {snap['seconds']:.1f}s", file=out)
    if args.json:
        keys = ("status", "best_val_acc", "best_epoch", "final_val_acc", "epochs", "seconds",
                "trainable_params", "total_params", "skipped", "message")
        print(json.dumps({"run_id": run_id, **{k: snap.get(k) for k in keys}}))
    return 0 if status == "finished" else 1


def _train_follower(cfg: TrainConfig, world) -> int:
    """A torchrun process other than rank 0: trains its share in step with rank 0, writes nothing."""
    import signal

    from tlcore.training import distributed
    from tlcore.training.train import Cancelled, train

    # Ctrl-C (torchrun forwards SIGINT to every process) is rank 0's to act on: it stops between
    # batches and records the run `cancelled`; this process ends when rank 0 has left. Stopping
    # here first would fail rank 0 mid-collective instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        train(cfg, distributed.test_exit_hook(world))
    except (Cancelled, KeyboardInterrupt):
        return 1
    except Exception as exc:  # noqa: BLE001 - rank 0 records the run; this process says why it stopped
        print(f"tlcore: process {world.rank} of {world.size}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args) -> int:
    from tlcore.models.weights import WeightsUnavailable
    from tlcore.predict import get_predictor
    from tlcore.runs import RunNotFound

    if args.topk < 1:
        return _usage_error(f"--topk must be at least 1, got {args.topk}")
    if args.cam and args.model:
        return _usage_error("--cam needs --backbone or --run (an exported bundle has no gradients to follow)")
    try:
        if args.model:
            from tlcore.export.bundle import load_predictor

            predictor = load_predictor(args.model, device=args.device)
            print(f"tlcore: {predictor.name}: {predictor.model_file} on {predictor.engine}", file=sys.stderr)
        else:
            predictor = get_predictor(backbone=args.backbone, run_id=args.run_id,
                                      runs_dir=args.runs_dir or runs_root(), device=args.device)
    except RunNotFound as exc:
        return _usage_error(str(exc))
    except (ValueError, WeightsUnavailable) as exc:
        print(f"tlcore: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    results = predictor.predict(args.images, k=args.topk)
    cams = write_cams(predictor, args.images, args.cam) if args.cam else [{} for _ in results]
    if args.json:
        engine = {"engine": predictor.engine} if args.model else {}
        print(json.dumps([{**r.to_dict(), **engine, **cam} for r, cam in zip(results, cams, strict=True)]))
    else:
        for r, cam in zip(results, cams, strict=True):
            print(r.image + (f"  (Grad-CAM: {cam['cam']})" if cam.get("cam") else ""))
            if r.error:
                print(f"  error: {r.error}")
            for p in r.predictions:
                print(f"  {p.prob:6.3f}  {p.label}")
    return 1 if any(r.error for r in results) else 0


def cmd_export(args) -> int:
    from tlcore.export.write import ExportError, export_run, parse_formats
    from tlcore.runs import RunNotFound

    try:
        result = export_run(args.run_id, args.runs_dir or runs_root(), args.out, parse_formats(args.format))
    except (RunNotFound, ValueError) as exc:  # no such run, still training, bad format, damaged weights
        return _usage_error(str(exc))
    except ExportError as exc:
        print(f"tlcore: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        keys = ("bundle", "files", "max_abs_diff", "checked_images", "check_inputs", "top1_agree")
        print(json.dumps({k: result.to_dict()[k] for k in keys}))
    else:
        check = (f"; ONNX matches PyTorch on {result.checked_images} {result.check_inputs}: max |logit diff| "
                 f"{result.max_abs_diff:.2g}, top-1 agreement {result.top1_agree:.0%}" if result.max_abs_diff is not None else "")
        print(f"bundle written to {result.bundle}: {', '.join(result.files)}{check}")
    return 0


def cmd_cancel(args) -> int:
    from tlcore.runs import CANCEL_POLL_S, RunStore

    try:
        RunStore(args.runs_dir or runs_root()).request_cancel(args.run_id)
    except ValueError as exc:  # it has ended already
        return _usage_error(str(exc))
    print(f"asked the process training {args.run_id} to stop: within {CANCEL_POLL_S:g} s and its current batch "
          "it stops and records the run cancelled (`python -m tlcore runs` shows it)")
    return 0


def cmd_runs(args) -> int:
    from tlcore import run_filters
    from tlcore.names import dataset_name
    from tlcore.runs import RunStore

    try:
        flt = _runs_filter(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    if args.limit is not None and args.limit < 0:
        return _usage_error(f"--limit must be 0 (all) or more, got {args.limit}")
    matches = run_filters.apply(RunStore(args.runs_dir or runs_root()).list(), flt)
    limit = args.limit if args.limit is not None else (0 if args.json else RUNS_SCREEN)
    records = matches[:limit] if limit else matches
    rows = [{"run_id": r.run_id, "status": r.state, "backbone": r.config.get("backbone"),
             "strategy": r.config.get("strategy"), "data": r.config.get("data"),
             "epochs": len(r.metrics), "best_val_acc": r.status.get("best_val_acc"),
             "message": r.status.get("message"), "experiment_id": r.config.get("experiment_id"),
             "cell": r.config.get("cell"), "name": r.name,
             "dataset": dataset_name(r.config.get("data"))} for r in records]  # an upload by its file name
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        acc = f"{r['best_val_acc']:.3f}" if isinstance(r["best_val_acc"], float) else "-"
        exp = f"  {r['experiment_id']} seed {r['cell'].get('seed')}" if r["experiment_id"] and r["cell"] else ""
        name = f"  {r['name']!r}" if r["name"] else ""
        print(f"{r['run_id']:60} {r['status']:11} {r['dataset']:15} epochs {r['epochs']:3}  best {acc}{exp}{name}")
    if len(matches) > len(records):
        print(f"{len(matches) - len(records)} more: use --limit {len(matches)} (or --limit 0) to list them all")
    elif not matches:
        print("no runs match these filters" if flt.active else "no runs yet: `python -m tlcore train` makes one")
    return 0


def _runs_filter(args):
    """The `runs` command's filters (a run_filters.RunFilter); raises ValueError naming a bad value and the valid ones."""
    from tlcore import run_filters
    from tlcore.names import dataset_name
    from tlcore.runs import ACTIVE, FINAL

    def values(flag: str, valid=None) -> list[str]:
        given = [v.strip() for v in (getattr(args, flag) or "").split(",") if v.strip()]
        for v in given:
            if valid is not None and v not in valid:
                raise ValueError(f"unknown --{flag} {v!r}: choose from {', '.join(valid)}")
        return given

    return run_filters.RunFilter(
        status=values("status", (*ACTIVE, *FINAL)), backbone=values("backbone", BACKBONES),
        strategy=values("strategy", STRATEGIES), data=[dataset_name(v) for v in values("data")],
        experiment=values("experiment"))


def cmd_sweep(args) -> int:
    from tlcore.sweep_cli import cmd_sweep as run_sweep

    d = TrainConfig()  # each run's backbone and strategy come from the grid
    return run_sweep(args, _config_from_args(argparse.Namespace(**vars(args), backbone=d.backbone,
                                                                strategy=d.strategy)))


def _resolve_run_id(args) -> str | None:
    """Turn a unique prefix of a run id (`--run 20261127-0547`) into the id; None if ambiguous or unknown
    (after printing which runs match, or how to list them)."""
    from tlcore.runs import AmbiguousRun, RunNotFound, RunStore

    try:
        return RunStore(getattr(args, "runs_dir", None) or runs_root()).find(args.run_id)
    except (ValueError, RunNotFound, AmbiguousRun) as exc:  # ValueError: not a run id ("../etc")
        _usage_error(str(exc))
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "run_id", None):  # every command that takes a run accepts a unique prefix of its id
        args.run_id = _resolve_run_id(args)
        if args.run_id is None:
            return 2
    return {"backbones": cmd_backbones, "train": cmd_train, "predict": cmd_predict, "runs": cmd_runs,
            "cancel": cmd_cancel,
            "export": cmd_export, "sweep": cmd_sweep,
            "report": lambda a: cmd_report(a, a.runs_dir or runs_root()),
            "lr-find": lambda a: cmd_lr_find(a, _config_from_args(a))}[args.command](args)
