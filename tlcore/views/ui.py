"""What the pages need that is not drawing: widget choices, labels, progress, and predictions.

Nothing here imports streamlit, so all of it is testable without a browser; the pages only
lay out widgets and show what these functions return.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tlcore.data import builder
from tlcore.data.images import ImageError, open_image
from tlcore.data.sources import check_data_spec
from tlcore.data.uploads import recent_uploads, save_upload, uploads_dir
from tlcore.export import bundle
from tlcore.memo import per_record_list
from tlcore.models import backbones
from tlcore.models.catalog import backbone_table
from tlcore.models.weights import WeightsUnavailable
from tlcore.names import count
from tlcore.predict import Prediction, get_predictor
from tlcore.runs import ACTIVE, RunRecord, RunStore
from tlcore.training.config import TrainConfig
from tlcore.views.charts import dataset_name, epochs_text, run_name, run_names
from tlcore.views.form import public_message

DATA_SOURCES = ("built-in", "folder on this machine", "upload a .zip", "build it here")
IMAGE_SIZES = (None, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384)
BATCH_SIZES = (4, 8, 16, 32, 64, 128, 256)
IMAGE_TYPES = ("jpg", "jpeg", "png", "gif", "webp", "bmp")
STATE_COLORS = {"queued": "gray", "running": "blue", "finished": "green", "failed": "red",
                "cancelled": "orange", "interrupted": "orange"}
THUMBNAIL = 384  # px, longest side of the picture shown beside a prediction


# ---- the Train page's choices -------------------------------------------------------------


def backbone_rows() -> dict[str, dict]:
    """`catalog.backbone_table()` keyed by backbone name."""
    return {row["name"]: row for row in backbone_table()}


def backbone_label(row: dict) -> str:
    """`resnet18 · 11.7M params · needs download` for the backbone picker."""
    size = f"{row['params'] / 1e6:.1f}M" if row["params"] >= 1e6 else f"{row['params'] / 1e3:.0f}K"
    return f"{row['name']} · {size} params · {'offline' if row['available_offline'] else 'needs download'}"


def image_size_label(size: int | None, backbone: str | None = None) -> str:
    """`224 (auto)` (the backbone's own size) for None, else `64 px`: short enough for a narrow box."""
    if size is None:
        default = backbones.get_backbone(backbone).input_size if backbone else None
        return f"{default} (auto)" if default else "auto"
    return f"{size} px"


def dataset_spec(source: str, builtin: str | None = None, folder: str | None = None, upload=None,
                 dest_dir: str | Path | None = None, earlier: str | Path | None = None,
                 built: str | None = None) -> str:
    """The dataset spec for the chosen source; raises ValueError saying what to do.

    Args:
        source: one of DATA_SOURCES.
        builtin: a name from tlcore.data.sources.BUILTIN (source "built-in").
        folder: a path typed by the user (source "folder on this machine").
        upload: the uploaded zip, anything with `.name` and `.getvalue()` (source "upload a .zip");
            it is stored by `save_upload` under a content-hash name.
        dest_dir: where uploads are stored (default `uploads.uploads_dir()`).
        earlier: a stored zip from `earlier_uploads()`, used when nothing new is uploaded.
        built: the id of a dataset built on the page (source "build it here"; see `tlcore.data.builder`).
    """
    if source == DATA_SOURCES[0]:
        if not builtin:
            raise ValueError("pick a built-in dataset")
        return builtin
    if source == DATA_SOURCES[1]:
        if not folder or not folder.strip():
            raise ValueError("type the path of a folder with one sub-folder of images per class")
        path = Path(folder.strip()).expanduser()
        if not path.exists():
            raise ValueError(f"{path} does not exist: type the path of a folder of class folders on this machine")
        if path.is_file() and path.suffix.lower() != ".zip":
            raise ValueError(f"{path.name} is a file: give a folder of class folders, or a .zip of one")
        return str(path.resolve())
    if source == DATA_SOURCES[2]:
        if upload is None and earlier is not None:
            return str(earlier)
        if upload is None:
            raise ValueError("upload a .zip with one folder of images per class first")
        return str(save_upload(upload.getvalue(), upload.name, dest_dir or uploads_dir()))
    if source == DATA_SOURCES[3]:
        if not built:
            raise ValueError("create a dataset first: name it, add classes, then add images to each")
        return builder.trainable_spec(built)
    raise ValueError(f"unknown dataset source {source!r}: choose one of {', '.join(DATA_SOURCES)}")


def earlier_uploads(dest_dir: str | Path | None = None) -> dict[str, str]:
    """{stored zip: the user's file name} of the last uploads, newest first, to pick again after a reload."""
    return {str(path): name for path, name in recent_uploads(dest_dir)}


def make_config(**values) -> TrainConfig:
    """A validated TrainConfig from widget values; raises ValueError with one line on a bad one."""
    cfg = TrainConfig(**values).validate()
    check_data_spec(cfg.data)
    return cfg


# ---- runs on the Train page ---------------------------------------------------------------


def live_ids(records: Sequence[RunRecord]) -> list[str]:
    """Ids of runs queued or running (in this process or another live one)."""
    return [r.run_id for r in records if r.state in ACTIVE]


def runs_to_show(records: Sequence[RunRecord], active: Sequence[str], limit: int = 6, show_all: bool = False,
                 hide_failed: bool = False) -> list[RunRecord]:
    """The Train page's run cards: running runs on top, then queued ones (next to start first),
    then the newest others, `limit` of those unless `show_all`; failed runs left out if asked."""
    live = [r for r in records if r.run_id in active or r.state in ACTIVE]
    # Records come newest first; the queue starts the oldest queued run next.
    running = [r for r in live if r.state == "running"]
    queued = [r for r in reversed(live) if r.state != "running"]
    rest = [r for r in records if r not in live and not (hide_failed and r.state == "failed")]
    return running + queued + (rest if show_all else rest[:limit])


def _same_label(old: RunRecord, new: RunRecord) -> bool:
    """A label reads a run's id, settings and name only: a running run reread with new epochs keeps it."""
    return old.run_id == new.run_id and old.name == new.name and old.config == new.config


@per_record_list(same=_same_label)
def run_labels(records) -> dict[str, str]:
    """{run id: label} for a set of runs (pass all runs of the folder: then a run's label is
    the same on every page); see `charts.run_names`. Computed once per run list (memo.py)."""
    return dict(zip((r.run_id for r in records), run_names(records), strict=True))


def run_time(run_id: str) -> str:
    """`2025-11-25 09:03:12` from a run id that starts with its creation time."""
    stamp = run_id[:15]
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(stamp, "%Y%m%d-%H%M%S"))
    except ValueError:
        return stamp


