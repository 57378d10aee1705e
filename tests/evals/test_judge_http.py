"""The HTTP judge (an OpenAI-compatible chat server) against a scripted loopback server.

Each test scripts a ThreadingHTTPServer on 127.0.0.1 (port 0); it counts and records requests
and is shut down when the test ends.
"""

import http.server
import json
import re
import socket
import threading
import time

import pytest

from evals import judge as judge_lib
from evals.judge import JUDGE_PROMPT_VERSION, JudgeRequest, Verdict, judge_prompt
from evals.judge_http import HTTPJudge
from tests.evals.test_judge import LETTERS, OPTIONS, requests_for



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
