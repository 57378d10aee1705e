"""The study's sweep: 3 data configurations x {accuracy, faithfulness-aware} reward x seeds.

  python configs/sweep.py            # prints one `python -m rl.train ...` command per run
  python configs/sweep.py --mesh data=2,fsdp=8 --out-root /shared/runs \
      --judge http://judge:8000/v1#Qwen3-32B model=/ckpt/Qwen2.5-VL-7B-Instruct data_dir=/data
Each line is a complete launch command; `--mesh` and `key=value` arguments given here go into
every line (without `model=` a run trains a random tiny model). Runs write to
`--out-root/<name>` (on several hosts: a folder every host sees); `--judge` is the faithful
runs' judge (default the rule judge; the study's is an LLM, Qwen3-32B).
"""

import argparse
import itertools
import shlex

DATA = {
    "sat_pixmo": ["data=sat2,pixmo_count"],
    "sat_pixmo_geo": ["data=sat2,pixmo_count,geometry3k"],
    "sat_pixmo_geo_aug": ["data=sat2,pixmo_count,geometry3k", "augment=true",
                          "augment_prob=0.1"],
}
REWARDS = {"acc": ["faithful=false"], "faithful": ["faithful=true", "judge={judge}"]}
SEEDS = (0, 1, 2)


def runs(judge: str = "rule"):
  for (data, d), (reward, r), seed in itertools.product(DATA.items(), REWARDS.items(), SEEDS):
    name = f"{data}-{reward}-s{seed}"
    yield name, d + [o.format(judge=judge) for o in r] + [f"seed={seed}"]


def commands(argv=None) -> list[str]:
  parser = argparse.ArgumentParser(prog="python configs/sweep.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--mesh", default=None, help="passed to every run, e.g. data=2,fsdp=8")
  parser.add_argument("--distributed", action="store_true",
                      help="passed to every run (multi-host: each line goes through "
                           "tpu_scripts/run.sh to every worker)")
  parser.add_argument("--out-root", default="runs",
                      help="each run writes to OUT_ROOT/<name> (default runs)")
  parser.add_argument("--judge", default="rule",
                      help="the faithful runs' judge: rule, a local Qwen3 folder or an "
                           "OpenAI-compatible URL (default rule)")
  parser.add_argument("overrides", nargs="*", help="key=value added to every run")
  args = parser.parse_args(argv)
  grid_keys = {o.partition("=")[0] for _, run in runs() for o in run}
  clash = sorted({o.partition("=")[0] for o in args.overrides} & grid_keys)
  if clash:
    parser.error(f"{', '.join(clash)}: set by the sweep's grid for each run")
  mesh = (["--mesh", args.mesh] if args.mesh else []) + (["--distributed"] if args.distributed
                                                          else [])
  return [shlex.join(["python", "-m", "rl.train", "--config", "configs/grpo_study.py", *mesh,
                      "--out", f"{args.out_root.rstrip('/')}/{name}", *args.overrides,
                      *overrides])
          for name, overrides in runs(args.judge)]


if __name__ == "__main__":
  print("\n".join(commands()))
