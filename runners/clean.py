"""The clean stage: every selected image decoded and checked once, and one clean forward pass per image giving the
explained class (the model's top-1) and its probability, stored in ``maps.h5`` (``image_status``, ``clean/``).

Every command also binds the folder's results to the images' content: the CRC-32 of each usable image's file
(:meth:`ImageSource.fingerprint`) is recorded the first time (``image_files/content_crc``) and compared every later
time, so results are never mixed with, or scored on, other images under the same names (another ``--data``, files
replaced)."""

from __future__ import annotations

import importlib

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.core.codefiles import code_files
from benchmark.core.passes import predict
from benchmark.data.errors import DataError
from benchmark.data.sources import BadImage, format_bad_images
from benchmark.data.sources import check_images as decode_all

from .context import RunContext
from .provenance import package_versions
from .report import changed_code_files
from .store import DONE, IMAGE_FILES, IMG_BAD, IMG_OK, H5Store


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
    check_fingerprints(ctx, store, usable)
    return usable


def _decodes(ctx: RunContext, name: str) -> bool:
    """False for an image that no longer decodes (damaged since it was checked: a bad image, recorded as such where
    it is loaded, not another image)."""
    try:
        ctx.source.open(name)
    except Exception:  # noqa: BLE001 (PIL and the file system raise many types)
        return False
    return True


def check_fingerprints(ctx: RunContext, store: H5Store, usable: list[int]) -> None:
    """Record the content CRC of each usable image the first time; stop with a :class:`DataError` naming the
    images whose content differs from the recorded one (nothing is computed, every stored result is kept)."""
    store.ensure_group(IMAGE_FILES, {"content_crc": ((), "u4")},
                       {"what": "CRC-32 of each image's content (its file's bytes) when first used"})
    names = ctx.source.names
    now = {}
    for i in usable:
        try:
            now[i] = ctx.source.fingerprint(names[i])
        except Exception:  # noqa: BLE001 (unreadable since it was checked: load_chunk records it with the reason)
            continue
    st = store.status(IMAGE_FILES)
    done = [i for i in now if st[i] == DONE]
    stored, corrupt = store.read_rows(IMAGE_FILES, done) if done else ({"content_crc": []}, [])
    recorded = {i: int(c) for i, c in zip(done, stored["content_crc"], strict=True) if i not in set(corrupt)}
    changed = [names[i] for i, c in recorded.items() if c != now[i] and _decodes(ctx, names[i])]
    if changed:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise DataError(f"{len(changed)} image(s) differ from those the results in {store.path.parent} were computed "
                        f"from (same name, other content: another --data, or files replaced): {shown}. Run with the "
                        "images this folder was made with, or use another --out folder.")
    new = [i for i in now if i not in recorded]
    if new:
        store.write(IMAGE_FILES, new, content_crc=np.array([now[i] for i in new], np.uint32))


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


# what every result depends on besides its method or metric: the project modules that build the model and load the
# images (with the project files they import), and the packages that compute the results
INPUT_MODULES = ("benchmark.models", "benchmark.data.sources", "benchmark.data.preprocessing",
                 "benchmark.data.imagecache")
RESULT_PACKAGES = ("torch", "torchvision", "captum", "torchcam", "numpy", "pillow", "scikit-image",
                   "efficientnet-lite-pytorch")


def input_code() -> dict:
    """``{"files": {module: sha256}, "packages": {name: version}}`` of :data:`INPUT_MODULES` (transitively,
    :func:`benchmark.core.codefiles.code_files`) and :data:`RESULT_PACKAGES`."""
    files: dict[str, str] = {}
    for name in INPUT_MODULES:
        files.update(code_files(name, importlib.import_module(name).__file__))
    versions = package_versions()
    return {"files": dict(sorted(files.items())), "packages": {p: versions[p] for p in RESULT_PACKAGES}}


def input_change_notice(stored: dict | None, now: dict, n_done: int) -> str | None:
    """A line when the folder's ``n_done`` clean images were computed by other model or image-loading code, or
    other package versions, than ``now`` (:func:`input_code`); None when they are the same or unknown (a folder
    of an older harness)."""
    if not stored or not n_done:
        return None
    files = list(changed_code_files(stored, now))
    old = stored.get("packages") or {}
    packages = [f"{p} {old[p]} -> {now['packages'].get(p, 'not installed')}" for p in sorted(old)
                if old[p] != now["packages"].get(p, "not installed")]
    if not files and not packages:
        return None
    shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more file(s)" if len(files) > 4 else "")
    shown = "; ".join(s for s in (shown, ", ".join(packages)) if s)
    return (f"the results of this folder ({n_done} image(s)) were first computed before a change to the model, "
            f"image loading or packages that compute them ({shown}); they are reused. If the change alters them, "
            "use another --out folder.")


def ensure_targets(ctx: RunContext, store: H5Store, usable: list[int]) -> None:
    """One clean forward pass per image not done yet: the explained class (top-1) and its probability. The code it
    depends on (:func:`input_code`) is stored with the first targets; a later change of it is said (ctx.notices)."""
    now = input_code()
    store.ensure_group("clean", {"target": ((), "i8"), "prob": ((), "f4")},
                       {"what": "top-1 of the clean image", "code": now})
    notice = input_change_notice(store.group_attrs("clean").get("code"), now,
                                 int((store.status("clean") == DONE).sum()))
    if notice:
        ctx.notice(notice)
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
