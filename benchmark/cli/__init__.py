"""Floor 5, the command line: ``python -m benchmark COMMAND`` (the commands: :mod:`.commands`; their shared
options: :mod:`.options`). Every error the harness can name ends the command with its message and exit status 2,
never a traceback."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from .commands import COMMANDS
from .options import add_options

EXAMPLES = """examples:
  python -m benchmark run --model efficientnet_lite0 --profile quick --limit 1   # offline demo (a few minutes on CPU)
  python -m benchmark run --model vgg16 --data /data/ILSVRC2012/val              # the paper run (GPU work)
  python -m benchmark run --model vgg16 --weights vgg16-397923af.pth --limit 50 --methods gradcam
  python -m benchmark sanity --model vgg16 --methods pcampm,gradcam --images 3      # cascading randomisation
  python -m benchmark methods                                                      # what can be computed
"""


def os_error_message(err: OSError) -> str:
    """What a file-system error means for the user, and what to do."""
    where = f" ({err.filename})" if err.filename else ""
    text = f"{err.strerror or err}{where}"
    if err.errno == errno.ENOSPC or err.errno == errno.EFBIG:
        return (f"{text}: the disk is full. Every result stored so far is intact (stores and files are written "
                "so that a failed write changes nothing); free some space and run the same command again")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{text}: cannot write there; give a writable --out folder"
    return text


def _load(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark", description="Saliency-map benchmark: maps, "
                                "insertion/deletion and the Poly-CAM paper's tables.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS:
        s = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        add_options(s, cmd.options, cmd.overrides)
        if cmd.arguments:
            _load(cmd.arguments)(s)
        s.set_defaults(handler=cmd.handler)
    return p


def main(argv: list[str] | None = None) -> int:
    from benchmark.data.errors import DataError
    from benchmark.models.bundle import ModelError
    from methods.base import MethodError
    from metrics.base import MetricError
    from runners.store import StoreError

    args = build_parser().parse_args(argv)
    try:
        return _load(args.handler)(args)
    except (DataError, ModelError, MethodError, MetricError, StoreError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system said no: a read-only or full disk, a lost mount
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything finished so far is stored; run the same command again to resume",
              file=sys.stderr)
        return 130
