"""CoT-consistency judges: output splitting, letter parsing, rule judge, LLM judge, HTTP judge.

The HTTP judge talks to a ThreadingHTTPServer on 127.0.0.1 (port 0) that each test scripts; it
counts and records requests and is shut down when the test ends.
"""

import http.server
import json
import re
import socket
import threading
import time

import pytest

from evals import judge as judge_lib
from evals.judge import (JUDGE_PROMPT_VERSION, RULE_VERSION, JudgeRequest, LLMJudge,
                         RuleJudge, Verdict, consistency, judge_prompt, make_judge, parse_letter,
                         split_output)
from evals.judge_http import HTTPJudge

LETTERS = ["A", "B", "C", "D"]
OPTIONS = ["the red circle", "blue square", "left", "left side"]


# ----------------------------------------------------------------------------------------------
# split_output

@pytest.mark.parametrize("text, think, answer", [
    ("<think>The cup is red.</think><answer>B</answer>", "The cup is red.", "B"),
    ("<think>\n x \n</think>\n<answer> C </answer>", "x", "C"),
    ("Sure. <think>t</think><answer>A</answer>", "t", "A"),               # preamble ignored
    # prefilled think: the output starts mid-think, no opening tag
    (" it faces left, so A.</think><answer>A</answer>", "it faces left, so A.", "A"),
    # missing closing think tag: think runs to <answer>, or to the end
    ("<think>abc <answer>B</answer>", "abc", "B"),
    ("<think>still thinking", "still thinking", None),
    ("continued prefill, no tags at all", "continued prefill, no tags at all", None),
    # Vision-R1 may omit answer tags
    ("<think>so B</think> The answer is B.", "so B", None),
    ("prefilled</think>B", "prefilled", None),
    # unclosed <answer> (stop string cut off), empty parts, nothing
    ("<think>x</think><answer> D", "x", "D"),
    ("<answer>B</answer>", None, "B"),
    ("<think></think><answer></answer>", None, None),
    ("<THINK>x</THINK><Answer>b</Answer>", "x", "b"),
    ("", None, None),
    (None, None, None),
])
def test_split_output(text, think, answer):
  assert split_output(text) == (think, answer)


# ----------------------------------------------------------------------------------------------
# parse_letter

@pytest.mark.parametrize("text, want", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("[C]", "C"), ("**D**", "D"), (" b ", "B"),
    ("B) blue square", "B"), ("B) the red one", "B"), ("(B) blue square", "B"),
    ("B: blue square", "B"), ("Option D", "D"), ("Answer: B", "B"), ("answer: (C)", "C"),
    ("the answer is B", "B"), ("The answer is B.", "B"), ("Therefore the answer is C.", "C"),
    ("\\boxed{A}", "A"), ("<answer>C</answer>", "C"), ("A", "A"), ("A.", "A"),
    # option text (ViGoRL): case, space, punctuation and leading article do not matter
    ("the red circle", "A"), ("Red  Circle.", "A"), ("BLUE-SQUARE", "B"), ("a red circle", "A"),
    ("left", "C"), ("Left side", "D"), ("the answer is left side", "D"),
    ("the correct option is the red circle", "A"),
    ("The answer is A green triangle", None),  # article "A", and no option is green
    ("The answer is A blue square", "B"),
    # ambiguous: two letters or a label contradicting its text
    ("A or B", None), ("A, B", None), ("B) the red circle", None),
    ("Answer: A. Answer: B", None), ("A and C are both plausible", None),
    # hedges and lists of options name two letters (each parsed as its first letter before)
    ("(C) and (D)", None), ("(C) (D)", None), ("(C) left (D) left side", None),
    ("The answer is C or D", None), ("A. the red circle B. blue square C. left D. left side", None),
    # another letter that is ruled out, or the article "A", is no second letter
    ("C, not D", "C"), ("The answer is C because A is wrong", "C"),
    ("B) blue square, not A", "B"),
    # lower case where it cannot be the article, decorated and full-width letters
    ("(b)", "B"), ("b)", "B"), ("option b", "B"), ("answer: b", "B"), ("answer: a red car", None),
    ("C (left)", "C"), ("C (blue square)", None), ("C, left", "C"), ("\\boxed{\\text{C}}", "C"),
    ("\uff23", "C"), ("\uff08\uff22\uff09", "B"),
    # nothing
    ("", None), ("NONE", None), ("E", None), ("Blue", None), ("green triangle", None),
    ("I cannot tell", None), (None, None),
])
def test_parse_letter(text, want):
  assert parse_letter(text, LETTERS, OPTIONS) == want


