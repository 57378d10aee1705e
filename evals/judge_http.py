"""An LLM judge behind an OpenAI-compatible `POST {base_url}/chat/completions` (vLLM, SGLang, ...).

Standard library only. Per request: `{"model", "messages", "temperature": 0, "max_tokens"}`
(plus `extra_body`, e.g. `{"chat_template_kwargs": {"enable_thinking": False}}` for Qwen3).
Timeouts, connection and TLS errors, 408/425/429, 5xx and 200 replies with no usable content
(not JSON, no choices, empty content) are retried with exponential backoff; anything that still
yields no usable reply becomes a Verdict with letter None and `error` set: one bad reply never
stops a run. After the retries, a server that could not be reached or kept failing is retried
by the next run (the record is not written, `judge.retryable`); one that answered, unusably
(`judge.BAD_REPLY`), or refused (4xx), gives a final verdict-less record (`judge.judge_failed`).
`check()` asks once, past the cache, whether the server gives a usable reply at all (`evals.run`
calls it before its model loads).

Cache: with `cache_path`, every usable reply is appended to a JSONL file, one object a line:
  {"key": sha256 of model+messages+prompt version+max_tokens+extra_body, "model", "prompt_version",
   "content"}
and the file is loaded on start, so a rerun (or a resumed run) asks only what it has not asked.
Failed replies are not cached: a rerun retries them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Sequence

from evals.judge import (BAD_REPLY, JUDGE_PROMPT_VERSION, JudgeRequest, Verdict, has_think,
                         judge_prompt, no_think_verdict, verdict_from_reply)

# Worth another try: the server or the network may recover. OSError covers URLError, timeouts,
# refused/reset connections and TLS errors raised while the body is read (ssl.SSLEOFError).
_TRANSIENT = (OSError, http.client.HTTPException)
_RETRY_STATUS = frozenset({408, 425, 429})  # and every 5xx
_MAX_RETRY_AFTER = 60.0  # seconds; a server asking for longer is treated as asking for this


class ResponseCache:
  """Judge replies by key, in memory and appended to a JSONL file (thread-safe)."""

  def __init__(self, path: str):
    self.path = path
    self._lock = threading.Lock()
    self._entries: dict[str, str] = {}
    self._needs_newline = False
    self._load()

  def _load(self):
    if not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8") as f:
      text = f.read()
    for line in text.splitlines():
      try:
        record = json.loads(line)
        self._entries[record["key"]] = record["content"]
      except (ValueError, KeyError, TypeError):
        continue  # a run killed mid-append leaves a partial last line: that reply is re-asked
    # Without this, the next append would be glued onto the partial line and lost with it.
    self._needs_newline = bool(text) and not text.endswith("\n")

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, key: str) -> str | None:
    with self._lock:
      return self._entries.get(key)

  def put(self, key: str, record: dict):
    """Stores `record["content"]` under `key` and appends the record (plus key) to the file."""
    line = json.dumps({"key": key, **record}, ensure_ascii=False)
    with self._lock:
      self._entries[key] = record["content"]
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(("\n" if self._needs_newline else "") + line + "\n")
      self._needs_newline = False


def reply_content(raw: bytes) -> tuple[str | None, str | None]:
  """(content, None) of a chat-completions reply body, or (None, why it is unusable)."""
  try:
    data = json.loads(raw)
  except (ValueError, UnicodeDecodeError):
    return None, "reply is not JSON"
  if not isinstance(data, dict):
    return None, "reply is not a JSON object"
  choices = data.get("choices")
  if not isinstance(choices, list) or not choices:
    detail = f" (server error: {data['error']})" if data.get("error") else ""
    return None, "reply has no choices" + detail
  message = choices[0].get("message") if isinstance(choices[0], dict) else None
  content = message.get("content") if isinstance(message, dict) else None
  if not isinstance(content, str) or not content.strip():
    return None, "reply has empty content"
  return content, None


class HTTPJudge:
  """LLM judge over HTTP; see the module doc. `judge` keeps the batch order.

  max_retries: retries after the first attempt (so max_retries + 1 attempts at most); the k-th
  retry waits backoff * 2**(k-1) seconds, or the server's Retry-After if longer (capped).
  """

  def __init__(self, base_url: str, model: str, api_key: str | None = None,
               timeout: float = 30.0, max_retries: int = 3, backoff: float = 0.5,
               cache_path: str | None = None, max_workers: int = 4, max_tokens: int = 16,
               name: str | None = None, extra_body: dict | None = None,
               max_think_chars: int = 12000):
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model, self.api_key, self.timeout = model, api_key, timeout
    self.max_retries, self.backoff, self.max_workers = max_retries, backoff, max_workers
    self.max_tokens, self.extra_body = max_tokens, dict(extra_body or {})
    self.max_think_chars = max_think_chars
    self.name = name or f"http:{model}"
    self.prompt_version = JUDGE_PROMPT_VERSION
    self.cache = ResponseCache(cache_path) if cache_path else None

  # -- batch ------------------------------------------------------------------------------------

  def judge(self, batch: Sequence[JudgeRequest]) -> list[Verdict]:
    verdicts = [no_think_verdict(self.name, self.prompt_version) for _ in batch]
    groups: dict[str, tuple[list[dict], list[int]]] = {}  # key -> (messages, batch indices)
    for i, request in enumerate(batch):
      if has_think(request):
        messages = judge_prompt(request.question, request.options, request.letters,
                                request.think, self.max_think_chars)
        groups.setdefault(self.cache_key(messages), (messages, []))[1].append(i)
    replies = self._replies({key: messages for key, (messages, _) in groups.items()})
    for key, (_, indices) in groups.items():
      content, error = replies[key]
      for i in indices:
        verdicts[i] = self._verdict(content, error, batch[i])
    return verdicts

  def _verdict(self, content: str, error: str | None, request: JudgeRequest) -> Verdict:
    if error is not None:
      return Verdict(None, content, self.name, self.prompt_version, error)
    return verdict_from_reply(content, request, self.name, self.prompt_version)

  def _replies(self, todo: dict[str, list[dict]]) -> dict[str, tuple[str, str | None]]:
    """key -> (content or raw body, error): cached ones first, the rest over the thread pool."""
    out, missing = {}, []
    for key, messages in todo.items():
      cached = self.cache.get(key) if self.cache else None
      if cached is not None:
        out[key] = (cached, None)
      else:
        missing.append(key)
    if missing:
      with concurrent.futures.ThreadPoolExecutor(max(1, self.max_workers)) as pool:
        for key, reply in zip(missing, pool.map(lambda k: self._ask(k, todo[k]), missing)):
          out[key] = reply
    return out

  def _ask(self, key: str, messages: list[dict]) -> tuple[str, str | None]:
    content, error = self.query(messages)
    if error is None and self.cache is not None:
      self.cache.put(key, {"model": self.model, "prompt_version": self.prompt_version,
                           "content": content})
    return content, error

  def cache_key(self, messages: list[dict]) -> str:
    # max_tokens and extra_body change replies too, so they are part of the key.
    blob = json.dumps({"model": self.model, "messages": messages,
                       "prompt_version": self.prompt_version, "max_tokens": self.max_tokens,
                       "extra_body": self.extra_body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()

  def check(self) -> str:
    """'' when the server gives a usable reply to one judge request, else why not (a wrong URL,
    key or model name, a server that is down, a reasoning model that spends `max_tokens` before
    it answers); asked without the cache, so that a run can stop before its model loads."""
    messages = judge_prompt("Is the sky blue?", ["yes", "no"], ["A", "B"],
                            "The sky is blue, so the answer is A.", self.max_think_chars)
    content, error = self.query(messages)
    if error is None:
      return ""
    hint = " (a reasoning model may need more max_tokens)" if "empty content" in error else ""
    return f"judge {self.url} (model {self.model!r}) gave no usable reply: {error}{hint}"

  # -- one request ------------------------------------------------------------------------------

  def payload(self, messages: list[dict]) -> dict:
    return {**self.extra_body, "model": self.model, "messages": messages, "temperature": 0,
            "max_tokens": self.max_tokens}

  def query(self, messages: list[dict]) -> tuple[str, str | None]:
    """(content, None) or (raw reply text or "", error), with retries; never raises on I/O."""
    body = json.dumps(self.payload(messages)).encode("utf-8")
    last, retry_after = "", 0.0
    for attempt in range(self.max_retries + 1):
      if attempt:
        time.sleep(max(self.backoff * 2 ** (attempt - 1), retry_after))
      try:
        status, headers, raw = self._post(body)
      except _TRANSIENT as e:
        last, retry_after = f"{type(e).__name__}: {e}", 0.0
        continue
      text = raw.decode("utf-8", errors="replace")[:2000]
      if status in _RETRY_STATUS or status >= 500:
        last, retry_after = f"HTTP {status}: {text[:200]}", _retry_after(headers)
        continue
      if status != 200:
        return text, f"HTTP {status}: {text[:200]}"
      content, error = reply_content(raw)
      if error is None:
        return content, None
      last, bad, retry_after = f"HTTP 200: {error}", (text, error), 0.0
    if last.startswith("HTTP 200: "):  # the server answers, unusably: final (see judge.BAD_REPLY)
      return bad[0], f"{BAD_REPLY} ({self.max_retries + 1} attempts): {bad[1]}"
    return "", f"gave up after {self.max_retries + 1} attempts; last: {last}"

  def _post(self, body: bytes) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:  # a status line arrived: the caller decides on retry
      with e:
        return e.code, dict(e.headers or {}), e.read()


def _retry_after(headers: dict) -> float:
  """Seconds from a Retry-After header (the numeric form only), capped; 0 if absent."""
  value = {k.lower(): v for k, v in headers.items()}.get("retry-after", "")
  try:
    return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
  except ValueError:
    return 0.0
