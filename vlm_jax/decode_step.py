"""The sampler's jitted programs (`vlm_jax.sampler.Sampler` drives them): the prompt prefill
into an explicit KV cache, and the `lax.while_loop` decode over it with its state donated.

Both run `model.embed` / `text.decoder` / `model.apply`, the same code as `forward` and the
log-prob kernel, so rollout and training log-probs cannot drift. `Spec` is a decode program's
static part; `TRACE_COUNTS` counts traces (compiles) per program.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from vlm_jax import (greedy_screen, model as model_lib, sharding as sharding_lib, stops, text,
                     token_choice, vision)
from vlm_jax.config import ModelConfig

TRACE_COUNTS = {"prefill": 0, "decode": 0}  # incremented at trace time: a compile counter


@dataclasses.dataclass(frozen=True)
class Spec:
  """The static part of one decode program."""
  max_new: int  # buffer size: `max_new_tokens` bucketed (the count itself is a traced control)
  n: int
  greedy: bool
  top_k: int
  top_p: bool
  stats: bool  # log-probs and entropies
  screen: bool = False  # greedy through `greedy_screen` (needs greedy and not stats)
  penalty: bool = False  # a repetition penalty (the state then carries `seen` [R, V])
  tempered: bool = False  # stats of softmax(logits / temperature) (needs stats, not greedy)

  def __post_init__(self):
    if self.screen and (self.stats or not self.greedy or self.penalty):
      raise ValueError("the greedy screen needs greedy decoding without log-probs or penalty")
    if self.tempered and (self.greedy or not self.stats):
      raise ValueError("tempered log-probs need sampling (temperature > 0) and log-probs")


def choose(logits, key, spec: Spec, temperature, top_p):
  if spec.greedy:
    return token_choice.argmax(logits)[0]
  z = logits / temperature
  if spec.top_k:
    kth = jax.lax.top_k(z, spec.top_k)[0][..., -1:]
    z = jnp.where(z < kth, -jnp.inf, z)
  if spec.top_p:
    desc = jnp.sort(z, -1)[..., ::-1]
    cum = jnp.cumsum(jax.nn.softmax(desc, -1), -1)
    keep = (cum - jax.nn.softmax(desc, -1)) < top_p   # the top token is always kept
    threshold = jnp.min(jnp.where(keep, desc, jnp.inf), -1, keepdims=True)
    z = jnp.where(z < threshold, -jnp.inf, z)
  return token_choice.gumbel_max(z, key)


def penalize(z, seen, penalty):
  """transformers' RepetitionPenaltyLogitsProcessor: seen tokens' logits / penalty where
  positive, * penalty where not."""
  return jnp.where(seen, jnp.where(z < 0, z * penalty, z / penalty), z)


@functools.partial(jax.jit, static_argnums=(2, 3))
def seen_tokens(input_ids, token_mask, n: int, vocab: int):
  """bool [B * n, V]: which ids each row's prompt holds (its real tokens only: unlike
  transformers, which also counts a padded row's pad id, a row is penalised as if alone)."""
  ids = jnp.where(jnp.repeat(token_mask, n, axis=0), jnp.repeat(input_ids, n, axis=0), vocab)
  rows = jnp.arange(ids.shape[0])[:, None]
  return jnp.zeros((ids.shape[0], vocab), bool).at[rows, ids].set(True, mode="drop")


def kv_constraint(cache: dict, mesh) -> dict:
  if mesh is None:
    return cache
  def constrain(x, heads_axis):
    spec = sharding_lib.cache_spec(mesh, x.shape, heads_axis)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
  if isinstance(cache["k"], list):  # per-layer heads-major: k [B, K, H, S], v [B, K, S, H]
    return dict(cache, k=[constrain(x, 1) for x in cache["k"]],
                v=[constrain(x, 1) for x in cache["v"]])
  return dict(cache, k=constrain(cache["k"], 3), v=constrain(cache["v"], 3))