def test_parse_letter_duplicate_option_texts_are_ambiguous():
  assert parse_letter("red", ["A", "B", "C"], ["red", "Red.", "blue"]) is None
  assert parse_letter("blue", ["A", "B", "C"], ["red", "Red.", "blue"]) == "C"


# ----------------------------------------------------------------------------------------------
# RuleJudge

WRONG_THINK = ("The dog's body is turned so that its right side is facing the camera, which "
               "means the answer should be B. But I think the answer is A.")
RULE_CASES = [
    ("Looking closely, the top shape is red. So the answer is B.", "B"),
    (WRONG_THINK, "A"),
    ("Comparing both objects, therefore (C).", "C"),
    ("Therefore, C.", "C"),
    ("The correct option is the red circle.", "A"),
    ("Hard to say. I'll go with A.", "A"),
    ("I will go with option D.", "D"),
    ("Final answer: D", "D"),
    ("answer: the blue square", "B"),
    ("B is correct because the square is blue.", "B"),
    ("(C) is the best answer here.", "C"),
    ("I think it's C.", "C"),
    ("So the answer is \\boxed{B}.", "B"),
    ("The answer is likely B, not A.", "B"),
    ("So the answer is A blue square.", "B"),  # "A" is the article here
    ("It seemed A is correct, but on reflection the answer is C.", "C"),  # change of mind
    ("Option A is wrong. So the answer is C.", "C"),
    # a conclusion followed by a little more talk still counts (within the last 3 sentences)
    ("So the answer is B. Let me double check. The square is blue.", "B"),
    ("The answer is C.\nWait, that was the left side.", "C"),
    # no cue: the last option mentioned in the final sentence
    ("The object is on the left.", "C"),
    ("It is not on the left side, it is the blue square.", "B"),
    ("Between (A) and (B), the picture shows (B)", "B"),
    ("It sits on the left side", "D"),   # longest of the overlapping option texts
    # nothing concluded
    ("Okay let's see. This should be the final answer.", None),
    ("A careful look shows nothing conclusive.", None),
    ("The answer is not A.", None),
    ("Therefore, option A is wrong.", None),
    ("So the answer is B. Then I looked again. Hmm. It is hard. Nothing is clear.", None),
    # rules v2: a change of mind with "actually", a negation earlier in the clause, and an
    # option word used as an adjective of "answer" (not a mention of option C)
    ("The answer should be C. Let me double check. Actually, it's D.", "D"),
    ("The shape is not on the left.", None),
    ("It isn't on the left side; it is the blue square.", "B"),
    ("There is no doubt: it is on the left.", "C"),
    ("The square is blue. That's the left answer.", None),
]


@pytest.mark.parametrize("think, want", RULE_CASES)
def test_rule_judge(think, want):
  verdict = RuleJudge().judge([JudgeRequest("Which shape?", OPTIONS, LETTERS, think)])[0]
  assert verdict.letter == want, verdict
  assert verdict.error is None
  assert (verdict.judge, verdict.prompt_version) == ("rule", RULE_VERSION)


def test_rule_judge_keeps_batch_order_and_flags_missing_think():
  batch = [JudgeRequest("q", OPTIONS, LETTERS, t) for t, _ in RULE_CASES]
  batch.insert(2, JudgeRequest("q", OPTIONS, LETTERS, None))
  batch.insert(3, JudgeRequest("q", OPTIONS, LETTERS, "  \n "))
  verdicts = RuleJudge(name="r").judge(batch)
  assert [v.letter for v in verdicts] == [w for _, w in RULE_CASES[:2]] + [None, None] + \
      [w for _, w in RULE_CASES[2:]]
  assert verdicts[2] == Verdict(None, "", "r", RULE_VERSION, judge_lib.NO_THINK)
  assert verdicts[3].error == judge_lib.NO_THINK and verdicts[0].error is None


