"""The clean stage: every selected image decoded and checked once, and one clean forward pass per image giving the
explained class (the model's top-1) and its probability, stored in ``maps.h5`` (``image_status``, ``clean/``)."""

from __future__ import annotations

from tqdm.auto import tqdm

from benchmark.core.passes import predict
from benchmark.data.errors import DataError
from benchmark.data.sources import check_images as decode_all
from benchmark.data.sources import format_bad_images

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


def ensure_targets(ctx: RunContext, store: H5Store, usable: list[int]) -> None:
    """One clean forward pass per image not done yet: the explained class (top-1) and its probability."""
    store.ensure_group("clean", {"target": ((), "i8"), "prob": ((), "f4")}, {"what": "top-1 of the clean image"})
    st = store.status("clean")
    todo = [i for i in usable if st[i] != DONE]
    if not todo:
        return
    bs = ctx.batch_size
    bar = ctx.bar(len(todo), "clean forward (targets)")
    for start in range(0, len(todo), bs):
        chunk = todo[start:start + bs]
        ctx.prefetch(todo[start + bs:start + 2 * bs])
        with ctx.autocast():
            cls, prob = predict(ctx.model.net, ctx.load_images(chunk), bs)
        store.write("clean", chunk, target=cls.cpu().numpy(), prob=prob.cpu().numpy())
        bar.update(len(chunk))
    bar.close()


def prepare(ctx: RunContext, store: H5Store) -> list[int]:
    """Image checks, then the clean forward of the usable images; returns them."""
    usable = check_images(ctx, store)
    ensure_targets(ctx, store, usable)
    return usable
