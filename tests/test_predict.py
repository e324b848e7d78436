"""Top-k prediction with a finished run's model and with an ImageNet head."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tlcore.predict import get_predictor, run_predictor
from tlcore.training.jobs import JobManager

CLASSES = ["cat", "coffee", "rocket"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_class_folders, tiny_config) -> tuple[Path, str, Path]:
    """(runs folder, run id, image folder) of a simple_cnn run trained on the three photo classes."""
    base = tmp_path_factory.mktemp("predict")
    folder = make_class_folders(base / "photos", per_class=4)
    manager = JobManager(base / "runs")
    run_id = manager.submit(tiny_config(data=str(folder), epochs=2, subset=None))
    assert manager.wait(run_id, timeout=120)
    assert manager.snapshot(run_id)["status"] == "finished"
    return base / "runs", run_id, folder


def _images(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))[:3]


def test_probabilities_over_all_classes_sum_to_one(finished_run) -> None:
    runs, run_id, folder = finished_run
    predictor = get_predictor(run_id=run_id, runs_dir=runs, device="cpu")
    assert predictor.class_names == CLASSES
    for result in predictor.predict(_images(folder), k=3):
        assert result.error is None
        assert sorted(p.label for p in result.predictions) == CLASSES
        probs = [p.prob for p in result.predictions]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert probs == sorted(probs, reverse=True)


@pytest.mark.parametrize(("k", "expected"), [(1, 1), (2, 2), (50, 3), (0, 1)])
def test_k_is_clamped_to_the_class_count(finished_run, k: int, expected: int) -> None:
    runs, run_id, folder = finished_run
    [result] = get_predictor(run_id=run_id, runs_dir=runs, device="cpu").predict(_images(folder)[:1], k=k)
    assert len(result.predictions) == expected


def test_unreadable_image_gets_an_error_and_the_others_are_predicted(finished_run) -> None:
    runs, run_id, folder = finished_run
    good = _images(folder)
    predictor = get_predictor(run_id=run_id, runs_dir=runs, device="cpu")
    results = predictor.predict([good[0], b"definitely not an image", good[1]], k=2,
                                names=["a.png", "notes.jpg", "b.png"])
    assert [r.image for r in results] == ["a.png", "notes.jpg", "b.png"]
    assert results[1].error and "notes.jpg" in results[1].error and results[1].predictions == []
    assert results[0].error is None and len(results[0].predictions) == 2
    assert results[2].error is None and len(results[2].predictions) == 2
    assert results[1].to_dict()["error"] == results[1].error
    assert "error" not in results[0].to_dict()


def test_path_bytes_and_file_objects_give_the_same_answer(finished_run) -> None:
    runs, run_id, folder = finished_run
    path = _images(folder)[0]
    predictor = get_predictor(run_id=run_id, runs_dir=runs, device="cpu")
    upload = io.BytesIO(path.read_bytes())
    upload.name = path.name
    by_path, by_bytes, by_file = predictor.predict([path, path.read_bytes(), upload], k=3)
    assert by_file.image == path.name
    for other in (by_bytes, by_file):
        assert [p.label for p in other.predictions] == [p.label for p in by_path.predictions]
        assert [p.prob for p in other.predictions] == pytest.approx([p.prob for p in by_path.predictions])


def test_warm_predictor_is_reused(finished_run) -> None:
    runs, run_id, _ = finished_run
    first = get_predictor(run_id=run_id, runs_dir=runs, device="cpu")
    assert get_predictor(run_id=run_id, runs_dir=runs, device="cpu") is first
    assert get_predictor(backbone="efficientnet_lite0", device="cpu") is not first
    with pytest.raises(ValueError, match="exactly one"):
        get_predictor(backbone="efficientnet_lite0", run_id=run_id, runs_dir=runs)


def test_run_predictor_matches_the_run_config(finished_run) -> None:
    runs, run_id, _ = finished_run
    predictor = run_predictor(run_id, runs, device="cpu")
    assert predictor.resize == 32 and predictor.make_batch.crop == 32  # the run's image_size
    assert predictor.spec.name == "simple_cnn" and not predictor.model.training


def test_imagenet_head_probabilities_sum_to_one(png_bytes) -> None:
    predictor = get_predictor(backbone="efficientnet_lite0", device="cpu")
    [result] = predictor.predict([png_bytes("astronaut")], k=1000)
    assert len(result.predictions) == 1000 and len({p.label for p in result.predictions}) == 1000
    assert sum(p.prob for p in result.predictions) == pytest.approx(1.0, abs=1e-3)


def test_backbone_without_imagenet_head_is_refused() -> None:
    with pytest.raises(ValueError, match="no pretrained ImageNet head"):
        get_predictor(backbone="simple_cnn", device="cpu")