def test_rule_judge_window_is_a_parameter():
  think = "So the answer is B. One. Two. Three."
  assert RuleJudge(window=3).judge([JudgeRequest("q", OPTIONS, LETTERS, think)])[0].letter is None
  assert RuleJudge(window=4).judge([JudgeRequest("q", OPTIONS, LETTERS, think)])[0].letter == "B"


def test_consistency():
  assert consistency("B", "B") is True
  assert consistency("A", "B") is False
  assert consistency(None, "B") is None and consistency("B", None) is None


def test_judge_request_checks_lengths():
  with pytest.raises(ValueError, match="3 options but 2 letters"):
    JudgeRequest("q", ["x", "y", "z"], ["A", "B"], "t")


# ----------------------------------------------------------------------------------------------
# judge_prompt and LLMJudge

def test_judge_prompt():
  messages = judge_prompt("Where is the cup?", ["left", "right"], ["A", "B"], "It is left. So A.")
  assert [m["role"] for m in messages] == ["system", "user"]
  system, user = messages[0]["content"], messages[1]["content"]
  assert "NONE" in system and "letter" in system
  assert "Where is the cup?" in user and "A. left\nB. right" in user
  assert "It is left. So A." in user and user.endswith("exactly one of: A, B, NONE.")
  long = judge_prompt("q", ["x", "y"], ["A", "B"], "start " + "z" * 100 + " END", 50)
  assert "[...] " in long[1]["content"] and "END" in long[1]["content"]
  assert "start" not in long[1]["content"]  # the head goes, the conclusion stays


class FakeGenerate:
  """Replies from a table keyed by the question; records every call."""

  def __init__(self, replies):
    self.replies, self.calls = replies, []

  def __call__(self, prompts, max_new_tokens):
    self.calls.append((prompts, max_new_tokens))
    return [self.replies[re.search(r"Question: (\S+)", p[1]["content"])[1]] for p in prompts]


def test_llm_judge_with_fake_generate_fn():
  fake = FakeGenerate({"q1": "B", "q2": "NONE", "q3": "between A and B",
                       "q4": "<think>hm</think>(C)", "q5": "The answer is the red circle.",
                       "q6": "<think>cut off"})
  batch = [JudgeRequest(f"q{i}", OPTIONS, LETTERS, f"think {i}") for i in range(1, 7)]
  batch.insert(1, JudgeRequest("q0", OPTIONS, LETTERS, None))
  verdicts = LLMJudge(fake, name="jax:qwen", max_new_tokens=8).judge(batch)
  assert len(fake.calls) == 1 and fake.calls[0][1] == 8
  prompts = fake.calls[0][0]
  assert len(prompts) == 6  # the think-less request is not sent
  assert prompts[0] == judge_prompt("q1", OPTIONS, LETTERS, "think 1")
  assert [v.letter for v in verdicts] == ["B", None, None, None, "C", "A", None]
  assert [v.error for v in verdicts] == [None, judge_lib.NO_THINK, None, "unparseable judge reply",
                                         None, None, "unparseable judge reply"]
  assert verdicts[3].raw == "between A and B"
  assert {(v.judge, v.prompt_version) for v in verdicts} == {("jax:qwen", JUDGE_PROMPT_VERSION)}


