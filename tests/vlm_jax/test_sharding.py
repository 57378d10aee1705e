"""Meshes, the rules table and sharded execution on 8 fake CPU devices (see tests/conftest.py)."""

import io

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import vlm_jax
from vlm_jax import params as params_lib
from vlm_jax import sharding
from tests.vlm_jax import hf_models

MESHES = ["1x8", "2x4", "4x2", "8x1", "data=2,fsdp=2,tensor=2", "fsdp=4,tensor=2"]
BATCH = [[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10], [2, ("image", (1, 4, 4))]]

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  pytest.importorskip("transformers")
  path = str(tmp_path_factory.mktemp("shardable"))
  hf_models.save_hf_model("shardable", path)
  config, params = vlm_jax.load_hf(path)
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  return path, config, np.asarray(vlm_jax.forward(params, config, **batch)), batch


@pytest.mark.parametrize("spec", MESHES)
def test_sharded_forward_equals_single_device(spec, checkpoint):
  path, config, want, batch = checkpoint
  mesh = sharding.parse_mesh(spec)
  _, params = vlm_jax.load_hf(path, mesh=mesh)
  got = np.asarray(vlm_jax.forward(params, config, **batch, mesh=mesh))
  real = batch["attention_mask"] == 1
  np.testing.assert_allclose(got[real], want[real], atol=1e-5)


def test_each_batch_shard_runs_the_tower_on_its_own_images(checkpoint):
  """On a data-parallel mesh the vision inputs are split by batch shard (a leading axis over
  the batch mesh axes), not replicated: per device the program does a fraction of the vision
  work (XLA's cost analysis), and the logits stay those of one device (the test above)."""
  from vlm_jax import buckets, model as model_lib
  path, config, _, _ = checkpoint
  mesh = sharding.parse_mesh("8x1")
  _, params = vlm_jax.load_hf(path, mesh=mesh)
  batch = hf_models.build_batch([[5, ("image", (1, 16, 16)), 7]] * 8, config.vision.patch_dim)
  inputs = model_lib.pad_batch(model_lib.prepare_inputs(config, **batch), 8)
  inputs.pop("rope_deltas")
  flops = {}
  for shards in (1, 8):
    split = sharding.shard_inputs(buckets.pad_vision(inputs, config.vision, shards=shards), mesh)
    if shards == 8:
      assert split["pixel_values"].shape[0] == 8
      assert split["pixel_values"].sharding.spec == P("data")
      assert split["vision_layout"]["window_slots"].sharding.spec == P("data")
    cost = model_lib._logits.lower(params, config, split).compile().cost_analysis()
    flops[shards] = (cost[0] if isinstance(cost, list) else cost)["flops"]
  assert flops[8] < flops[1] / 3, flops  # 8 images: one per device instead of all 8 on each