def run_title(run: RunRecord | dict, labels: dict[str, str] | None = None) -> str:
    """The run's label from `labels` (see `run_labels`), else
    `efficientnet_lite0 + feature_extraction on digits · 2025-11-25 09:03:12`."""
    run_id, config = (run["run_id"], run["config"]) if isinstance(run, dict) else (run.run_id, run.config)
    if labels and run_id in labels:
        return labels[run_id]
    return f"{run_name(run)} on {dataset_name(config.get('data'))} · {run_time(run_id)}"


def run_details(run: RunRecord | dict) -> str:
    """What a card says under the label: `digits · 64 px · lr 0.001 · started 2025-11-25 09:03:12`."""
    run_id, config = (run["run_id"], run["config"]) if isinstance(run, dict) else (run.run_id, run.config)
    size = config.get("image_size")
    subset = config.get("subset")
    parts = [dataset_name(config.get("data")), f"{size} px" if size else "default size",
             f"{subset} train images/class" if subset else None, f"lr {config.get('lr'):g}" if config.get("lr") else None,
             f"{config.get('head')} head", processes_text(config.get("distributed")), f"created {run_time(run_id)}"]
    return " · ".join(p for p in parts if p)


def processes_text(distributed: dict | None) -> str | None:
    """`2 GPUs (torchrun)` for a run over several processes (config["distributed"]); None for one."""
    if not distributed or distributed.get("world_size", 1) < 2:
        return None
    unit = "GPUs" if distributed.get("backend") == "nccl" else "processes"
    return f"{distributed['world_size']} {unit} (torchrun)"


def run_message(snap: dict) -> str:
    """A run's message (why it failed, that it was cancelled), with uploads named as the user named them."""
    default = "the run failed: see its log" if snap.get("status") == "failed" else ""
    return public_message(snap.get("message") or default)


def literal(text: str) -> str:
    """`text` as Streamlit markdown that shows it as it is: colons and dollar signs escaped.

    Streamlit reads `:word:` as an emoji short code and `$...$` as math: a run named ':tada:'
    showed an emoji, and any time of day ('13:31:48' holds ':31:') made a new browser fetch and
    run the emoji plugin (259 kB) before drawing the page (issue 13)."""
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("$", "\\$")