@functools.partial(jax.jit, static_argnums=(1, 3, 4, 5, 6))
def prefill(params, config: ModelConfig, inputs, n: int, cache_len: int, mesh, per_layer: bool):
  """The prompts once, then their KV cache (k, v: [L, B * n, S, K, H], or per-layer heads-major
  lists for `decode(unstack=True)`, which then donates them in place; see `text`), last logits
  and next M-RoPE position, each repeated for the n samples of a prompt."""
  TRACE_COUNTS["prefill"] += 1
  x = model_lib.embed(params, config, inputs, mesh)
  hidden, kv = text.decoder(params["text"], config.text, x, inputs["positions"],
                            inputs["token_mask"], return_kv=True, last_only=True)
  t = x.shape[1]
  rows = lambda a, axis=0: jnp.repeat(a, n, axis=axis)
  if per_layer:  # [B, T, K, H] -> heads-major k [B * n, K, H, S], v [B * n, K, S, H] per layer
    pad = lambda a, axis: jnp.pad(rows(a), [(0, cache_len - t) if i == axis else (0, 0)
                                           for i in range(4)])
    k, v = zip(*(text.heads_major(a, b) for a, b in zip(kv["k"], kv["v"])))
    k, v = [pad(a, 3) for a in k], [pad(a, 2) for a in v]
  else:  # [L, B, T, K, H] -> [L, B * n, S, K, H]
    grow = lambda a: jnp.pad(rows(a, 1), ((0, 0), (0, 0), (0, cache_len - t), (0, 0), (0, 0)))
    k, v = grow(kv["k"]), grow(kv["v"])
  mask = rows(inputs["token_mask"])
  cache = {"k": k, "v": v, "mask": jnp.pad(mask, ((0, 0), (0, cache_len - t))),
           "end": jnp.asarray(t, jnp.int32)}
  logits = rows(text.lm_head(params["text"], config.text, hidden[:, -1]))
  next_pos = (mask.sum(-1) + rows(inputs["rope_deltas"][:, 0])).astype(jnp.int32)
  return {"cache": kv_constraint(cache, mesh), "logits": logits, "next_pos": next_pos}


def head_array(params: dict, config: ModelConfig):
  """The stored array behind the LM head (the embedding when tied)."""
  text_params = params["text"]
  return (text_params["embed"]["embedding"] if config.text.tie_word_embeddings
          else text_params["lm_head"]["kernel"])


@functools.partial(jax.jit, static_argnums=1)
def screen_tables(head, tied: bool):
  """`greedy_screen.tables` of the stored head array (the embedding [V, D] when tied, else the
  LM head [D, V], whose transposed float32 copy the tables keep)."""
  return greedy_screen.tables(head if tied else head.T, keep_rows=not tied)


unstack_layers_jit = jax.jit(text.unstack_layers)
unstack_blocks_jit = jax.jit(vision.unstack_blocks)


@functools.partial(jax.jit, static_argnums=(1, 4))
def last_logprobs(params, config: ModelConfig, inputs, token_ids, mesh=None):
  """log p(token_ids [K]) for the token after the last column (left-aligned rows) [B, K]."""
  TRACE_COUNTS["score"] = TRACE_COUNTS.get("score", 0) + 1
  hidden, _ = model_lib.apply(params, config, inputs, last_only=True, mesh=mesh)
  logits = text.lm_head(params["text"], config.text, hidden[:, -1])
  return jnp.take(jax.nn.log_softmax(logits, -1), token_ids, axis=-1)