@pytest.mark.parametrize("spec", ["data=2,fsdp=2,tensor=2", "data=2,fsdp=4"])
def test_no_full_rematerialization_on_data_and_fsdp_meshes(spec, checkpoint, capfd):
  """The embedding lookup's rows come out split over fsdp by their feature axis; on a mesh with
  both data and fsdp XLA used to gather the whole [B, T, D] on every device to split it by
  batch ("Involuntary full rematerialization", in the forward, the sampler's prefill and the
  evals' letter scoring). `sharding.constrain_batch` moves it in two steps XLA can do. Compiled
  afresh (no caches), so XLA's log is seen; the results stay those of one device."""
  from vlm_jax.sampler import Sampler, SamplingParams
  path, config, want, batch = checkpoint
  sampling = SamplingParams(max_new_tokens=3, n=2)
  one = Sampler(vlm_jax.load_hf(path)[1], config, pad_id=0)
  want_samples, want_scores = one(batch, sampling), one.next_token_logprobs(batch, [1, 2, 3])
  mesh = sharding.parse_mesh(spec)
  _, params = vlm_jax.load_hf(path, mesh=mesh)
  jax.clear_caches()
  capfd.readouterr()
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    got = np.asarray(vlm_jax.forward(params, config, **batch, mesh=mesh))
    sampler = Sampler(params, config, pad_id=0, mesh=mesh)
    samples = sampler(batch, sampling)
    scores = sampler.next_token_logprobs(batch, [1, 2, 3])  # the evals' letter scoring
  finally:
    jax.config.update("jax_enable_compilation_cache", True)
  log = capfd.readouterr().err
  assert "Involuntary full rematerialization" not in log, log[-2000:]
  real = batch["attention_mask"] == 1
  np.testing.assert_allclose(got[real], want[real], atol=1e-5)
  np.testing.assert_array_equal(samples.tokens, want_samples.tokens)
  np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_parameters_really_are_sharded(checkpoint):
  path, config, _, _ = checkpoint
  mesh = sharding.parse_mesh("data=2,fsdp=2,tensor=2")
  _, params = vlm_jax.load_hf(path, mesh=mesh)
  q = params["text"]["layers"]["q"]["kernel"]  # [L, D, N, H]
  assert q.sharding.spec == P(None, "fsdp", "tensor", None)
  shard = q.addressable_shards[0].data
  assert shard.shape == (q.shape[0], q.shape[1] // 2, q.shape[2] // 2, q.shape[3])
  assert len({s.device for s in q.addressable_shards}) == 8
  emb = params["text"]["embed"]["embedding"]  # [V, D]
  assert emb.sharding.spec == P("tensor", "fsdp")
  assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 2, emb.shape[1] // 2)
  norm = params["text"]["norm"]["scale"]
  assert norm.sharding.spec == P("fsdp")
  # the "AxB" form: tensor parallel over `model`, params replicated over `data`
  mesh = sharding.parse_mesh("2x4")
  _, params = vlm_jax.load_hf(path, mesh=mesh)
  mlp = params["text"]["layers"]["mlp"]["gate"]["kernel"]  # [L, D, F]
  assert mlp.sharding.spec == P(None, None, "model")
  assert mlp.addressable_shards[0].data.shape[-1] == mlp.shape[-1] // 4


def test_mesh_spec_errors():
  with pytest.raises(sharding.MeshError, match="needs 16 devices but 8.*device_count=16"):
    sharding.parse_mesh("4x4")
  with pytest.raises(sharding.MeshError, match="bad mesh spec"):
    sharding.parse_mesh("data=2,pipeline=4")
  with pytest.raises(sharding.MeshError, match="given twice"):
    sharding.parse_mesh("data=2,data=4")
  with pytest.raises(sharding.MeshError, match="same axis"):
    sharding.parse_mesh("model=2,tensor=4")
  with pytest.raises(sharding.MeshError, match="at least 1"):
    sharding.parse_mesh("0x8")
  assert sharding.parse_mesh_spec("4x4") == {"data": 4, "model": 4}


def test_kv_heads_and_vision_mlp_that_the_tensor_axis_does_not_divide_are_replicated(tmp_path):
  """A 3B-like model (2 KV heads) on a tensor axis of 4: the KV projections and the 90-wide
  vision MLP stay whole on every shard, the rest is split; forward and sampling equal one
  device."""
  from vlm_jax.sampler import Sampler, SamplingParams
  path = str(tmp_path)
  hf_models.save_hf_model("few_kv_heads", path, weight_scale=6.0)
  config, params = vlm_jax.load_hf(path)
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  want = np.asarray(vlm_jax.forward(params, config, **batch))
  sampling = SamplingParams(max_new_tokens=8, n=2)
  want_samples = Sampler(params, config, pad_id=0)(batch, sampling)
  mesh = sharding.parse_mesh("2x4")  # (data, model): the "AxB" form
  assert sharding.replicated_dims(config, mesh) == {
      "['text']['layers']['k']['kernel']": "kv_heads", "['text']['layers']['k']['bias']": "kv_heads",
      "['text']['layers']['v']['kernel']": "kv_heads", "['text']['layers']['v']['bias']": "kv_heads",
      "['vision']['blocks']['mlp']['gate']['kernel']": "vision_mlp",
      "['vision']['blocks']['mlp']['gate']['bias']": "vision_mlp",
      "['vision']['blocks']['mlp']['up']['kernel']": "vision_mlp",
      "['vision']['blocks']['mlp']['up']['bias']": "vision_mlp",
      "['vision']['blocks']['mlp']['down']['kernel']": "vision_mlp"}
  _, sharded = vlm_jax.load_hf(path, mesh=mesh)
  text, vision = sharded["text"]["layers"], sharded["vision"]["blocks"]
  assert text["k"]["kernel"].sharding.spec == P(None, None, None, None)
  assert text["q"]["kernel"].sharding.spec == P(None, None, "model", None)
  assert text["q"]["kernel"].addressable_shards[0].data.shape[2] == 2  # 8 heads / 4
  assert vision["mlp"]["gate"]["kernel"].sharding.spec == P(None, None, None)
  assert vision["q"]["kernel"].sharding.spec == P(None, None, "model")  # 64 / 4
  real = batch["attention_mask"] == 1
  got = np.asarray(vlm_jax.forward(sharded, config, **batch, mesh=mesh))
  np.testing.assert_allclose(got[real], want[real], atol=1e-5)
  s = Sampler(sharded, config, pad_id=0, mesh=mesh)
  got_samples = s(batch, sampling)
  np.testing.assert_array_equal(got_samples.tokens, want_samples.tokens)
  np.testing.assert_allclose(got_samples.logprobs, want_samples.logprobs, atol=1e-5)
  bare = s(batch, SamplingParams(max_new_tokens=8, n=2, logprobs=False))  # the greedy screen
  np.testing.assert_array_equal(bare.tokens, want_samples.tokens)
  # the kept fused copies (CPU devices) hold no more per device than the partly replicated source
  per_device = lambda tree: sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                                for x in jax.tree.leaves(tree))
  for name, source in (("layers", text), ("vision", vision)):
    assert per_device(s._derived.held(name)) <= per_device(source), name