def state_badge(state: str) -> str:
    """Markdown for a coloured state label, e.g. `:green-badge[finished]`."""
    return f":{STATE_COLORS.get(state, 'gray')}-badge[{state}]"


def _pct(x) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "-"


def progress_of(snap: dict) -> tuple[float, str]:
    """(fraction done in [0, 1], one line saying where the run is) for a progress bar."""
    p = snap.get("progress") or {}
    epochs = p.get("epochs") or (snap.get("config") or {}).get("epochs") or 1
    done = len(snap.get("metrics") or [])
    if snap.get("status") == "queued":
        log = snap.get("log") or []
        return 0.0, f"preparing: {log[-1]}" if log else "queued: starts when the run before it ends"
    phase, batches = p.get("phase"), p.get("batches") or 0
    within = p.get("batch", 0) / batches if batches else 0.0
    if not phase:
        log = snap.get("log") or []
        return done / epochs, f"preparing: {log[-1]}" if log else "loading data and model"
    if phase.startswith("features"):
        # The frozen backbone runs once over all images before the epochs, which then take seconds.
        return within, f"backbone {phase}: batch {p.get('batch')}/{batches}"
    # Training takes most of an epoch, validation the rest.
    frac = (done + (0.9 * within if phase == "train" else 0.9 + 0.1 * within)) / epochs
    loss = f" · loss {p['loss']:.4f}" if isinstance(p.get("loss"), (int, float)) else ""
    return min(frac, 1.0), f"epoch {p.get('epoch')}/{epochs} · {phase} batch {p.get('batch')}/{batches}{loss}"


def track(trail: list[dict], snap: dict, now: float | None = None, keep: int = 2000) -> list[dict]:
    """Add the run's latest batch to `trail` (a list the page keeps per run) and return it.

    The page polls every second; the trail of what it saw gives the time left and the batch
    losses inside the current epoch. Each point: `t` (seconds), `kind` ("features" or
    "epochs"), `frac` (of that kind, from `progress_of`), `phase`, `x` (epochs as a fraction,
    e.g. 2.5 half-way through epoch 3) and `loss` (a training batch's, else None).
    """
    p = snap.get("progress") or {}
    if snap.get("status") != "running" or not p.get("phase") or not p.get("batches"):
        return trail
    point = {"t": time.time() if now is None else now, "phase": p["phase"],
             "kind": "features" if p["phase"].startswith("features") else "epochs",
             "frac": progress_of(snap)[0], "x": p.get("epoch", 1) - 1 + p["batch"] / p["batches"],
             "loss": p.get("loss") if p["phase"] == "train" else None, "key": (p["phase"], p.get("epoch"), p["batch"])}
    if not trail or trail[-1]["key"] != point["key"]:
        trail.append(point)
        del trail[:-keep]
    return trail


def _duration(seconds: float) -> str:
    if seconds < 5:
        return "a few seconds"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def time_left(trail: list[dict], snap: dict, now: float | None = None) -> str:
    """`about 2 min left` for a running run, from the pace seen in `trail` (see `track`) or,
    right after a reload, from its finished epochs' durations; "" while there is no telling."""
    if snap.get("status") != "running" or not trail:
        return ""
    now = time.time() if now is None else now
    last = trail[-1]
    same = [pt for pt in trail if pt["kind"] == last["kind"]]
    first = same[0]
    what = "for the backbone features" if last["kind"] == "features" else "left"
    if last["frac"] > first["frac"] and last["t"] - first["t"] >= 2:
        rate = (last["frac"] - first["frac"]) / (last["t"] - first["t"])
        return f"about {_duration(max(0.0, (1 - last['frac']) / rate - (now - last['t'])))} {what}"
    seconds = [m["seconds"] for m in snap.get("metrics") or [] if m.get("seconds")]
    if last["kind"] == "epochs" and seconds:
        epochs = (snap.get("config") or {}).get("epochs") or 1
        return f"about {_duration(sum(seconds) / len(seconds) * epochs * (1 - last['frac']))} left"
    return ""


def live_losses(trail: list[dict]) -> list[tuple[float, float]]:
    """(x in epochs, loss) of the training batches in `trail`, for the curves between epoch ends."""
    return [(pt["x"], pt["loss"]) for pt in trail if pt["loss"] is not None]


