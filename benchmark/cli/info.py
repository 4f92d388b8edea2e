"""The commands that list: ``methods`` and ``models``."""

from __future__ import annotations

import json


def cmd_methods(args) -> int:
    from runners.factory import method_catalogue
    from runners.plugins import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    rows = method_catalogue()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        grad = "grad" if r["needs_grad"] else "no-grad"
        print(f"{r['id']:<22} {r['family']:<13} {grad:<8} {json.dumps(r['params'], default=str)}")
        print(f"{'':<22} {r['citation']}")
    return 0


def methods_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="the list as JSON")


def cmd_models(args) -> int:
    from benchmark.models import available_models
    from benchmark.models.layers import PRESETS

    print("with layer presets: " + ", ".join(["efficientnet_lite0 (auto layers)"] + sorted(PRESETS)))
    print("any torchvision classification model (layers found automatically):")
    print("  " + " ".join(available_models()))
    return 0