@pytest.mark.parametrize("reply, letter, error", [
    ("B", "B", None), ("**B**", "B", None), ("Letter: B", "B", None),
    ("<think>\n\n</think>\n\nB", "B", None),                    # Qwen3, thinking off
    ("NONE", None, None), ("None.", None, None),
    # JSON, bare or fenced, and the prompt's own words
    ('{"answer": "B"}', "B", None), ('```json\n{"letter": "C"}\n```', "C", None),
    ('{"conclusion": "(D) left side", "why": "it says so"}', "D", None),
    ('{"option": "NONE"}', None, None), ('{"answer": null}', None, None), ('"B"', "B", None),
    ("The reasoning concludes B.", "B", None), ("The reasoning concludes option C", "C", None),
    # nothing usable: an error, never a guess
    ('{"a": "B", "b": "C"}', None, judge_lib.UNPARSEABLE), ("B or C", None, judge_lib.UNPARSEABLE),
    ("I'm sorry, but I can't help with that.", None, judge_lib.UNPARSEABLE),
    ("<think>still thinking when max_tokens ran out", None, judge_lib.UNPARSEABLE),
])
def test_verdict_from_reply(reply, letter, error):
  request = JudgeRequest("q", OPTIONS, LETTERS, "so B")
  verdict = judge_lib.verdict_from_reply(reply, request, "j")
  assert (verdict.letter, verdict.error, verdict.raw) == (letter, error, reply)


def test_llm_judge_rejects_wrong_reply_count():
  judge = LLMJudge(lambda prompts, n: ["A"])
  with pytest.raises(ValueError, match="1 replies for 2 prompts"):
    judge.judge([JudgeRequest("q", OPTIONS, LETTERS, "t")] * 2)


# ----------------------------------------------------------------------------------------------
# HTTPJudge against a scripted loopback server

def chat_reply(content):
  message = {"role": "assistant", "content": content}
  return {"id": "x", "choices": [{"index": 0, "message": message}]}


def send(status, body, delay=0.0):
  """A server action: wait `delay`, then answer `status` with `body` (dict -> JSON, or bytes)."""
  def action(handler, request):
    time.sleep(delay)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
      handler.send_response(status)
      handler.send_header("Content-Type", "application/json")
      handler.send_header("Content-Length", str(len(data)))
      handler.end_headers()
      handler.wfile.write(data)
    except OSError:
      pass  # the client gave up (timeout): nobody is listening any more
  return action


def by_question(handler, request):
  """Default action: the letter is chosen by the question's number, "q<i>" -> LETTERS[i % 4]."""
  i = int(re.search(r"Question: q(\d+)", request["messages"][1]["content"])[1])
  send(200, chat_reply(LETTERS[i % 4]))(handler, request)


class Handler(http.server.BaseHTTPRequestHandler):
  def do_POST(self):
    state = self.server.state
    raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
    request = json.loads(raw)
    with state["lock"]:
      state["requests"].append({"path": self.path, "headers": dict(self.headers), "body": request})
      action = state["script"].pop(0) if state["script"] else by_question
    action(self, request)

  def log_message(self, *args):
    pass


@pytest.fixture
def server():
  """A scripted loopback chat server; `state["script"]` holds the actions for the next requests."""
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  httpd.daemon_threads, httpd.block_on_close = True, False
  httpd.state = {"lock": threading.Lock(), "requests": [], "script": []}
  thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                            daemon=True)
  thread.start()
  httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
  yield httpd
  httpd.shutdown()
  httpd.server_close()


def http_judge(server, **kw):
  kw = {"timeout": 0.3, "max_retries": 2, "backoff": 0.01, **kw}
  return HTTPJudge(server.url, "judge-model", **kw)


def requests_for(questions):
  return [JudgeRequest(q, OPTIONS, LETTERS, f"reasoning for {q}") for q in questions]


def test_http_normal_reply_and_request_body(server):
  server.state["script"] = [send(200, chat_reply("B"))]
  verdicts = http_judge(server, api_key="sk-test").judge(requests_for(["q0"]))
  assert verdicts == [Verdict("B", "B", "http:judge-model", JUDGE_PROMPT_VERSION)]
  (request,) = server.state["requests"]
  assert request["path"] == "/v1/chat/completions"
  assert request["headers"]["Authorization"] == "Bearer sk-test"
  assert request["body"] == {
      "model": "judge-model", "temperature": 0, "max_tokens": 16,
      "messages": judge_prompt("q0", OPTIONS, LETTERS, "reasoning for q0")}


