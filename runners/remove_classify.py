"""CALM's remove-and-classify as its own evaluation (``python -m benchmark remove-classify``), for any method, under
a named protocol (:mod:`runners.calm_protocol`, ``RC_CHOICES``; docs/calm.md).

Under ``calm`` (the authors' ``eval_remove_classify.py``) the class explained and counted is the ground-truth
label, so the maps are not the stored top-1 maps of the ``maps`` stage: they are computed here, raw, on images
resized by PIL, ranked with ``torch.topk``, against random pixels drawn from one numpy RandomState batch by batch.
Under ``harness`` it reproduces the metrics stage's ``remove_classify`` (the clean top-1, the maps as the method
normalises them, stable ranking, the paper profile's resize, random pixels seeded per image).

:func:`run_remove_classify` writes, in ``<out>/<model tag>/``: ``csv/rc_<protocol>_details_<tag>_<method>.csv``
(per image the ten correctness bits: top-k for each k, then random for each k), ``csv/rc_<protocol>_auc_<tag>_
<method>.csv`` (per image mean_k (top-k - random)) and ``remove_classify_<protocol>.json`` (the protocol with each
choice, the ratios, the clean accuracy against the labels, the label file and its sha256, the seed, the batch size,
the versions, and the sha256 of each CSV file, which the tables check before they read one). ``tables`` shows
them in the ``remove_classify`` table with the protocol of each row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmark.core.atomic import sha256_file, write_text
from benchmark.core.csvfiles import metric_csv_paths, write_curves, write_values
from benchmark.data.labels import ILSVRC_VAL_LABELS, labels_for, read_labels
from benchmark.data.sources import make_source
from benchmark.models import load_model
from methods.base import make_method
from metrics.remove_and_classify import (
    ERASE_K,
    erased_correct,
    numpy_random_masks,
    random_masks,
    ratios_from_curves,
    topk_masks,
)

from .calm_protocol import RC_CHOICES, describe, image_tensor, raw_variant, resolve
from .context import model_tag, resolve_device
from .provenance import environment

CALM_BATCH_SIZE = 64  # the authors' default --batch_size: with random=numpy it decides which pixels are drawn


def remove_classify(model, method, source, names: list[str], labels: list[int] | None, protocol: dict,
                    seed: int = 0, batch_size: int = CALM_BATCH_SIZE, ks=ERASE_K, progress: bool = False) -> dict:
    """Remove-and-classify of ``method`` on ``model`` over ``names`` of ``source`` (in order, ``batch_size`` images
    a batch) under ``protocol``. ``labels`` (one per name) are needed for ``target=label``.

    Returns {"curves": [N, 2K] 0/1, "values": [N], "ratios": {k: ratio}, "targets": [N], "clean_top1": [N]}."""
    if protocol["target"] == "label" and (labels is None or len(labels) != len(names)):
        raise ValueError("target=label needs one ground-truth label per image")
    maps_method = raw_variant(method) if protocol["maps"] == "raw" else method
    maps_method.check_applicable(model)
    rng = np.random.RandomState(seed) if protocol["random"] == "numpy" else None
    curves, targets_all, top1_all = [], [], []
    for start in tqdm(range(0, len(names), batch_size), desc=f"remove-and-classify {method.id}",
                      disable=not progress):
        chunk = names[start:start + batch_size]
        x = model.normalize(torch.stack([image_tensor(source.open(n), protocol["resize"]) for n in chunk])
                            .to(model.device))
        with torch.no_grad():
            top1 = model.net(x).argmax(dim=1)
        targets = (torch.tensor(labels[start:start + batch_size], device=x.device) if protocol["target"] == "label"
                   else top1)
        maps = maps_method(model, x, targets).to(x.device, torch.float32)
        top = topk_masks(maps, ks, protocol["ranking"])
        rnd = (numpy_random_masks(rng, tuple(maps.shape), ks).to(x.device) if rng is not None
               else random_masks(x, seed, ks))
        curves.append(erased_correct(model.net, x, torch.cat([top, rnd], dim=1), targets, batch_size).cpu())
        targets_all.append(targets.cpu())
        top1_all.append(top1.cpu())
    c = torch.cat(curves).numpy()
    k = len(ks)
    return {"curves": c, "values": (c[:, :k] - c[:, k:]).mean(axis=1), "ratios": ratios_from_curves(c, ks),
            "targets": torch.cat(targets_all).numpy(), "clean_top1": torch.cat(top1_all).numpy()}


def run_remove_classify(model_name: str, weights: str, data: str | None, image_list: str | None,
                        method_ids: list[str], protocol: dict | None = None, labels: str | None = None,
                        out: str = "results/remove_classify", seed: int = 0, batch_size: int | None = None,
                        device: str = "auto", limit: int | None = None, progress: bool = True, echo=print) -> Path:
    """Remove-and-classify of every method of ``method_ids`` on ``model_name``; returns the JSON path."""
    protocol = protocol or resolve(RC_CHOICES, "calm")
    batch_size = batch_size or CALM_BATCH_SIZE
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError("--batch-size and --limit must be >= 1")
    source = make_source(data, image_list)
    names = source.names[:limit] if limit else list(source.names)
    label_file = Path(labels) if labels else ILSVRC_VAL_LABELS
    label_list = labels_for(names, read_labels(label_file), label_file) if protocol["target"] == "label" or labels \
        else None
    dev = resolve_device(device)
    tag = model_tag(model_name, weights)
    run_dir = Path(out) / tag
    json_path = run_dir / f"remove_classify_{protocol['name']}.json"
    setup = {"model": tag, "weights": weights, "data": source.description, "images": len(names),
             "image_list": str(image_list) if image_list else None, "seed": seed, "batch_size": batch_size,
             "ks": list(ERASE_K), "protocol": {"name": protocol["name"], **describe(RC_CHOICES, protocol)},
             "labels": {"file": str(label_file), "sha256": sha256_file(label_file)} if label_list else None}
    full = json.loads(json_path.read_text()) if json_path.exists() else {**setup, "methods": {}}
    if {k: full.get(k) for k in setup} != json.loads(json.dumps(setup)):
        raise ValueError(f"{json_path} was written with other settings (model, images, seed, batch size, protocol "
                         "or labels): use another --out")
    model = load_model(model_name, weights, dev, seed=seed)
    full.update(environment=environment(dev), model_description=model.describe())
    # the record is written now and again after each method: a run that fails or is killed keeps the finished ones
    write_text(json_path, json.dumps(full, indent=1, default=str))
    for mid in method_ids:
        method = make_method(mid, seed=seed, batch_size=batch_size)
        res = remove_classify(model, method, source, names, label_list, protocol, seed, batch_size, ERASE_K, progress)
        values_path, curves_path = metric_csv_paths(run_dir / "csv", tag, f"rc_{protocol['name']}", mid, True)
        write_values(values_path, names, res["values"])
        write_curves(curves_path, names, res["curves"])
        clean = (float(np.mean(res["clean_top1"] == np.asarray(label_list))) if label_list is not None else None)
        full["methods"][mid] = {"params": method.params, "ratios": {str(k): v for k, v in res["ratios"].items()},
                                "n": len(names), "clean_accuracy": clean,
                                "csv": [str(values_path.name), str(curves_path.name)],
                                # what the tables check the files against (runners.csvcheck)
                                "csv_sha256": {p.name: sha256_file(p) for p in (values_path, curves_path)}}
        echo(f"{mid:<20} " + "  ".join(f"k={k:g}: {v:.4f}" for k, v in res["ratios"].items()))
        write_text(json_path, json.dumps(full, indent=1, default=str))
    echo(f"written: {json_path} and the rc_{protocol['name']}_* CSV files in {run_dir / 'csv'} (protocol "
         f"{protocol['name']}: " + ", ".join(f"{c.name} {protocol[c.name]}" for c in RC_CHOICES) + ")")
    return json_path
