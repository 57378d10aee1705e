"""The Qwen3 text architecture (the LLM judge) on the same core vs transformers' Qwen3."""

import numpy as np
import pytest

import vlm_jax
from vlm_jax import config_json
from vlm_jax.sampler import Sampler, SamplingParams

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=[False, True], ids=["no_bias", "attention_bias"])
def qwen3(request, tmp_path_factory):
  cfg = transformers.Qwen3Config(
      vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
      num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6,
      rope_parameters=dict(rope_type="default", rope_theta=1e6), tie_word_embeddings=False,
      attention_bias=request.param, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  torch.manual_seed(0)
  model = transformers.Qwen3ForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.add_(0.2 * torch.randn_like(p))
      elif "embed" not in name:
        p.mul_(4.0)
  path = str(tmp_path_factory.mktemp("qwen3"))
  model.save_pretrained(path)
  return model, path


def test_logits_match_transformers(qwen3):
  model, path = qwen3
  config, params = vlm_jax.load_hf(path)
  assert config.architecture == "qwen3" and config.text.qk_norm and config.vision is None
  rng = np.random.RandomState(0)
  ids = rng.randint(3, 500, (2, 11))
  mask = np.ones_like(ids)
  mask[1, :3] = 0  # left padding
  with torch.no_grad():
    position_ids = torch.tensor(np.clip(np.cumsum(mask, -1) - 1, 0, None))
    want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=position_ids).logits.numpy()
  got = np.asarray(vlm_jax.forward(params, config, ids, mask))
  real = mask == 1
  assert np.abs(got[real] - want[real]).max() < 1e-4


def test_greedy_generation_matches(qwen3):
  model, path = qwen3
  config, params = vlm_jax.load_hf(path)
  ids = np.random.RandomState(1).randint(3, 500, (2, 9))
  mask = np.ones_like(ids)
  with torch.no_grad():
    want = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          do_sample=False, max_new_tokens=16, eos_token_id=None,
                          pad_token_id=0)[:, 9:].numpy()
  out = Sampler(params, config, pad_id=0)({"input_ids": ids, "attention_mask": mask},
                                          SamplingParams(max_new_tokens=16))
  np.testing.assert_array_equal(out.tokens, want)


def test_config_round_trip_and_save(qwen3, tmp_path):
  model, path = qwen3
  config, params = vlm_jax.load_hf(path)
  assert config_json.from_hf(config_json.to_hf(config)) == config
  vlm_jax.save_hf(params, config, str(tmp_path))
  reloaded, info = transformers.Qwen3ForCausalLM.from_pretrained(str(tmp_path),
                                                                 output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  ids = torch.tensor([[5, 6, 7, 8]])
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(ids).logits.numpy(), model(ids).logits.numpy())
