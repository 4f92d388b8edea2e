"""Train CALM-EM, CALM-ML and an ordinary CAM classifier on a synthetic pattern task (``distractor``: a glyph per
class and one shared distractor; ``pairs``: two families of two classes, a family body shared by siblings and a
glyph per class), over one or several seeds, and print their accuracy, localisation scores (pointing game, energy in
the box, pixel AP of the glyph's pixels; how often the map's peak is on the shared glyph instead), where CALM's cue
head p(z|x) alone points, and seconds per epoch, per seed and as a mean over seeds, with how many seeds CALM beats
CAM on each score.

    python scripts/calm_synthetic.py [--task distractor|pairs] [--calm-init scratch|cam] [--epochs 6] [--seeds 0,1,2]
                                     [--optimizer reference|adam] [--kinds em,ml,cam] [--n-train 1536]
                                     [--json OUT.json]

See runners/calm_synthetic.py for the data, the models and the scores (the same code the tests use).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from runners.calm_synthetic import CALM_INITS, OPTIMIZERS, TASKS, run_experiment  # noqa: E402

KEYS = ["accuracy", "pointing_game", "pointing_game_tol4", "energy_in_box", "energy_in_box_tol4", "pixel_ap",
        "pointing_game_on_shared", "seconds_per_epoch"]
NAMES = {"em": "CALM-EM", "ml": "CALM-ML", "cam": "CAM"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="distractor", choices=TASKS)
    p.add_argument("--calm-init", default="scratch", choices=CALM_INITS,
                   help="scratch: CALM from a random trunk; cam: CALM fine-tuned from the trained CAM classifier")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--optimizer", default="reference", choices=OPTIMIZERS)
    p.add_argument("--kinds", default="em,ml,cam")
    p.add_argument("--n-train", type=int, default=1536)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    kinds = tuple(a.kinds.split(","))
    print(f"synthetic pattern task {a.task}: {a.n_train} training / {a.n_test} test images 48x48, {a.epochs} epochs, "
          f"CALM from {a.calm_init}, optimizer {a.optimizer}, seeds {seeds}; maps: CALM jointll p(y,z|x), "
          "CAM W_y.g + b_y; the true class",
          flush=True)
    runs = {}
    for seed in seeds:
        r = run_experiment(seed=seed, n_train=a.n_train, n_test=a.n_test, epochs=a.epochs, kinds=kinds,
                           optimizer=a.optimizer, task=a.task, calm_init=a.calm_init)
        runs[seed] = {k: {m: v for m, v in d.items() if m != "model"} for k, d in r.items()}
        print(f"\nseed {seed}\n{'model':<8}" + "".join(f"{k:>24}" for k in KEYS))
        for kind in kinds:
            print(f"{NAMES[kind]:<8}" + "".join(f"{runs[seed][kind][k]:>24.4f}" for k in KEYS), flush=True)
    print(f"\nmean over {len(seeds)} seed(s)\n{'model':<8}" + "".join(f"{k:>24}" for k in KEYS))
    for kind in kinds:
        print(f"{NAMES[kind]:<8}" + "".join(f"{np.mean([runs[s][kind][k] for s in seeds]):>24.4f}" for k in KEYS))
    calm = [k for k in kinds if k != "cam"]
    if calm:
        cue = ["cue_pointing_game", "cue_energy_in_box", "cue_peak_over_mean", "joint_cells_near_peak",
               "p_class_at_peak", "p_class_at_glyph", "p_class_at_shared"]
        print(f"\nCALM's cue head p(z|x) alone, and the top of its jointll map, mean over {len(seeds)} seed(s)\n"
              f"{'model':<8}"
              + "".join(f"{k:>24}" for k in cue))
        for kind in calm:
            print(f"{NAMES[kind]:<8}" + "".join(f"{np.mean([runs[s][kind][k] for s in seeds]):>24.4f}" for k in cue))
    if "cam" in kinds:
        for kind in (k for k in kinds if k != "cam"):
            wins = {k: sum(runs[s][kind][k] > runs[s]["cam"][k] for s in seeds) for k in KEYS[1:-2]}
            print(f"seeds where {NAMES[kind]} > CAM: " + ", ".join(f"{k} {v}/{len(seeds)}" for k, v in wins.items()))
    if a.json:
        meta = {"task": a.task, "calm_init": a.calm_init, "epochs": a.epochs, "optimizer": a.optimizer}
        Path(a.json).write_text(json.dumps({**meta, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