def test_http_retries_after_timeout(server):
  server.state["script"] = [send(200, chat_reply("A"), delay=0.8), send(200, chat_reply("C"))]
  (verdict,) = http_judge(server, timeout=0.3).judge(requests_for(["q0"]))
  assert (verdict.letter, verdict.error) == ("C", None)
  assert len(server.state["requests"]) == 2


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_http_retries_server_errors(server, status):
  server.state["script"] = [send(status, b"busy"), send(200, chat_reply("D"))]
  (verdict,) = http_judge(server).judge(requests_for(["q0"]))
  assert (verdict.letter, verdict.error) == ("D", None)
  assert len(server.state["requests"]) == 2


def test_http_retries_tls_errors_while_reading(monkeypatch):
  """A TLS connection cut mid-body raises ssl.SSLEOFError (an OSError, no URLError): retried,
  not raised out of the judge (which would end the run)."""
  import ssl
  judge = HTTPJudge("https://127.0.0.1:9/v1", "m", max_retries=2, backoff=0.01)
  replies = [ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
             (200, {}, json.dumps(chat_reply("C")).encode())]

  def post(body):
    reply = replies.pop(0)
    if isinstance(reply, Exception):
      raise reply
    return reply

  monkeypatch.setattr(judge, "_post", post)
  (verdict,) = judge.judge(requests_for(["q0"]))
  assert (verdict.letter, verdict.error) == ("C", None) and not replies


def test_http_check_asks_past_the_cache_and_says_why_it_fails(server, tmp_path):
  judge = http_judge(server, cache_path=str(tmp_path / "cache.jsonl"))
  server.state["script"] = [send(200, chat_reply("A")), send(200, chat_reply("A")),
                            send(404, b"model 'judge-model' not found"),
                            send(200, {"choices": [{"message": {"content": None}}]})] + [
                                send(200, {"choices": [{"message": {"content": None}}]})] * 2
  assert judge.check() == "" and judge.check() == ""
  assert len(server.state["requests"]) == 2 and not (tmp_path / "cache.jsonl").exists()
  assert "HTTP 404: model 'judge-model' not found" in judge.check()
  assert "empty content (a reasoning model may need more max_tokens)" in judge.check()


def test_http_gives_up_after_max_retries(server):
  server.state["script"] = [send(500, b"down")] * 10
  (verdict,) = http_judge(server, max_retries=2).judge(requests_for(["q0"]))
  assert verdict.letter is None and verdict.error.startswith("gave up after 3 attempts")
  assert "HTTP 500" in verdict.error and len(server.state["requests"]) == 3


@pytest.mark.parametrize("status, body, error", [
    (200, b"this is not json", "reply is not JSON"),
    (200, {"id": "x", "object": "chat.completion"}, "reply has no choices"),
    (200, {"choices": []}, "reply has no choices"),
    (200, {"error": {"message": "overloaded"}}, "reply has no choices (server error:"),
    (200, chat_reply(""), "reply has empty content"),
    (200, {"choices": [{"message": {"content": None}}]}, "reply has empty content"),
    (400, b"bad request", "HTTP 400: bad request"),
])
def test_http_malformed_replies_give_error_verdicts(server, status, body, error):
  from evals import judge as judge_lib
  # a 200 with no usable content is asked again (3 attempts here), then final; a 400 at once
  attempts = 3 if status == 200 else 1
  server.state["script"] = [send(status, body)] * attempts
  # one worker: the scripted reply must go to q0 (scripts are served in arrival order)
  verdicts = http_judge(server, max_workers=1).judge(requests_for(["q0", "q1"]))
  assert verdicts[0].letter is None and error in verdicts[0].error
  assert (verdicts[1].letter, verdicts[1].error) == ("B", None)  # the run goes on
  assert len(server.state["requests"]) == attempts + 1
  # either way final: the record is written, with no verdict, out of the CoT metrics
  assert judge_lib.judge_failed(verdicts[0].error) and not judge_lib.retryable(verdicts[0].error)
  if status == 200:
    assert verdicts[0].error.startswith(f"{judge_lib.BAD_REPLY} (3 attempts): {error}")
    server.state["requests"].clear()
    server.state["script"] = [send(status, body)]  # once: the retry gets the good reply
    (verdict,) = http_judge(server).judge(requests_for(["q0"]))
    assert (verdict.letter, verdict.error) == ("A", None) and len(server.state["requests"]) == 2


