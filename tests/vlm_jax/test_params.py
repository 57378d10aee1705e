"""Parameter table: full-size presets via eval_shape, counts equal to transformers' (meta device)."""

import jax
import pytest

import vlm_jax
from vlm_jax import config as config_lib, config_json
from vlm_jax import params as params_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["3b", "7b", "32b", "72b"])
def test_full_size_param_count_equals_transformers(name):
  config = config_lib.get_config(name)
  shapes = jax.eval_shape(lambda: vlm_jax.init_params(config, jax.random.key(0)))
  hf_config = transformers.Qwen2_5_VLConfig(**config_json.to_hf(config))
  with torch.device("meta"):
    model = transformers.Qwen2_5_VLForConditionalGeneration(hf_config)
  want = sum(p.numel() for p in model.parameters())
  assert params_lib.count_params(shapes) == want
  assert params_lib.count_params(params_lib.param_specs(config)) == want


def test_init_matches_specs_and_check_params_reports_problems():
  config = config_lib.get_config("tiny")
  params = vlm_jax.init_params(config, jax.random.key(0))
  params_lib.check_params(params, config)
  del params["text"]["norm"]
  params["text"]["layers"]["q"]["kernel"] = params["text"]["layers"]["q"]["kernel"][:, :3]
  params["text"]["extra"] = params["text"]["embed"]["embedding"]
  with pytest.raises(ValueError) as err:
    params_lib.check_params(params, config)
  for part in ("text/norm/scale", "text/layers/q/kernel", "text/extra"):
    assert part in str(err.value)
