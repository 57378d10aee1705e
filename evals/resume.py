"""What makes a rerun of `evals.run` into the same OUT a resume, and what refuses it.

A rerun appends to OUT/results.jsonl only what is missing, so the records it adds must be
made as the stored ones were: the settings that change a record (`run_settings`, kept in
OUT/run_settings.json) must match, and so must each item's data and each variant's prompt
(`changed_since`). Every check runs before the model loads or, per item, before it runs; every
process takes process 0's verdict, so none is left waiting in a collective.
"""

from __future__ import annotations

import hashlib
import json
import os

from evals import presets as presets_lib
from evals import variants as variants_lib
from evals.engine import LETTER_VERSION
from evals.results import SETTINGS_FILE, ResultsFile, check_settings, result_key
from vlm_jax import multihost


def run_settings(args) -> dict:
  """The settings that change a result record's content (`results.check_settings`). Left out:
  what only picks which items run, or how (--batch-size, --mesh, --limit, --benchmarks,
  --variants, --synthetic-n, --scanned-decode: the same records), and where files are (--out,
  --data-dir, --data-cache), all free to change between resumed runs."""
  def local(path):
    return path and os.path.abspath(os.path.expanduser(path))

  judge, local_judge = args.judge, False
  if judge.startswith(("http://", "https://")):
    url, _, model = judge.partition("#")  # the model as `judge.make_judge` resolves it
    judge = f"{url}#{model or os.environ.get('JUDGE_MODEL', '')}"
  elif judge != "rule":
    judge, local_judge = local(judge), True
  uses_dtype = bool(args.model or args.text_generator or local_judge)
  from evals.answers import PARSE_VERSION
  from evals.judge import JUDGE_PROMPT_VERSION, RULE_VERSION
  return {"model": local(args.model) or "tiny-random",
          "preset": presets_lib.get_preset(args.preset).name,
          "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
          "repetition_penalty": args.repetition_penalty,
          "judge_max_tokens": None if judge == "rule" else args.judge_max_tokens,
          "seed": args.seed, "judge": judge, "text_generator": local(args.text_generator),
          "dtype": args.dtype if uses_dtype else "float32",  # the tiny model ignores --dtype
          # the rules that read answers and verdicts: results parsed by other rules never pool
          "answer_rules": {"parse": PARSE_VERSION,
                           "judge": RULE_VERSION if judge == "rule" else JUDGE_PROMPT_VERSION,
                           "letters": LETTER_VERSION}}


def check_run_settings(args, results: ResultsFile, writer: bool) -> None:
  """Stops every process, before the model loads, when OUT's results were made with other
  settings. Process 0 alone reads and writes OUT (as for results); the others take its verdict,
  so none is left waiting in a collective."""
  settings = run_settings(args)
  # settings older versions did not record, as they implied them
  legacy = ({"answer_rules": _records_answer_rules(results.records), "repetition_penalty": 1.0,
             "judge_max_tokens": None if args.judge == "rule" else 16}
            if results.records else {})
  error = ""
  if writer:
    # with a settings file, its diff names every change; without one, the records are checked
    # before one is written from this run's settings
    if not os.path.exists(os.path.join(args.out, SETTINGS_FILE)):
      error = _foreign_record(results, settings, by_fingerprint=True)
    error = error or check_settings(args.out, settings, bool(results.records), legacy) or \
        _foreign_record(results, settings)
  error = multihost.broadcast_bytes(error.encode()).decode()
  if error:
    raise ValueError(error)


