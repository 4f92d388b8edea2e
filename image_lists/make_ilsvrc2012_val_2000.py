"""Draw the project's fixed list of 2000 ILSVRC2012 validation images (run once; the output is committed).

The validation set has 50 000 files named ILSVRC2012_val_%08d.JPEG (1..50000). We draw 2000 indices without
replacement with Python's Mersenne Twister seeded with SEED and write them sorted, one name per line.
Re-running the script reproduces the committed file byte for byte (tests check this).
"""

import random
import sys
from pathlib import Path

SEED = 2000
N_VAL = 50_000
N_PICK = 2000


def draw(seed: int = SEED, n_pick: int = N_PICK) -> list[str]:
    picks = sorted(random.Random(seed).sample(range(1, N_VAL + 1), n_pick))
    return [f"ILSVRC2012_val_{i:08d}.JPEG" for i in picks]


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("ilsvrc2012_val_2000.txt")
    out.write_text("\n".join(draw()) + "\n")
    print(f"wrote {out}")