def epoch_line(snap: dict) -> str:
    """The last finished epoch's numbers in one line, or '' before the first."""
    metrics = snap.get("metrics") or []
    if not metrics:
        return ""
    m, epochs = metrics[-1], (snap.get("config") or {}).get("epochs", "?")
    return (f"epoch {m.get('epoch')}/{epochs}: train loss {m.get('train_loss', 0):.4f}, acc {_pct(m.get('train_acc'))}"
            f" · val loss {m.get('val_loss', 0):.4f}, acc {_pct(m.get('val_acc'))} · epoch took {m.get('seconds', 0):.2g} s")


def result_line(snap: dict) -> str:
    """How a run that ended did, e.g. `best val acc 93.1% at epoch 4 · 2 epochs in 12.3 s`."""
    parts = []
    if snap.get("best_val_acc") is not None:
        parts.append(f"best val acc {_pct(snap['best_val_acc'])} at epoch {snap.get('best_epoch')}")
    if snap.get("seconds") is not None:
        parts.append(f"{epochs_text(len(snap.get('metrics') or []))} in {snap['seconds']:.1f} s")
    if snap.get("num_train"):
        parts.append(f"{snap['num_train']} train / {snap.get('num_val')} val images on {snap.get('device')}")
    if snap.get("skipped"):
        parts.append(f"{count(snap['skipped'], 'file')} unreadable, skipped")
    return " · ".join(parts)


# ---- the Predict page ---------------------------------------------------------------------


def predictable_runs(records: Sequence[RunRecord], runs_dir: str | Path) -> list[RunRecord]:
    """Runs that ended with saved weights (finished, or cancelled after an epoch), newest first."""
    store = RunStore(runs_dir)
    return [r for r in records if r.state not in ACTIVE and r.class_names
            and (store.path(r.run_id) / "model.safetensors").is_file()]


def top_k_limit(class_names: Sequence[str] | None, most: int = 10) -> int:
    """The most classes worth ranking: `most`, or fewer when the run has fewer classes."""
    return min(most, len(class_names)) if class_names else most


def imagenet_backbones() -> list[str]:
    """Backbones that have a pretrained ImageNet head to predict with."""
    return [n for n in backbones.list_backbones() if backbones.class_names(backbones.get_backbone(n)) is not None]


class ModelUnavailable(ValueError):
    """The chosen model cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelChoice:
    """What to predict with: a backbone's ImageNet head, a finished run, or an exported bundle."""

    backbone: str | None = None
    run_id: str | None = None
    bundle: str | None = None  # a stored bundle zip (see `bundle_choice`) or folder
    label: str | None = None  # the bundle's name for messages: the user's file name


@dataclass
class UploadPrediction:
    """One uploaded image: a picture to show and its top-k, or the one-line reason it failed."""

    name: str
    image: Image.Image | None = None
    top: list[Prediction] = field(default_factory=list)
    imagenet: list[Prediction] | None = None  # the run's backbone on ImageNet, beside a run's top-k
    error: str | None = None


@dataclass
class PredictionReport:
    """Predictions for a batch of uploads, with the titles of the models that made them."""

    model: str
    items: list[UploadPrediction]
    imagenet_model: str | None = None
    imagenet_note: str | None = None  # why there is no ImageNet top-k beside a run


def bundle_choice(upload) -> tuple[ModelChoice, list[str]]:
    """(choice, class names) for an uploaded bundle zip (`.name`, `.getvalue()`); ModelUnavailable if unusable."""
    name, data = _read(upload)
    try:
        stored = bundle.store_upload(data, name)
        return ModelChoice(bundle=str(stored), label=name), bundle.open_bundle(stored, name).class_names
    except bundle.BundleError as exc:
        raise ModelUnavailable(str(exc)) from None


def _load(choice: ModelChoice, runs_dir: str | Path, device: str):
    if choice.bundle is not None:
        try:
            return bundle.cached_predictor(choice.bundle, label=choice.label)
        except bundle.BundleError as exc:
            raise ModelUnavailable(str(exc)) from None
    try:
        return get_predictor(backbone=choice.backbone, run_id=choice.run_id, runs_dir=runs_dir, device=device)
    except (ValueError, LookupError, OSError, RuntimeError) as exc:  # RuntimeError: WeightsUnavailable, bad weights
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelUnavailable(reason if choice.backbone else
                               f"cannot load run {choice.run_id}: {reason}. Pick another run or a backbone") from None