def settings_fingerprint(settings: dict) -> str:
  """A short hash of `run_settings`, stored in every record ("settings")."""
  blob = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _foreign_record(results: ResultsFile, settings: dict, by_fingerprint: bool = False) -> str:
  """An error naming the first record made with another preset or seed than this run's (a
  record pasted in from another run, or an OUT whose run_settings.json was lost or replaced),
  else ''. (Records name their model as it was given on the command line, not resolved, so the
  model is left to run_settings.json.) `by_fingerprint` (OUT has no run_settings.json): also
  a record whose settings fingerprint differs from this run's (every other setting: max new
  tokens, temperature, judge, ...); records from before fingerprints pass."""
  mine = settings_fingerprint(settings)
  for r in results.records:
    if by_fingerprint and r.get("settings", mine) != mine:
      return (f"{results.path}: result {'/'.join(map(str, result_key(r)))} was made with other "
              f"settings than this run's (settings fingerprint {r['settings']}, this run's "
              f"{mine}; run_settings.json, which would name them, is gone): one folder never "
              f"mixes two runs; rerun with the settings it was made with, or pick a new --out")
    for key in ("preset", "seed"):
      if key in r and r[key] != settings[key]:
        return (f"{results.path}: result {'/'.join(map(str, result_key(r)))} was made with "
                f"{key} {r[key]!r}, this run's is {settings[key]!r}: one folder never mixes "
                f"two runs; pick a new --out, or remove the records of the other run")
  return ""


def _records_answer_rules(records: list[dict]):
  """The answer rules OUT's records were made with, for an OUT whose run_settings.json does not
  say (written before it recorded them, or deleted): records carry their parse and judge
  versions (those without a parse version predate it: parse-v1). Mixed: "mixed", never equal."""
  parse = {r.get("parse_version", "parse-v1") for r in records}
  judge = {r.get("judge_prompt_version") for r in records} - {None}
  letters = {r.get("letter_version", "letters-v1") for r in records}
  if len(parse) > 1 or len(judge) > 1 or len(letters) > 1:
    return "mixed"
  return {"parse": parse.pop(), "judge": judge.pop() if judge else None,
          "letters": letters.pop()}


def prompt_hash(question: str, options, prefill) -> str:
  """A short hash of a prompt as a record stores it (question with its caption, options,
  assistant prefill)."""
  blob = json.dumps([question, list(options), prefill], ensure_ascii=False)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shared_done(records: list[dict]) -> dict:
  """Process 0's finished keys -> (the item fingerprint, the prompt hash) each was run on (None
  for records older than either), on every process, so all skip the same work (SPMD) even when
  --out is a local disk per worker."""
  done = sorted([*result_key(r), r.get("item_hash"),
                 prompt_hash(r["question"], r["options"], r.get("prefill"))
                 if "question" in r and "options" in r else None] for r in records)
  blob = multihost.broadcast_bytes(json.dumps(done).encode())
  return {tuple(k[:3]): tuple(k[3:]) for k in json.loads(blob.decode())}


# variants whose prompt uses no generated caption or think: rebuilt and compared on a resume
# even with --text-generator
_TEXT_FREE = ("base", "stop_think", "abstain")


def changed_since(item, names, done: dict, args) -> str | None:
  """Why OUT's results for this item cannot be pooled with new ones, else None: made from other
  data (a replaced or fixed data file, a changed loader), or from another prompt for the same
  variant (edited caption / think templates or variant wording, e.g. a code update between a
  run and its resume): pooled, they would mix two datasets or two perturbations."""
  stored = {v: done[(item.benchmark, str(item.id), v)] for v in names
            if (item.benchmark, str(item.id), v) in done}
  fingerprints = {h for h, _ in stored.values()} - {None}
  if fingerprints and fingerprints != {item.fingerprint()}:
    return (f"results for {item.key} were made from other data (its question, options, answer, "
            "category or images have changed since)")
  for variant, (_, stored_prompt) in stored.items():
    if stored_prompt is None or (args.text_generator and variant not in _TEXT_FREE):
      continue
    spec = variants_lib.make_variant(item, variant, args.seed)
    if prompt_hash(spec.question, spec.options, spec.assistant_prefill) != stored_prompt:
      return (f"the {variant} prompt of {item.key} differs from the one its results were made "
              "with (caption / think templates or variant wording changed since)")
  return None


def stale_error(out: str, reason: str) -> ValueError:
  return ValueError(
      f"{os.path.join(out, 'results.jsonl')}: {reason}; use a new --out, or delete that "
      "benchmark's records to rerun it")
