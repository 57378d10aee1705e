"""Robustness evaluation: benchmarks x prompt variants, accuracy, consistency, letter entropy.

Examples:
  # built-in default: a tiny random model on the synthetic benchmark (no downloads)
  python -m evals.run --out runs/default
  # Qwen2.5-VL-7B-Instruct on CV-Bench, every variant, a v4-32 (16 chips, 4x4 mesh)
  python -m evals.run --model ~/ckpt/Qwen2.5-VL-7B-Instruct --preset qwen2_5_vl_instruct \\
      --benchmarks cv_bench --data-dir ~/data --variants all --judge rule --mesh 4x4 \\
      --out runs/qwen7b_cvbench
Results are appended per item to OUT/results.jsonl; rerunning the same command resumes (a rerun
whose model, preset, sampling, seed, judge or dtype differ from OUT/run_settings.json is refused).
At the end OUT holds summary.md, summary.csv, bad_items.jsonl and the plots, all at its top level:
accuracy_by_variant.png, quadrants.png, reliability_base.png, p_base_hist.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time

from evals import presets as presets_lib
from evals import resume
from evals import variants as variants_lib
from evals.engine import Engine, Job
from evals.results import BAD_ITEMS_FILE, ResultsFile, read_bad_items, result_key
from evals.schema import BadItem
from vlm_jax import cli, multihost
from vlm_jax.files import atomic_write

DTYPES = ("bfloat16", "float32", "float16")  # parameter dtypes of --model and a local judge


_int_at_least = cli.int_at_least


def _temperature(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not (math.isfinite(value) and value >= 0):
    raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0 = greedy), got {text}")
  return value


def _penalty(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not value > 0 or math.isinf(value):
    raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
  return value


def _preset(text: str) -> str:
  """The preset's canonical name: checked before any model loads, and spelled one way in
  OUT/run_settings.json ('R1' and 'r1' are the same run)."""
  try:
    return presets_lib.get_preset(text).name
  except KeyError as e:
    raise argparse.ArgumentTypeError(e.args[0]) from None


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", help="local HF checkpoint dir (default: tiny random model)")
  p.add_argument("--preset", default="qwen2_5_vl_instruct", type=_preset,
                 help=f"prompt convention: {', '.join(sorted(presets_lib.PRESETS))}")
  p.add_argument("--benchmarks", default="synthetic", help="comma-separated benchmark names")
  p.add_argument("--data-dir", default=None, help="folder holding one sub-folder per benchmark")
  p.add_argument("--variants", default="all",
                 help=f"comma-separated, or 'all': {', '.join(variants_lib.VARIANTS)}")
  p.add_argument("--judge", default="rule", help="rule | local Qwen3 dir | http(s)://... URL")
  p.add_argument("--judge-max-tokens", type=_int_at_least(1), default=16,
                 help="reply tokens an LLM judge may use (16 fits a verdict; a reasoning judge "
                      "such as GPT-OSS, whose reasoning counts, needs hundreds)")
  p.add_argument("--mesh", default=None, help="'4x4' or 'data=2,fsdp=4,tensor=2' (default: 1 device)")
  p.add_argument("--out", default="runs/eval", type=cli.local_dir,
                 help="output folder (resumed if it exists)")
  p.add_argument("--limit", type=_int_at_least(1), default=None, help="items per benchmark")
  p.add_argument("--batch-size", type=_int_at_least(1), default=16)
  p.add_argument("--max-new-tokens", type=_int_at_least(1), default=None,
                 help="default 1024 with --model, 48 for the built-in tiny model")
  p.add_argument("--temperature", type=_temperature, default=0.0,
                 help="0 = greedy; T > 0 samples from softmax(logits / T), no top-k / top-p")
  p.add_argument("--repetition-penalty", type=_penalty, default=1.0,
                 help="transformers' repetition_penalty (default 1: off; Qwen2.5-VL's "
                      "generation_config.json asks 1.05, which generate applies unless told "
                      "otherwise, e.g. under lmms-eval)")
  p.add_argument("--circular", action="store_true",
                 help="MMBench / 3DSRBench: also run the CircularEval copies (options rotated) "
                      "and report circular_accuracy; every other metric stays over the "
                      "original questions")
  p.add_argument("--dtype", default="bfloat16", choices=DTYPES,
                 help="parameter dtype of --model and a local judge or text generator "
                      "(default bfloat16; the built-in tiny model is float32); float32 on CPU "
                      "tests")
  p.add_argument("--seed", type=_int_at_least(0), default=0,
                 help="wrong-option draws and sampling")
  p.add_argument("--scanned-decode", action="store_true",
                 help="decode through the stacked layer weights instead of per-layer copies "
                      "(slower, saves one copy of the layer weights while decoding)")
  p.add_argument("--synthetic-n", type=_int_at_least(1), default=40,
                 help="size of the synthetic benchmark")
  p.add_argument("--text-generator", default=None,
                 help="local checkpoint that writes captions/thinks (default: templates)")
  p.add_argument("--data-cache", default=None,
                 help="where benchmarks are staged as tfds array_record datasets (default "
                      "OUT/data_cache; 'none': keep them in memory)")
  multihost.add_distributed_args(p)
  return p


def _load_processor(args):
  """The processor and the model's name in records; cheap (no weights), so a rerun with nothing
  left to run reads no checkpoint."""
  from vlm_jax import processor as proc_lib
  if args.model:
    return proc_lib.Processor.from_dir(args.model), args.model
  return proc_lib.Processor(proc_lib.load_tokenizer(proc_lib.qwen_tokenizer_dir())), "tiny-random"


def _load_model(args, mesh):
  import jax
  from vlm_jax import config as config_lib, hf, params as params_lib
  from vlm_jax import sharding
  if args.model:
    return hf.load_hf(args.model, dtype=args.dtype, mesh=mesh)
  config = config_lib.get_config("tiny")
  params = params_lib.init_params(config, jax.random.key(args.seed))
  if mesh is not None:
    params = sharding.shard_params(params, config, mesh)
  return config, params


class _LoadOnFirstCall:
  """A generate_fn whose model (`load()` -> generate_fn) loads when it is first asked for text."""

  def __init__(self, load):
    self._load, self._fn = load, None

  def __call__(self, *args, **kwargs):
    if self._fn is None:
      self._fn = self._load()
    return self._fn(*args, **kwargs)


def _circular_benchmarks() -> list[str]:
  """The benchmarks whose loader takes `circular` (VLMEvalKit's CircularEval copies)."""
  import inspect
  from evals import benchmarks
  return [name for name, loader in benchmarks.BENCHMARKS.items()
          if "circular" in inspect.signature(loader).parameters]


def _local_items(args, bad: list):
  """This process's share of every benchmark: staged once as a tfds array_record dataset, read
  with grain, contiguous block per process (`evals.staging`)."""
  import jax
  from evals import staging
  cache = args.data_cache or os.path.join(args.out, "data_cache")
  cache = None if cache.lower() == "none" else cache
  for name in args.benchmarks.split(","):
    kw = {"n": args.synthetic_n, "seed": args.seed} if name == "synthetic" else {}
    if args.circular and name in _circular_benchmarks():
      kw["circular"] = True
    staged = staging.stage(name, args.data_dir, kw, args.limit, cache)
    bad.extend(staged.bad)  # loader rows: the same list on every process
    yield from staged.shard(jax.process_index(), jax.process_count())


def _usable(item, images, image_config) -> str | None:
  """Why the processor would reject these images (aspect ratio, size), else None."""
  from vlm_jax.images import smart_resize
  for i, img in enumerate(images):
    try:
      smart_resize(img.height, img.width, image_config.factor, image_config.min_pixels,
                   image_config.max_pixels)
    except ValueError as e:
      return f"image {i}: {e}"
  return None


def _image_problem(item, image_config) -> str | None:
  try:
    images = item.pil_images()
  except ValueError as e:
    return str(e)
  return _usable(item, images, image_config) if image_config else None


def _global_items(args, names, done: dict, bad: list, image_config=None):
  """Items still to run, the same sequence on every process: each step, every process reads up
  to ceil(batch_size / processes) items of its own shard, checks their images, and the items
  (encoded, images still compressed) and bad-item reports are gathered in process order."""
  import jax
  from evals.benchmarks.pipeline import decode_item, encode_item
  local = _local_items(args, bad)
  per, exhausted = max(1, -(-args.batch_size // jax.process_count())), False
  while True:
    chunk, local_bad, stale = [], [], None
    while not exhausted and len(chunk) < per and stale is None:
      item = next(local, None)
      if item is None:
        exhausted = True
        continue
      stale = resume.changed_since(item, names, done, args)  # every process stops together below
      if stale is None and any((item.benchmark, str(item.id), v) not in done for v in names):
        reason = _image_problem(item, image_config)
        if reason:
          local_bad.append({"benchmark": item.benchmark, "id": str(item.id), "reason": reason})
        else:
          chunk.append(item)
    head = json.dumps({"more": not exhausted, "bad": local_bad, "stale": stale}).encode()
    parts = [multihost.unpack(blob) for blob in multihost.gather_bytes(
        multihost.pack([head] + [encode_item(i) for i in chunk]))]
    infos = [json.loads(first) for first, *_ in parts]
    stale = next((info["stale"] for info in infos if info["stale"]), None)
    if stale:
      raise resume.stale_error(args.out, stale)
    for info, (_, *records) in zip(infos, parts):
      bad.extend(BadItem(**b) for b in info["bad"])
      yield from (decode_item(r) for r in records)
    if not any(info["more"] for info in infos):
      return


def _variant_names(args) -> list[str]:
  names = list(variants_lib.VARIANTS) if args.variants == "all" else args.variants.split(",")
  for variant in names:
    if variant not in variants_lib.VARIANTS:
      raise ValueError(f"unknown variant {variant!r}; known: {', '.join(variants_lib.VARIANTS)}")
  return names


def _jobs(args, done: dict, bad: list, texts=None, image_config=None):
  names = _variant_names(args)
  for item in _global_items(args, names, done, bad, image_config):
    images = item.pil_images()
    for variant in names:
      if (item.benchmark, str(item.id), variant) not in done:
        yield Job(item, variants_lib.make_variant(item, variant, args.seed, texts), images)


def _batches(jobs, size: int):
  batch = []
  for job in jobs:
    batch.append(job)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def _progress(done: int, start: float) -> None:
  rate = done / max(time.perf_counter() - start, 1e-9)
  print(f"\r{done} results, {rate:.2f} items/s", end="", file=sys.stderr, flush=True)


def _check_names(args) -> None:
  """Unknown benchmark or variant names, a judge spec that cannot work, or a --model /
  --text-generator that is no unquantized checkpoint folder, before anything loads or OUT is
  made; a name given twice counts once."""
  from evals import benchmarks
  from evals.judge import check_spec
  args.benchmarks = ",".join(dict.fromkeys(args.benchmarks.split(",")))
  if args.variants != "all":
    args.variants = ",".join(dict.fromkeys(args.variants.split(",")))
  check_spec(args.judge)
  from vlm_jax.config_json import refuse_quantized
  for flag, path in (("--model", args.model), ("--text-generator", args.text_generator)):
    if path:  # a wrong path or a quantized checkpoint, named before OUT is made
      try:
        refuse_quantized(os.path.expanduser(path))
      except (OSError, ValueError) as e:
        raise type(e)(f"{flag}: {e}") from e
  for name in args.benchmarks.split(","):
    if name not in benchmarks.BENCHMARKS:
      raise ValueError(f"--benchmarks: unknown benchmark {name!r}; known: "
                       f"{', '.join(benchmarks.BENCHMARKS)}")
  if args.circular and not set(args.benchmarks.split(",")) & set(_circular_benchmarks()):
    raise ValueError(f"--circular: none of --benchmarks {args.benchmarks} has CircularEval "
                     f"copies; those that do: {', '.join(_circular_benchmarks())}")
  _variant_names(args)


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  _check_names(args)
  multihost.initialize_from_args(args)
  if args.max_new_tokens is None:
    args.max_new_tokens = 1024 if args.model else 48
  from evals import judge as judge_lib, report
  from vlm_jax import sharding
  # a mesh that does not fit the devices stops the run before OUT is made or written
  mesh = sharding.parse_mesh(args.mesh) if args.mesh else None
  if mesh is not None:  # ... and so does one that cannot split the model's parameters
    from vlm_jax import config as config_lib, config_json
    sharding.param_shardings(config_json.from_hf(args.model) if args.model
                             else config_lib.get_config("tiny"), mesh)
  writer = _is_writer()
  results = ResultsFile(os.path.join(args.out, "results.jsonl"), writer=writer)
  resume.check_run_settings(args, results, writer)
  # an HTTP judge is asked once before the model loads: a wrong URL, key or model name would
  # otherwise cost a whole run's results
  judge = _http_judge(args, writer)
  processor, model_name = _load_processor(args)
  texts = None
  if args.text_generator:
    factory = _local_generate_factory(args, mesh)
    texts = variants_lib.LLMTexts(_LoadOnFirstCall(lambda: factory(args.text_generator)))
  done = resume.shared_done(results.records)
  fingerprint = resume.settings_fingerprint(resume.run_settings(args))
  bad, new, unjudged, judge_error = [], 0, 0, ""
  batches = _batches(_jobs(args, done, bad, texts, processor.image_config), args.batch_size)
  # the first batch is made (data staged, every item's resume checks passed) before the model
  # loads: a rerun with nothing left to run loads none
  first = next(batches, None)
  if first is not None:
    engine = _engine(args, mesh, processor, model_name, judge)
    start = time.perf_counter()
    for batch in itertools.chain([first], batches):
      for record in engine.run_batch(batch):
        if judge_lib.retryable(record["judge_error"]):  # not written: a rerun judges it again
          unjudged, judge_error = unjudged + 1, record["judge_error"]
          continue
        if writer and result_key(record) not in results.done:
          results.append({**record, "settings": fingerprint})
        new += 1
      _progress(new, start)
    print(file=sys.stderr)
  if writer:
    bad = _write_bad(args.out, bad, args.benchmarks.split(","))
    meta = {k: v for k, v in resume.run_settings(args).items() if v is not None}
    if unjudged:
      meta["not written"] = (f"{unjudged} results this run: the judge gave no verdict (last "
                             f"error: {judge_error}); the same command again judges them")
    files = report.write_summary(results.records, args.out, bad_items=len(bad), meta=meta)
    print(f"{len(results.records)} results ({new} new), {len(bad)} bad items; wrote "
          f"{', '.join(os.path.relpath(f, args.out) for f in files)} in {args.out}")
  if unjudged:
    print(f"{unjudged} results not written: the judge gave no verdict (last error: "
          f"{judge_error}); run the same command again to judge them", file=sys.stderr)
    return 1
  return 0


def _engine(args, mesh, processor, model_name: str, judge) -> Engine:
  """Loads the model (and a local judge, unless `judge` is the HTTP one) into an Engine."""
  from evals import judge as judge_lib
  from vlm_jax import sharding
  from vlm_jax.sampler import Sampler
  config, params = _load_model(args, mesh)
  sharding.report_replicated(config, mesh)
  if judge is None:
    judge = judge_lib.make_judge(args.judge,
                                 generate_fn_factory=_local_generate_factory(args, mesh),
                                 **({} if args.judge == "rule"
                                    else {"max_new_tokens": args.judge_max_tokens}))
  sampler = Sampler(params, config, processor, mesh=mesh,
                    unstack_layers=False if args.scanned_decode else "auto")
  return Engine(sampler, processor, presets_lib.get_preset(args.preset), judge,
                args.max_new_tokens, model_name, seed=args.seed, temperature=args.temperature,
                repetition_penalty=args.repetition_penalty)


def _http_judge(args, writer: bool):
  """For an HTTP judge: on process 0 the judge, after one request that shows the server
  answers (`HTTPJudge.check`; every process stops on its error); elsewhere a RuleJudge, since
  only process 0 writes verdicts (the API is asked once). None for other judges."""
  from evals import judge as judge_lib
  if not args.judge.startswith(("http://", "https://")):
    return None
  judge, error = judge_lib.RuleJudge(), ""
  if writer:
    judge = judge_lib.make_judge(args.judge, max_tokens=args.judge_max_tokens,
                                 cache_path=os.path.join(args.out, "judge_cache.jsonl"))
    error = judge.check()
  error = multihost.broadcast_bytes(error.encode()).decode()
  if error:
    raise ValueError(f"{error}; nothing was run (results already in {args.out} are kept)")
  return judge


def _is_writer() -> bool:
  import jax
  return jax.process_index() == 0  # every process runs every global batch (SPMD); one writes


def _write_bad(out: str, bad: list, benchmarks: list[str]) -> list[dict]:
  """OUT/bad_items.jsonl: this run's bad items, plus those an earlier run into OUT recorded for
  benchmarks this run did not load (a rerun on a subset keeps the rest). Returns all of them."""
  path = os.path.join(out, BAD_ITEMS_FILE)
  kept = [e for e in read_bad_items(path) or () if e.get("benchmark") not in benchmarks]
  rows = kept + [{"benchmark": b.benchmark, "id": b.id, "reason": b.reason} for b in bad]
  with atomic_write(path) as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return rows


def _local_generate_factory(args, mesh):
  """generate_fn for a local judge checkpoint (Qwen3 or Qwen2.5-VL), on the same mesh."""
  from evals.llm_judge import local_factory
  return local_factory(mesh, args.dtype)


if __name__ == "__main__":
  raise SystemExit(cli.run(main, "python -m evals.run"))