def test_refused_requests_are_written_without_a_verdict_and_left_out_of_cot_metrics():
  """HTTP 400/413/422 (a think over the judge's context length) is the same on every retry:
  such a result is written (a rerun would otherwise never finish) and counts in no CoT metric;
  server errors stay retryable (not written, judged by the rerun); a reply still unusable after
  the retries, or unparseable, is final as well."""
  from evals import judge as judge_lib, metrics
  for error, refused in (("HTTP 400: context length exceeded", True), ("HTTP 413: too big", True),
                         ("HTTP 422: bad", True), ("HTTP 401: key", False),
                         ("gave up after 4 attempts; last: HTTP 500", False),
                         ("reply has empty content", False), (None, False)):
    assert judge_lib.refused(error) is refused, error
    assert judge_lib.retryable(error) is (error is not None and not refused), error
  assert not judge_lib.retryable(judge_lib.NO_THINK)
  final = f"{judge_lib.BAD_REPLY} (4 attempts): reply has empty content"
  for error, failed in ((judge_lib.UNPARSEABLE, True), (final, True), ("HTTP 400: long", True),
                        (judge_lib.NO_THINK, False), (None, False), ("gave up after 4", False)):
    assert judge_lib.judge_failed(error) is failed, error
  assert not judge_lib.retryable(final)
  base = {"benchmark": "b", "variant": "base", "answer": "A", "parsed": "A", "correct": True,
          "unparsed": False, "letters": ["A", "B"]}
  recs = [dict(base, item_id="1", judge_letter="A", consistent=True, judge_error=None),
          dict(base, item_id="2", judge_letter=None, consistent=None,
               judge_error="HTTP 400: context length exceeded")]
  # an unparseable reply is no verdict either: not "the CoT concluded nothing"
  recs.append(dict(base, item_id="3", judge_letter=None, consistent=None,
                   judge_error=judge_lib.UNPARSEABLE))
  recs.append(dict(base, item_id="4", judge_letter=None, consistent=None,
                   judge_error=judge_lib.NO_THINK))  # the model's doing: no conclusion
  assert metrics.consistency_rate(recs) == 0.5 and metrics.no_conclusion_rate(recs) == 0.5
  assert metrics.judge_error_rate(recs) == 0.5
  assert metrics.accuracy(recs) == 1.0  # the answer still counts
  from evals import summary
  look = summary.summary_lookup(summary.summarize(recs, n=10))
  assert look[("b", "base", "consistency")]["n"] == 2 and look[("b", "base", "accuracy")]["n"] == 4
  assert look[("b", "base", "judge_error_rate")]["value"] == 0.5


def test_http_unreachable_server_gives_error_verdicts():
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  judge = HTTPJudge(f"http://127.0.0.1:{port}", "m", timeout=0.3, max_retries=1, backoff=0.01)
  (verdict,) = judge.judge(requests_for(["q0"]))
  assert verdict.letter is None and verdict.error.startswith("gave up after 2 attempts")


def test_http_concurrent_batch_keeps_order_and_dedups(server):
  questions = [f"q{i}" for i in range(12)] + ["q1", "q2"]
  judge = http_judge(server, max_workers=4)
  verdicts = judge.judge(requests_for(questions) + [JudgeRequest("q9", OPTIONS, LETTERS, None)])
  want = [LETTERS[int(q[1:]) % 4] for q in questions] + [None]
  assert [v.letter for v in verdicts] == want
  assert verdicts[-1].error == judge_lib.NO_THINK
  assert len(server.state["requests"]) == 12  # duplicates asked once, no think: not asked


