"""The clean stage: every selected image decoded and checked once, and one clean forward pass per image giving the
explained class (the model's top-1) and its probability, stored in ``maps.h5`` (``image_status``, ``clean/``)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from benchmark.core.passes import predict
from benchmark.data.errors import DataError
from benchmark.data.sources import BadImage, format_bad_images
from benchmark.data.sources import check_images as decode_all

from .context import RunContext
from .store import DONE, IMG_BAD, IMG_OK, H5Store


def check_images(ctx: RunContext, store: H5Store) -> list[int]:
    """Decode every selected image not yet known good; stop on bad ones unless --skip-bad-images. Returns the
    usable rows."""
    status = store.f["image_status"][()]
    todo = [i for i in ctx.indices if status[i] != IMG_OK]
    bad = decode_all(ctx.source, [ctx.source.names[i] for i in todo], progress=ctx.cfg.progress)
    bad_by_name = {b.name: b.reason for b in bad}
    marks = {i: ((IMG_BAD, bad_by_name[ctx.source.names[i]]) if ctx.source.names[i] in bad_by_name
                 else (IMG_OK, "")) for i in todo}
    store.mark_images(marks)
    if bad and not ctx.cfg.skip_bad_images:
        raise DataError(format_bad_images(bad))
    status = store.f["image_status"][()]
    usable = [i for i in ctx.indices if status[i] == IMG_OK]
    skipped = len(ctx.indices) - len(usable)
    if skipped:
        tqdm.write(f"skipping {skipped} bad image(s), recorded in {store.path} (image_status, image_error)")
    return usable


def load_chunk(ctx: RunContext, store: H5Store, rows: list[int]) -> tuple[list[int], torch.Tensor | None,
                                                                          dict[int, str]]:
    """``(rows that loaded, their images [B,3,H,W] on the device, {row: reason} of those that did not)``.

    An image checked good earlier can go bad (replaced, truncated, a lost mount). It is then marked bad in
    ``store`` (``image_status``) with the reason; with ``--skip-bad-images`` the stage records it for the rows it
    computes and goes on with the others, otherwise the command stops with a :class:`DataError` naming it (every
    result computed before is stored)."""
    if not rows:
        return [], None, {}
    try:
        return list(rows), ctx.load_images(rows), {}
    except Exception as err:  # noqa: BLE001 (find the image(s) that fail, one by one)
        first = err
    good, xs, bad = [], [], {}
    for i in rows:
        try:
            xs.append(ctx.load_images([i]))
            good.append(i)
        except Exception as err:  # noqa: BLE001 (PIL and the file system raise many types)
            bad[i] = f"image unreadable since it was checked: {type(err).__name__}: {err}"
    if not bad:  # every image loads alone: not an image problem
        raise first
    store.mark_images({i: (IMG_BAD, reason) for i, reason in bad.items()})
    if not ctx.cfg.skip_bad_images:
        raise DataError(format_bad_images([BadImage(ctx.source.names[i], r) for i, r in bad.items()]))
    return good, (torch.cat(xs) if xs else None), bad


def ensure_targets(ctx: RunContext, store: H5Store, usable: list[int]) -> None:
    """One clean forward pass per image not done yet: the explained class (top-1) and its probability."""
    store.ensure_group("clean", {"target": ((), "i8"), "prob": ((), "f4")}, {"what": "top-1 of the clean image"})
    store.verify("clean", usable)  # a target failing its checksum is marked corrupt and computed again
    st = store.status("clean")
    todo = [i for i in usable if st[i] != DONE]
    if not todo:
        return
    bs = ctx.batch_size
    with ctx.progress.item("clean forward (targets)", len(todo), len(todo), key="clean") as bar:
        for start in range(0, len(todo), bs):
            chunk = todo[start:start + bs]
            ctx.prefetch(todo[start + bs:start + 2 * bs])
            rows, x, _ = load_chunk(ctx, store, chunk)
            if rows:
                with ctx.autocast():
                    cls, prob = predict(ctx.model.net, x, bs)
                store.write("clean", rows, target=cls.cpu().numpy(), prob=prob.cpu().numpy())
            bar.images(len(chunk))


def prepare(ctx: RunContext, store: H5Store) -> list[int]:
    """Image checks, then the clean forward of the usable images; returns them."""
    usable = check_images(ctx, store)
    ensure_targets(ctx, store, usable)
    ctx.progress.settle("clean")
    return usable
