"""`python -m tlcore report | lr-find` and `predict --cam`: model insight from the command line.

`cli.py` builds the parsers and dispatches; the commands live here. Problems the user can fix
(unknown run, no saved results, a test folder without the run's classes) exit 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tlcore.training.config import DEVICES


def _error(message: str) -> int:
    print(f"tlcore: error: {message}", file=sys.stderr)
    return 2


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--data", default=None, help="a labelled folder or .zip to evaluate on (default: the run's "
                                                "saved validation results)")
    p.add_argument("--top", type=int, default=20, help="how many highest-loss images to list")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_report(args, runs_dir) -> int:
    from tlcore.analysis.holdout import evaluate_on
    from tlcore.analysis.report import NoResults, run_report
    from tlcore.runs import RunNotFound, RunStore

    try:
        if args.data:
            interp = evaluate_on(args.run_id, args.data, runs_dir, args.device)
        else:
            interp = run_report(RunStore(runs_dir), args.run_id)
    except (NoResults, RunNotFound, ValueError) as exc:  # ValueError: HoldoutError, DataError, FolderError
        return _error(str(exc))
    out = interp.to_dict(top=max(args.top, 0))
    if args.json:
        print(json.dumps({"run_id": args.run_id, **out}))
        return 0
    print(f"{args.run_id}: {out['source']}, {out['count']} images, accuracy {out['accuracy']:.1%}")
    width = max(5, *(len(c) for c in out["classes"]))
    print(f"\n{'class':{width}}  precision  recall     f1  support")
    for r in out["per_class"]:
        print(f"{r['class']:{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7}")
    print("\nmost confused (actual -> predicted: count)")
    for r in out["most_confused"][:10] or [{"actual": "none", "predicted": "none", "count": 0}]:
        print(f"  {r['actual']} -> {r['predicted']}: {r['count']}")
    print("\nhighest losses")
    for r in out["top_losses"][:10]:
        print(f"  {r['loss']:6.3f}  {r['true']} predicted as {r['predicted']} ({r['prob']:.0%})  {r['item']}")
    for name, n in out["unknown_folders"].items():
        print(f"note: folder '{name}' ({n} images) is not one of the run's classes: left out")
    return 0


def add_lr_find_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--num-iter", type=int, default=100, help="the most training batches to sweep over")


def cmd_lr_find(args, cfg) -> int:
    from tlcore.analysis.lr_find import lr_find
    from tlcore.data.sources import check_data_spec

    if not 0 < args.start_lr < args.end_lr or args.num_iter < 5:
        return _error("need 0 < --start-lr < --end-lr and --num-iter of at least 5")
    try:
        cfg.validate()
        check_data_spec(cfg.data)
        result = lr_find(cfg, start_lr=args.start_lr, end_lr=args.end_lr, num_iter=args.num_iter)
    except ValueError as exc:
        return _error(str(exc))
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    step = max(1, len(result.lrs) // 12)
    for lr, loss in list(zip(result.lrs, result.losses, strict=True))[::step]:
        print(f"  lr {lr:9.2e}  loss {loss:.4f}")
    print(f"suggested learning rate: {result.suggested_lr:.2e} (fastai's valley rule, over {len(result.lrs)} batches)")
    return 0


def write_cams(predictor, images: list[str], folder: str) -> list[dict]:
    """Grad-CAM overlays for each image as `folder/<stem>.cam.png`: {cam, cam_peak, cam_label, cam_raised}
    or {cam_error}."""
    from tlcore.analysis.cam import grad_cam

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    extras = []
    for image in images:
        try:
            result = grad_cam(predictor, image, Path(image).name)
        except (OSError, ValueError) as exc:  # an ImageError, no CAM layer, or a 1 x 1 map
            extras.append({"cam_error": str(exc)})
            continue
        path = out_dir / f"{Path(image).stem}.cam.png"
        result.overlay.save(path)
        extras.append({"cam": str(path), "cam_peak": list(result.peak), "cam_label": result.label,
                       "cam_raised": result.raised})
    return extras