def _read(file) -> tuple[str, bytes]:
    if isinstance(file, tuple):
        return str(file[0]), bytes(file[1])
    data = file.getvalue() if hasattr(file, "getvalue") else file.read()
    return Path(str(getattr(file, "name", "upload"))).name, bytes(data)


def predict_uploads(files: Sequence, choice: ModelChoice, k: int = 5, runs_dir: str | Path = "runs",
                    device: str = "auto") -> PredictionReport:
    """Top-k for each uploaded image, plus ImageNet top-k of the run's backbone when a run is chosen.

    Args:
        files: uploads (anything with `.name` and `.getvalue()`, like Streamlit's UploadedFile)
            or (name, bytes) pairs.
        choice: the model; see ModelChoice.
        k: how many classes to return per image.
        runs_dir: the runs folder a run id refers to.

    Returns:
        A report with one item per file, in order; an unreadable file has `error` set and the
        others are unaffected.

    Raises:
        ModelUnavailable: the model cannot be loaded (weights missing offline, unknown run...).
    """
    predictor = _load(choice, runs_dir, device)
    imagenet, note = None, None
    if choice.run_id is not None:
        name = predictor.spec.name
        if backbones.class_names(predictor.spec) is None:
            note = f"{name} has no ImageNet head to compare with"
        else:
            try:
                imagenet = get_predictor(backbone=name, device=device)
            except (ValueError, WeightsUnavailable, OSError) as exc:
                note = f"no ImageNet top-k beside the run: {exc}"
    items, readable = [], []
    for file in files:
        name, data = _read(file)
        try:
            picture = open_image(data, name)
        except ImageError as exc:
            items.append(UploadPrediction(name, error=str(exc)))
            continue
        picture.thumbnail((THUMBNAIL, THUMBNAIL))
        items.append(UploadPrediction(name, picture))
        readable.append((len(items) - 1, name, data))
    if readable:
        names, datas = [n for _, n, _ in readable], [d for _, _, d in readable]
        tops = predictor.predict(datas, k=k, names=names)
        bases = imagenet.predict(datas, k=k, names=names) if imagenet else [None] * len(readable)
        for (i, _, _), top, base in zip(readable, tops, bases, strict=True):
            items[i].top, items[i].error = top.predictions, top.error
            items[i].imagenet = base.predictions if base is not None else None
    title = f"your model: {predictor.name}" if choice.bundle else predictor.name
    if choice.run_id is not None:
        config = RunStore(runs_dir).load(choice.run_id).config
        title = f"your run: {config.get('strategy')} on {dataset_name(config.get('data'))}"
    return PredictionReport(title, items, imagenet.name if imagenet else None, note)


# ---- Grad-CAM beside a prediction -----------------------------------------------------------


def cam_views(file, choice: ModelChoice, runs_dir: str | Path = "runs", device: str = "auto") -> list[tuple[str, object]]:
    """Grad-CAM of one upload for its top class: (title, tlcore.analysis.cam.CamResult) for the chosen model
    and, beside a run, for its backbone's ImageNet head.

    Raises:
        ModelUnavailable: the model cannot be loaded, or is an exported bundle (no gradients).
        tlcore.data.images.ImageError: the upload is not a readable image.
    """
    from tlcore.analysis.cam import grad_cam  # grad-cam loads only when a CAM is asked for

    if choice.bundle is not None:
        raise ModelUnavailable("Grad-CAM needs a backbone or a run: an exported model has no gradients to follow")
    name, data = _read(file)
    predictor = _load(choice, runs_dir, device)
    models = [("your run" if choice.run_id else predictor.name, predictor)]
    if choice.run_id is not None and backbones.class_names(predictor.spec) is not None:
        try:
            models.append((f"{predictor.spec.name} (ImageNet)", get_predictor(backbone=predictor.spec.name, device=device)))
        except (ValueError, WeightsUnavailable, OSError):
            pass  # the ImageNet top-k beside the run already says why it is missing
    return [(title, grad_cam(p, data, name)) for title, p in models]


def cam_caption(title: str, cam) -> str:
    """The caption under a Grad-CAM overlay: whose map, its class, and whether any region raised it."""
    caption = f"{title}: {cam.label} ({cam.prob:.0%})"
    # Not a blank map: the photo is unlike the class everywhere, so the map is relative (see cam.py).
    return caption if cam.raised else f"{caption}; no region raised it, the map shows where it was lowered least"