@functools.partial(jax.jit, static_argnums=(1, 3, 5), donate_argnums=(2,))
def decode(params, config: ModelConfig, state, spec: Spec, controls, unstack: bool):
  TRACE_COUNTS["decode"] += 1
  rows = state["logits"].shape[0]
  if unstack:  # per-layer weights (`text.unstack_layers`) and the prefill's per-layer cache
    layer_list = text.unstack_layers(params["text"]["layers"])
    params = dict(params, text=dict(params["text"], layers=layer_list))

  # vision placeholder tokens are never sampled: a generated one has no pixels behind it
  ban = lambda z: z.at[:, controls["banned"]].set(-jnp.inf, mode="drop")
  if spec.screen:  # the step's greedy token, not its logits, is carried
    screen = greedy_screen.with_rows(controls["screen"],  # the tables the Sampler keeps
                                     params["text"]["embed"]["embedding"])
    head_logits = lambda h: text.lm_head(params["text"], config.text, h)
    mask = greedy_screen.ban_mask(state["logits"].shape[1], controls["banned"])
    # (the prefill's logits stay in the state, unchanged: a donated buffer the loop carries
    # is aliased in place, one it drops is not)
    first = token_choice.argmax(ban(state["logits"].astype(jnp.float32)))[0]
    state = dict(state, choice=first)

  def cond(s):
    return (s["step"] < controls["max_new"]) & ~jnp.all(s["done"])

  def body(s):
    if spec.screen:
      token = s["choice"]
    else:
      z = s["logits"].astype(jnp.float32)
      step_key = jax.random.fold_in(controls["rng"], s["step"])
      key = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(controls["row_ids"])
      allowed = ban(penalize(z, s["seen"], controls["penalty"]) if spec.penalty else z)
      if spec.greedy:
        token, allowed_max = token_choice.argmax(allowed)
      else:
        token = choose(allowed, key, spec, controls["temperature"], controls["top_p"])
    token = jnp.where(s["done"], controls["pad_id"], token)
    live = ~s["done"]
    write = lambda buf, v: jax.lax.dynamic_update_slice_in_dim(buf, v[:, None], s["step"], 1)
    if spec.stats:  # one exp pass over the vocabulary: 6-10% of a CPU decode step
      z_max = None  # greedy: the argmax's max, with the banned logits, is max(z)
      if spec.greedy and not spec.penalty:
        banned = jnp.take(z, controls["banned"], axis=1, mode="clip")
        z_max = jnp.maximum(allowed_max, jnp.max(banned, -1))
      if spec.tempered:
        z = z / controls["temperature"]
      logp, entropy = token_choice.logp_entropy(z, token, z_max)
      s = dict(s, logprobs=write(s["logprobs"], jnp.where(live, logp, 0.0)),
               entropies=write(s["entropies"], jnp.where(live, entropy, 0.0)))
    if spec.penalty:
      s = dict(s, seen=s["seen"].at[jnp.arange(rows), token].set(True))
    stop_state, stopped = stops.hit(s["stop_state"], controls["stop_table"], controls["stop_ids"],
                                    token)
    done = s["done"] | stopped
    step_inputs = {"input_ids": token[:, None], "token_mask": jnp.ones((rows, 1), bool),
                   "positions": jnp.broadcast_to(s["next_pos"][None, :, None], (3, rows, 1))}
    hidden, cache = model_lib.apply(params, config, step_inputs, s["cache"])
    if spec.screen:
      head = dict(choice=greedy_screen.argmax(hidden[:, 0], screen, mask, head_logits))
    else:
      head = dict(logits=text.lm_head(params["text"], config.text, hidden[:, 0]))
    return dict(
        s, cache=cache, **head, next_pos=s["next_pos"] + 1, step=s["step"] + 1, done=done,
        stop_state=stop_state, tokens=write(s["tokens"], token), lengths=s["lengths"] + live)

  return jax.lax.while_loop(cond, body, state)


def init_state(prefill_out: dict, spec: Spec, stop_strings: int, pad_id: int, live_rows) -> dict:
  rows = prefill_out["logits"].shape[0]
  zeros = lambda dtype: jnp.zeros((rows, spec.max_new), dtype)
  return dict(prefill_out, step=jnp.zeros((), jnp.int32), done=~jnp.asarray(live_rows),
              stop_state=jnp.zeros((rows, stop_strings), jnp.int32),
              tokens=jnp.full((rows, spec.max_new), pad_id, jnp.int32),
              lengths=jnp.zeros((rows,), jnp.int32), logprobs=zeros(jnp.float32),
              entropies=zeros(jnp.float32))
