"""The paper's own images: the authors' list is the default, and a run's stored top-1 classes are compared with the
ones the authors published (exactly, on fabricated results folders)."""

import json

import numpy as np
import pytest

from benchmark.data.authors import IMAGENET1K_V1, authors_names, authors_top1
from benchmark.data.lists import AUTHORS_LIST
from runners.agreement import agreement, check_folder, summary
from runners.store import H5Store

VGG_SHA = IMAGENET1K_V1["vgg16"] + "0" * 56


def fabricate(run_dir, model="vgg16", weights_sha=VGG_SHA, names=None, changed=(), limit=None, antialias=False):
    """A results folder whose maps.h5 holds the authors' top-1 classes as its clean targets, except ``changed``."""
    names = names or authors_names()
    ref = authors_top1("vgg16" if model not in ("vgg16", "resnet50") else model)
    run_dir.mkdir(parents=True)
    with H5Store(run_dir / "maps.h5", names, {"protocol": {}}) as st:
        st.ensure_group("clean", {"target": ((), "i8"), "prob": ((), "f4")}, {})
        rows = list(range(limit or len(names)))
        targets = np.array([(ref.get(names[i], 0) + 1) % 1000 if names[i] in changed else ref.get(names[i], 0)
                            for i in rows])
        st.write("clean", rows, target=targets, prob=np.full(len(rows), 0.5, np.float32))
    prov = {"protocol": {"profile": {"name": "paper", "image_size": 224, "antialias": antialias}},
            "model": {"model": model, "weights_sha256": weights_sha}}
    (run_dir / "provenance.json").write_text(json.dumps(prov))
    return run_dir


def test_all_but_two_agree_and_exactly_those_two_are_named(tmp_path):
    names = authors_names()
    two = [names[17], names[1234]]
    res = check_folder(fabricate(tmp_path / "vgg16", changed=two))
    ref = authors_top1("vgg16")
    assert res["comparable"] and (res["compared"], res["equal"], res["differ_count"]) == (2000, 1998, 2)
    assert res["differ"] == [{"image": n, "ours": (ref[n] + 1) % 1000, "authors": ref[n]} for n in two]
    assert res["agreement"] == pytest.approx(0.999) and "warning" not in res
    assert summary(res) == ("top-1 agreement with the authors' vgg16: 1998 of 2000 images (99.90 %); differ: "
                            f"{two[0]}, {two[1]}")


def test_below_99_percent_warns_with_the_usual_causes(tmp_path):
    names = authors_names()
    res = check_folder(fabricate(tmp_path / "vgg16", changed=names[:30], limit=1000))  # --limit 1000
    assert res["compared"] == 1000 and res["equal"] == 970 and len(res["differ"]) == 20
    assert "97.0 %" in res["warning"] and "antialiasing" in res["warning"] and "IMAGENET1K_V1" in res["warning"]


@pytest.mark.parametrize("kw, reason", [
    (dict(model="efficientnet_lite0"), "vgg16 and resnet50 only (this run: efficientnet_lite0)"),
    (dict(weights_sha="ab" * 32), "not torchvision's IMAGENET1K_V1 vgg16 weights"),
    (dict(names=["chelsea.png", "coffee.png"]), "not the authors' polycam_images.txt (0 of its 2 names"),
    (dict(antialias=True), "preprocessing differs"),
])
def test_other_models_weights_lists_or_preprocessing_are_not_comparable(tmp_path, kw, reason):
    res = check_folder(fabricate(tmp_path / "run", **kw))
    assert res == {"comparable": False, "reason": res["reason"]} and reason in res["reason"]
    assert summary(res).startswith("top-1 agreement with the authors: not comparable (")


def test_the_authors_list_is_the_default_and_is_recorded(tmp_path):
    from runners.context import RunConfig, RunContext

    folder = tmp_path / "val"
    folder.mkdir()
    ctx = RunContext(RunConfig(model="efficientnet_lite0", data=str(folder), out=str(tmp_path), progress=False,
                               batch_size=2))
    assert ctx.source.names == authors_names() and len(ctx.source.names) == 2000
    assert ctx.source.list_path == AUTHORS_LIST and ctx.source.origin == "--data"
    prov = ctx.provenance()
    assert prov["image_list_name"] == "polycam_images.txt" and prov["image_list_is_authors"] is True
    assert prov["image_list_sha256"] == "7588d4bcf2790e98eec7b50947f45ccdfc42ac22ed3dc3f18859f79f9c5191d3"


def test_the_paper_profile_needs_data(monkeypatch):
    from benchmark.data.errors import DataError
    from runners.context import RunConfig, RunContext

    monkeypatch.delenv("BENCHMARK_DATA", raising=False)
    with pytest.raises(DataError, match="give --data DIR .* or set \\$BENCHMARK_DATA; for the demo photos use "
                                        "--profile quick, or --data demo"):
        RunContext(RunConfig(model="efficientnet_lite0", progress=False))
    assert RunContext(RunConfig(model="efficientnet_lite0", data="demo", progress=False)).source.origin == "--data"
    quick = RunContext(RunConfig(model="efficientnet_lite0", profile="quick", progress=False))
    assert quick.source.origin == "no --data given" and len(quick.source.names) == 5


def test_status_top1_checks_a_finished_folder(tmp_path):
    from conftest import run_cli

    names = authors_names()
    fabricate(tmp_path / "vgg16", changed=[names[5]])
    res = run_cli("status", "--top1", "--no-verify", tmp_path / "vgg16")
    assert res.returncode == 0, res.stderr
    ref = authors_top1("vgg16")
    assert "1999 of 2000 images (99.95 %)" in res.stdout
    assert f"  {names[5]}: ours {(ref[names[5]] + 1) % 1000}, the authors' {ref[names[5]]}" in res.stdout


def test_the_shipped_files_are_the_authors():
    assert len(authors_names()) == 2000 and len(set(authors_names())) == 2000
    for model in ("vgg16", "resnet50"):
        top1 = authors_top1(model)
        assert list(top1) == authors_names() and all(0 <= c < 1000 for c in top1.values())
    assert agreement("vgg16", VGG_SHA, 224, False, authors_names(), {})["reason"] == "no clean top-1 stored yet"