def test_http_cache_makes_reruns_free(server, tmp_path):
  cache = tmp_path / "cache" / "judge.jsonl"
  batch = requests_for(["q0", "q1", "q2", "q3"])
  server.state["script"] = [send(200, b"garbage")] * 3  # q0's 3 attempts are unusable
  first = http_judge(server, cache_path=str(cache), max_workers=1).judge(batch)
  assert [v.letter for v in first] == [None, "B", "C", "D"]
  assert len(server.state["requests"]) == 6
  lines = [json.loads(l) for l in cache.read_text().splitlines()]
  assert len(lines) == 3 and {l["prompt_version"] for l in lines} == {JUDGE_PROMPT_VERSION}
  assert {l["model"] for l in lines} == {"judge-model"}

  second = http_judge(server, cache_path=str(cache)).judge(batch[1:])
  assert second == first[1:] and len(server.state["requests"]) == 6  # no request at all

  third = http_judge(server, cache_path=str(cache)).judge(batch)  # only the failure is re-asked
  assert [v.letter for v in third] == ["A", "B", "C", "D"] and len(server.state["requests"]) == 7


def test_http_cache_is_keyed_by_model_and_survives_a_torn_line(server, tmp_path):
  cache = tmp_path / "judge.jsonl"
  batch = requests_for(["q1"])
  http_judge(server, cache_path=str(cache)).judge(batch)
  HTTPJudge(server.url, "other-model", timeout=0.3, cache_path=str(cache)).judge(batch)
  assert len(server.state["requests"]) == 2  # another model is another key
  with open(cache, "a") as f:
    f.write('{"key": "abc", "conte')  # a run killed mid-append
  judge = http_judge(server, cache_path=str(cache))
  assert len(judge.cache) == 2
  judge.judge(requests_for(["q2"]))
  assert len(server.state["requests"]) == 3
  assert len(http_judge(server, cache_path=str(cache)).cache) == 3  # the new line is intact


def test_http_judge_prompt_version_changes_the_cache_key():
  judge = HTTPJudge("http://127.0.0.1:9", "m")
  messages = judge_prompt("q", OPTIONS, LETTERS, "t")
  key = judge.cache_key(messages)
  judge.prompt_version = "v2"
  assert judge.cache_key(messages) != key


# ----------------------------------------------------------------------------------------------
# make_judge

def test_make_judge(tmp_path, monkeypatch):
  monkeypatch.delenv("JUDGE_MODEL", raising=False)
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  assert isinstance(make_judge("rule"), RuleJudge)

  judge = make_judge("http://127.0.0.1:8000/v1/#Qwen3-32B", timeout=2.0)
  assert isinstance(judge, HTTPJudge) and judge_lib.HTTPJudge is HTTPJudge
  assert (judge.url, judge.model, judge.api_key, judge.timeout) == (
      "http://127.0.0.1:8000/v1/chat/completions", "Qwen3-32B", None, 2.0)
  # Qwen3 (the study's judge) thinks by default: its few reply tokens would end inside <think>
  assert judge.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
  assert make_judge("http://h/v1#Qwen3-32B", extra_body={}).extra_body == {}
  with pytest.raises(ValueError, match="JUDGE_MODEL"):
    make_judge("https://example.invalid/v1")
  with pytest.raises(ValueError, match="JUDGE_MODEL"):  # before any model loads
    judge_lib.check_spec("https://example.invalid/v1")
  monkeypatch.setenv("JUDGE_MODEL", "gpt-oss-120b")
  monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
  judge = make_judge("https://example.invalid/v1")
  assert (judge.model, judge.api_key) == ("gpt-oss-120b", "sk-env")
  assert judge.name == "http:gpt-oss-120b"

  model_dir = tmp_path / "Qwen2.5-VL-7B-Instruct"
  model_dir.mkdir()
  seen = []
  fake = FakeGenerate({"q1": "C"})
  judge = make_judge(str(model_dir), lambda path: seen.append(path) or fake)
  assert isinstance(judge, LLMJudge) and seen == [str(model_dir)]
  assert judge.name == "llm:Qwen2.5-VL-7B-Instruct"
  assert judge.judge(requests_for(["q1"]))[0].letter == "C"
  with pytest.raises(ValueError, match="no generate_fn_factory"):
    make_judge(str(model_dir))
  with pytest.raises(ValueError, match="unknown judge spec"):
    make_judge(str(tmp_path / "missing"))
