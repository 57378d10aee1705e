"""The periodic eval's logged summary (rl/periodic_eval.py)."""

from rl import periodic_eval


def _record(variant, parsed, judge, target=None, letters=("A", "B", "C")):
  return {"benchmark": "b", "item_id": "1", "variant": variant, "answer": "A", "parsed": parsed,
          "correct": parsed == "A", "unparsed": parsed is None, "judge_letter": judge,
          "consistent": None if judge is None or parsed is None else judge == parsed,
          "letters": list(letters), "letter_probs": None, "p_correct": None, "entropy": None,
          "target": target}


def test_summary_logs_what_applies_to_each_variant():
  records = [_record("base", "A", "A"), _record("base", "B", None),
             _record("wrong_think", "B", "B", target="B"), _record("wrong_think", "A", "A", "B"),
             _record("abstain", "D", "D", letters=("A", "B", "C", "D"))]
  out = periodic_eval.summarize(records)
  assert out["eval/base/consistency"] == 0.5 and out["eval/base/consistency_judged"] == 1.0
  assert out["eval/wrong_think/follows_target"] == 0.5
  assert out["eval/abstain/abstain_rate"] == 1.0
  assert "eval/base/follows_target" not in out and "eval/base/abstain_rate" not in out
