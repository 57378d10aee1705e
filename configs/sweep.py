"""The study's sweep: 3 data configurations x {accuracy, faithfulness-aware} reward x seeds.

  python configs/sweep.py            # prints one `python -m rl.train ...` command per run
Each line is a complete launch command (add `--mesh` for your slice and `model=` / `data_dir=`).
"""

import itertools

DATA = {
    "sat_pixmo": ["data=sat2,pixmo_count"],
    "sat_pixmo_geo": ["data=sat2,pixmo_count,geometry3k"],
    "sat_pixmo_geo_aug": ["data=sat2,pixmo_count,geometry3k", "augment=true",
                          "augment_prob=0.1"],
}
REWARDS = {"acc": ["faithful=false"], "faithful": ["faithful=true", "judge=rule"]}
SEEDS = (0, 1, 2)


def runs():
  for (data, d), (reward, r), seed in itertools.product(DATA.items(), REWARDS.items(), SEEDS):
    name = f"{data}-{reward}-s{seed}"
    yield name, d + r + [f"seed={seed}"]


if __name__ == "__main__":
  for name, overrides in runs():
    print(f"python -m rl.train --config configs/grpo_study.py --out runs/{name} "
          + " ".join(overrides))