def test_indivisible_dimension_names_the_parameter():
  config = vlm_jax.get_config("7b")  # 28 heads, 4 kv heads
  mesh = sharding.parse_mesh("1x8")
  with pytest.raises(sharding.MeshError, match=r"\['text'\]\['layers'\]\['q'\]\['kernel'\]"):
    sharding.param_shardings(config, mesh)
  with pytest.raises(sharding.MeshError, match="the mesh 'data=1,fsdp=2,tensor=4' can"):
    sharding.param_shardings(config, mesh)  # the hint: the largest tensor size that divides
  # each line names the logical axis and its size; the "AxB" user is also offered "AxB"
  with pytest.raises(sharding.MeshError, match=r"dimension 2 \(heads: 28\) of shape "
                     r"\(28, 3584, 28, 128\) is not divisible by mesh axis 'model' \(size 8\)"):
    sharding.param_shardings(config, mesh)
  with pytest.raises(sharding.MeshError, match="so can '2x4': params replicated over data"):
    sharding.param_shardings(config, mesh)
  with pytest.raises(sharding.MeshError, match="'data=1,fsdp=2,tensor=4' can \\(so can "
                     "'data=2,tensor=4'"):
    sharding.param_shardings(config, sharding.parse_mesh("tensor=8"))
  mesh = sharding.parse_mesh("2x4")
  shardings = sharding.param_shardings(config, mesh)  # 28 and 4 heads divide by 4
  assert shardings["text"]["layers"]["k"]["kernel"].spec == P(None, None, "model", None)
  # Qwen2.5-VL-3B's 2 KV heads on a tensor axis of 4 (the README's "4x4" on 8 devices: "2x4"),
  # and its 3420-wide vision MLP on 8: kept whole, not an error
  config = vlm_jax.get_config("3b")
  assert set(sharding.replicated_dims(config, mesh).values()) == {"kv_heads"}
  assert set(sharding.replicated_dims(config, sharding.parse_mesh("1x8")).values()) == {
      "kv_heads", "vision_mlp"}
  assert sharding.param_shardings(config, mesh)["text"]["layers"]["q"]["kernel"].spec == P(
      None, None, "model", None)
  lines = io.StringIO()
  sharding.report_replicated(config, mesh, file=lines)  # what the CLIs print after loading
  sharding.report_replicated(vlm_jax.get_config("7b"), mesh, file=lines)  # nothing to report
  assert lines.getvalue() == ("mesh {'data': 2, 'model': 4}: kv_heads kept whole on every shard "
                              "(the tensor axis does not divide them; 4 parameters)\n")


