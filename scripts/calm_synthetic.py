"""Train CALM-EM, CALM-ML and an ordinary CAM classifier on the synthetic pattern task and print their accuracy,
localisation scores (pointing game, energy in the box, pixel AP of the glyph's pixels) and seconds per epoch.

    python scripts/calm_synthetic.py [--epochs 6] [--seed 0] [--n-train 1536] [--json OUT.json]

See benchmark/calm_synthetic.py for the data, the models and the scores (the same code the tests use).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.calm_synthetic import run_experiment  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=1536)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    r = run_experiment(seed=a.seed, n_train=a.n_train, n_test=a.n_test, epochs=a.epochs)
    keys = ["accuracy", "pointing_game", "pointing_game_tol4", "energy_in_box", "energy_in_box_tol4", "pixel_ap",
            "seconds_per_epoch"]
    print(f"synthetic pattern task: {a.n_train} training / {a.n_test} test images 48x48, {a.epochs} epochs, "
          f"seed {a.seed}; maps: CALM jointll p(y,z|x), CAM W_y.g + b_y; the true class")
    print(f"{'model':<8}" + "".join(f"{k:>20}" for k in keys))
    for kind, name in (("em", "CALM-EM"), ("ml", "CALM-ML"), ("cam", "CAM")):
        print(f"{name:<8}" + "".join(f"{r[kind][k]:>20.4f}" for k in keys))
    if a.json:
        Path(a.json).write_text(json.dumps({k: {m: v for m, v in d.items() if m != "model"} for k, d in r.items()},
                                           indent=1))


if __name__ == "__main__":
    main()
