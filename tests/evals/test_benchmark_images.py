"""Item images (`evals.benchmarks.images`, `Item.pil_images`): base64 as VLMEvalKit reads it,
corrupt and unsupported images refused at load time, transparency, very large scenes."""

import dataclasses

import pytest

from evals.benchmarks import common
from evals.schema import Item
from tests.evals import make_fixtures


def test_base64_with_whitespace_is_read_as_vlmevalkit_reads_it():
  import base64
  from evals.benchmarks.images import decode_base64
  data = make_fixtures.image("red")
  text = base64.b64encode(data).decode()
  wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))  # MIME-style lines
  assert base64.b64decode(wrapped) == data  # what VLMEvalKit's decode_base64_to_image does
  assert decode_base64(wrapped, "w") == data
  assert decode_base64(f" {text[:9]} \r\n{text[9:]}\t", "s") == data
  with pytest.raises(common.ItemError, match="undecodable base64"):
    decode_base64(text[:9] + "%" + text[9:], "junk")


def test_images_the_model_cannot_take_are_bad_items_at_load_time():
  """16-bit and float images pass PIL's verify but the model's image path refuses them (and
  PIL's convert("RGB") clips them to white): refused when loading, not mid-evaluation."""
  import io
  import numpy as np
  from PIL import Image
  from evals.benchmarks.images import MODEL_MODES, checked_image
  from vlm_jax.images import SUPPORTED_PIL_MODES
  assert MODEL_MODES == SUPPORTED_PIL_MODES
  def encoded(img, fmt):
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()
  sixteen = Image.fromarray(np.full((8, 8), 40000, np.uint16))
  for data in (encoded(sixteen, "PNG"), encoded(sixteen, "TIFF"),
               encoded(Image.fromarray(np.full((8, 8), 0.5, np.float32)), "TIFF")):
    with pytest.raises(common.ItemError, match="unsupported image mode 'I;16|F'"):
      checked_image(data, "deep")
  for img in (Image.new("L", (8, 8), 100), Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
              Image.new("LA", (8, 8), (100, 255)), Image.new("P", (8, 8))):
    fmt = "JPEG" if img.mode == "CMYK" else "PNG"
    data = checked_image(encoded(img, fmt), img.mode)
    item = Item(id="1", benchmark="toy", question="?", options=("a", "b"), answer="A",
                images=(data,))
    assert item.pil_images()[0].mode == "RGB"


def test_truncated_image_is_unreadable():
  from evals.benchmarks.images import checked_image
  data = make_fixtures.image("red")
  assert checked_image(data, "ok") == data
  with pytest.raises(common.ItemError, match="unreadable image \\(cut\\)"):
    checked_image(data[:-20], "cut")


def test_item_images_keep_transparent_drawings_visible():
  # a black line on a transparent background: dropping alpha would show an all-black image
  import io
  import numpy as np
  from PIL import Image
  from evals.schema import Item
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[8, :, 3] = 255
  buf = io.BytesIO()
  Image.fromarray(rgba).save(buf, "PNG")
  item = Item(id="1", benchmark="toy", question="?", options=("a", "b"), answer="A",
              images=(buf.getvalue(), b"broken"))
  with pytest.raises(ValueError, match="item toy/1: image 1: cannot be decoded"):
    item.pil_images()
  item = dataclasses.replace(item, images=item.images[:1])
  pixels = np.asarray(item.pil_images()[0])
  assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[8, 0].tolist() == [0, 0, 0]

def test_scenes_past_pils_bomb_guard_load():
  """A 14000 x 13000 release image (182M pixels: PIL's default guard refuses it as a
  decompression bomb; MME-RealWorld's remote-sensing scenes are this large) is an item, and
  the raised guard still stands."""
  import io
  from PIL import Image
  from evals.benchmarks.images import LARGEST_IMAGE_PIXELS, checked_image
  out = io.BytesIO()
  Image.new("1", (14000, 13000)).save(out, format="PNG")  # 1-bit: a 22 kB file
  assert checked_image(out.getvalue(), "scene") == out.getvalue()
  from vlm_jax.images import open_image  # the model's decode raises it the same way
  assert Image.MAX_IMAGE_PIXELS == LARGEST_IMAGE_PIXELS and open_image