def test_named_mesh_axes_are_laid_out_data_fsdp_tensor():
  """Whatever order a spec names its axes in, tensor is the innermost axis of the device array
  (neighbouring devices: one host's GPUs, where its per-layer all-reduces belong) and data the
  outermost. Written "tensor=2,data=4", each tensor pair used to span devices 4 apart (two
  hosts of 4 devices: every all-reduce across hosts)."""
  for spec in ("tensor=2,data=4", "data=4,tensor=2"):
    mesh = sharding.parse_mesh(spec)
    assert mesh.axis_names == ("data", "tensor"), spec
    assert [[d.id for d in pair] for pair in mesh.devices] == [[0, 1], [2, 3], [4, 5], [6, 7]]
  mesh = sharding.parse_mesh("tensor=2,fsdp=2,data=2")
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert list(sharding.parse_mesh_spec("model=2,fsdp=4")) == ["fsdp", "model"]


# the released Qwen2.5-VL configs (presets equal to their config.json) on 8 devices: only the
# query heads refuse a tensor axis (7B's 28 on 8); 3B's 2 KV heads and the 3420-wide vision MLP
# on 8, and 32B/72B's 8 KV heads on 8, are split or kept whole
REAL_MESHES = MESHES + ["fsdp=2,tensor=4", "tensor=8", "fsdp=8", "data=4,fsdp=2"]


@pytest.mark.parametrize("name", ["3b", "7b", "32b", "72b"])
def test_released_sizes_on_8_device_meshes(name):
  config = vlm_jax.get_config(name)
  refused = []
  for spec in REAL_MESHES:
    mesh = sharding.parse_mesh(spec)
    tensor = mesh.shape.get("tensor", mesh.shape.get("model", 1))
    try:
      shardings = sharding.param_shardings(config, mesh)
    except sharding.MeshError as e:
      assert f"(heads: {config.text.num_heads})" in str(e), str(e)
      refused.append(spec)
      continue
    k_spec = shardings["text"]["layers"]["k"]["kernel"].spec
    split = ("tensor" in mesh.shape or "model" in mesh.shape) and (
        config.text.num_kv_heads % tensor == 0)
    assert (k_spec[2] is not None) == split, (spec, k_spec)
    # the KV cache splits its heads as the k/v weights do, its padded batch over (data, fsdp)
    rows = 4 * sharding.batch_size_multiple(mesh)
    shape = (rows, config.text.num_kv_heads, config.text.head_dim, 64)
    cache = sharding.cache_spec(mesh, shape, 1)
    assert cache[1] == k_spec[2], (spec, cache)
    assert jax.sharding.NamedSharding(mesh, cache).shard_shape(shape)[0] == 4
  assert refused == (["1x8", "tensor=8"] if name == "7b" else []), refused


def test_mesh_spec_with_non_ascii_digits_is_a_mesh_error():
  for spec in ("data=²", "fsdp=٣", "²x4"):
    with pytest.raises(sharding.MeshError, match=f"bad mesh spec '{spec}'"):
      sharding.parse_mesh(spec)


def _index_key(index):
  return tuple((s.start, s.stop, s.step) for s in index)


@pytest.mark.parametrize("spec", ["2x4", "data=4,tensor=2"])
def test_sharded_load_reads_each_distinct_slice_once(spec, checkpoint, monkeypatch):
  """make_array_from_callback asks once per device: a slice held by several devices (here the
  data axis replicates everything) is still read from disk once."""
  from vlm_jax import hf
  path, _, _, _ = checkpoint
  reads, real_reader = [], hf._reader

  def counting_reader(rule, j, *args):
    read = real_reader(rule, j, *args)

    def counted(index):
      reads.append((rule.ours[j], _index_key(index)))
      return read(index)
    return counted

  monkeypatch.setattr(hf, "_reader", counting_reader)
  _, params = vlm_jax.load_hf(path, mesh=sharding.parse_mesh(spec))
  assert len(reads) == len(set(reads)), "a slice was read more than once"
  for name, x in params_lib.flatten_paths(params, lambda v: isinstance(v, jax.Array)):
    held = {_index_key(i) for i in x.sharding.devices_indices_map(x.shape).values()}
    assert {key for n, key in reads if n == name} <= held, name
