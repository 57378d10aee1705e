"""Benchmark loaders on fixture copies of each release format, the synthetic benchmark, and the
array_record / tfds + grain pipeline. Fixtures: tests/evals/make_fixtures.py (colour = image)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evals import benchmarks
from evals.benchmarks import common, cv_bench, mme_realworld_lite, synthetic
from evals.benchmarks import threedsr_bench, vstar_bench, whatsup
from evals.benchmarks.synthetic_scene import COLORS as SHAPE_COLORS
from evals.benchmarks.synthetic_scene import scene_from_json
from evals.schema import Item
from tests.evals import make_fixtures

FIXTURES = Path(__file__).parent / "fixtures"
VARIANTS = FIXTURES / "variants"
MME_OPTIONS = ("In the upper left", "In the lower right", "In the middle", "At the top",
               "This image doesn't feature the position.")
MME_TSV_OPTIONS = ("left", "right", "top", "bottom", "This image doesn't feature the position.")

# id -> (question, options, answer letter, category, image colour). Options given as a set
# with the answer as TEXT mark a benchmark whose options are shuffled per item.
EXPECTED = {
    "threedsr_bench": {
        "100": ("Which side of the car faces the camera?", ("front", "back", "left", "right"),
                "C", "orientation", "red"),
        "101": ("Is the dog higher than the cat?", ("yes", "no"), "B", "height", "green")},
    "cv_bench": {
        "2D_0": ("How many chairs are in the image?", ("3", "2", "1", "0"), "B", "Count", "red"),
        "2D_1": ("Is the lamp left or right of the bed?", ("left", "right"), "A", "Relation",
                 "green"),
        "3D_0": ("Which is closer, the sofa or the table?", ("sofa", "table"), "B", "Depth",
                 "yellow")},
    "mmbench": {
        "1": ("Hint: The picture is a flag.\nQuestion: What is the main colour?",
              ("red", "green", "blue", "gray"), "A", "attribute_recognition", "red"),
        "2": ("What colour is the same picture?", ("blue", "red"), "B", "attribute_recognition",
              "red"),  # its image cell is "1": row 1's image
        "3": ("Which shape?", ("circle", "square", "triangle"), "C", "shape", "cyan")},
    "mme_realworld_lite": {
        "perception/remote_sensing/position/1": ("Where is the crane?", MME_OPTIONS, "B",
                                                 "position", "red")},
    "spatial_mm_obj": {
        "one_obj/0": ("Which direction is cat looking at from camera's perspective?",
                      ("bottom left", "left", "right", "upwards"), "D", "one_obj", "red"),
        "two_obj/0": ("In which hand is the man holding the glass?", ("left", "right"), "B",
                      "two_obj", "blue")},
    "spatial_mm_multihop": {
        "multihop/0": ("Is the lighter horse behind the darker horse?", ("yes", "no"), "B",
                       "yes_no", "yellow"),
        "multihop/1": ("Which direction is the adult monkey facing from camera's perspective?",
                       {"left", "right"}, "left", "direction", "cyan"),
        "custom-1": ("Where is the cup?", ("on the table", "under the table"), "B", "relation",
                     "white")},
    "whatsup": {
        "controlled_images/mug_on_table": (
            whatsup.QUESTION, {"A mug on a table", "A mug under a table",
                               "A mug to the left of a table", "A mug to the right of a table"},
            "A mug on a table", "controlled_images", "red"),
        "controlled_clevr/cube_left_of_sphere": (
            whatsup.QUESTION, {"A cube to the left of a sphere", "A cube to the right of a sphere",
                               "A cube in front of a sphere", "A cube behind a sphere"},
            "A cube to the left of a sphere", "controlled_clevr", "green")},
    "vstar_bench": {
        "direct_attributes/sa_1": ("What is the material of the glove?",
                                   {"rubber", "cotton", "leather", "linen"}, "rubber",
                                   "direct_attributes", "red"),
        "relative_position/sa_2": ("Is the cup on the left or right side of the plate?",
                                   {"left", "right"}, "left", "relative_position", "green")},
}

# id -> a phrase the BadItem's reason must contain.
EXPECTED_BAD = {
    "threedsr_bench": {"102": "undecodable base64", "103": "answer 'D' is outside the options A-C"},
    "cv_bench": {"2D_2": "answer '(E)' is outside the options A-B", "3D_1": "no options",
                 "3D_2": "unreadable image"},
    "mmbench": {"4": "not the index of another row", "5": "no options"},
    "mme_realworld_lite": {"perception/remote_sensing/position/2": "missing image file 'missing_2",
                           "perception/remote_sensing/position/3": "unreadable image",
                           "perception/remote_sensing/position/4": "outside the options A-E"},
    "spatial_mm_obj": {"one_obj/1": "'C. middle' disagrees with option C ('left')",
                       "two_obj/1": "missing image file '00f3c6fd0d.jpg'"},
    "spatial_mm_multihop": {"multihop/2": "open-ended answer 'pink' has no options",
                            "multihop/4": "missing image file 'gone.jpeg'"},
    "whatsup": {"controlled_images/dog_under_table": "missing image file",
                "controlled_clevr/no_captions": "no options",
                "controlled_clevr/broken": "unreadable image"},
    "vstar_bench": {"direct_attributes/sa_3": "no options",
                    "relative_position/sa_4": "missing image file"},
}


def _color_of(item: Item) -> str:
  """The fixture colour name of the item's (solid, 8x8) image; JPEG is lossy, so nearest."""
  rgb = item.pil_images()[0].getpixel((4, 4))
  return min(make_fixtures.COLORS,
             key=lambda c: sum((a - b) ** 2 for a, b in zip(make_fixtures.COLORS[c], rgb)))


def _check_items(results, expected, bad_expected, benchmark):
  items, bad = benchmarks.split_bad(results)
  assert {x.id for x in items} == set(expected), [b.reason for b in bad]
  for item in items:
    question, options, answer, category, color = expected[item.id]
    assert (item.benchmark, item.question, item.category) == (benchmark, question, category)
    if isinstance(options, set):  # shuffled: same options, key tracked by text
      assert set(item.options) == options and item.options[item.answer_index] == answer
    else:
      assert (item.options, item.answer) == (options, answer)
    assert len(item.images) == 1 and _color_of(item) == color
  assert {b.id: b.benchmark for b in bad} == {k: benchmark for k in bad_expected}
  for b in bad:
    assert bad_expected[b.id] in b.reason, (b.id, b.reason)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_release_format_fixture(name):
  if name in ("cv_bench",):
    pytest.importorskip("pyarrow")
  _check_items(benchmarks.load(name, FIXTURES), EXPECTED[name], EXPECTED_BAD[name], name)


VARIANT_CASES = [
    (cv_bench, "cv_bench_jsonl",
     {"2D_7": ("How many beds?", ("1", "2", "3"), "C", "Count", "magenta")},
     {"2D_8": "missing image file 'img/2D/count/missing.png'"}),
    (threedsr_bench, "threedsr_csv",
     {"7": ("Is the TV facing left?", ("yes", "no"), "A", "orientation", "yellow")},
     {"8": "missing image file 'http://images.cocodataset.org/val2017/000000000285.jpg'"}),
    (mme_realworld_lite, "mme_parquet",
     {"11": ("What is written on the sign?", ("STOP", "GO", "YIELD", "EXIT"), "C", "ocr",
             "blue")},
     {"12": "undecodable base64"}),
    (mme_realworld_lite, "mme_tsv",
     {"21": ("Where is the plane?", MME_TSV_OPTIONS, "B", "position", "magenta"),
      "22": ("Where will the plane go?", MME_TSV_OPTIONS, "E", "intention", "magenta")},
     {"23": "'99' is too short for base64 image data and is not the index of another row"}),
    (vstar_bench, "vstar_jsonl",
     {"direct_attributes/sa_9": ("What is the colour of the umbrella?",
                                 {"black", "cyan", "white", "pink"}, "cyan", "direct_attributes",
                                 "cyan")},
     {"relative_position/sa_9": "answer 'E' is outside the options A-B"}),
]


@pytest.mark.parametrize("module,folder,expected,bad", VARIANT_CASES,
                         ids=[c[1] for c in VARIANT_CASES])
def test_alternative_layouts(module, folder, expected, bad):
  if folder == "mme_parquet":
    pytest.importorskip("pyarrow")
  _check_items(module.load(VARIANTS / folder), expected, bad, module.NAME)


def test_mme_category_is_the_fine_category_in_every_format():
  """The JSON's "Category" is the tables' "l2-category"; their "category" is "Task/Subtask".
  Reading the tables' category as the item category would put the JSON and TSV/parquet copies
  of one benchmark into different categories (VLMEvalKit's get_dimension_rating and lmms-eval's
  mme_realworld aggregation split "category" on "/" into task and subtask)."""
  pytest.importorskip("pyarrow")
  json_meta = dict(next(iter(benchmarks.load("mme_realworld_lite", FIXTURES))).meta)
  for folder, item_id, meta in (
      ("mme_parquet", "11", {"task": "Perception", "subtask": "OCR with Complex Context"}),
      ("mme_tsv", "22", {"task": "Reasoning", "subtask": "Remote Sensing"})):
    items, _ = benchmarks.split_bad(mme_realworld_lite.load(VARIANTS / folder))
    item = next(x for x in items if x.id == item_id)
    assert dict(item.meta) == meta and set(meta) <= set(json_meta)


def test_threedsr_circular_tsv_copies_are_marked_by_qid(tmp_path):
  """3dsrbench_v1_vlmevalkit_circular.tsv numbers its rows plainly; the copies are the rows whose
  qid is another row's qid + "-N" (lmms-eval's 3dsrbench task groups by it). Flipped twins
  ("-flip") are questions of their own."""
  from tests.evals.make_fixtures import b64, put_table
  cols = ("index", "qid", "question", "A", "B", "C", "D", "answer", "category", "image")
  q, facing = "Which side of the car faces the camera?", ("front", "back", "left", "right")
  rows = [("0", "VIN6MS3J", q, *facing, "C", "orientation_viewpoint", b64("red")),
          ("1", "VIN6MS3J-1", q, "back", "left", "right", "front", "B", "orientation_viewpoint",
           "0"),
          ("2", "VIN6MS3J-flip", "Is the car facing away?", "yes", "no", "", "", "B",
           "orientation_in_front_of", b64("green")),
          ("3", "VIN6MS3J-flip-1", "Is the car facing away?", "no", "yes", "", "", "A",
           "orientation_in_front_of", "2"),
          ("4", "K2P0QX7A", "Is the dog higher than the cat?", "yes", "no", "", "", "A",
           "height_higher", b64("blue"))]
  put_table(tmp_path / "threedsr_bench/3dsrbench_v1_vlmevalkit_circular.tsv",
            [dict(zip(cols, r)) for r in rows], "\t")
  file = "3dsrbench_v1_vlmevalkit_circular.tsv"
  items, bad = benchmarks.split_bad(benchmarks.load("threedsr_bench", tmp_path, file=file))
  assert not bad and [x.id for x in items] == ["0", "2", "4"]
  # the circular TSV alone (what VLMEvalKit downloads) is found without file=
  assert benchmarks.split_bad(benchmarks.load("threedsr_bench", tmp_path))[0] == items
  assert dict(items[1].meta)["qid"] == "VIN6MS3J-flip"
  items, _ = benchmarks.split_bad(benchmarks.load("threedsr_bench", tmp_path, file=file,
                                                  circular=True))
  copies = {x.id: dict(x.meta).get("circular_of") for x in items}
  assert copies == {"0": None, "1": "0", "2": None, "3": "2", "4": None}
  # circular=True without file= reads the circular TSV even beside the plain one
  put_table(tmp_path / "threedsr_bench/3dsrbench_v1_vlmevalkit.tsv",
            [dict(zip(cols, r)) for r in rows if "-" not in r[1] or r[1].endswith("flip")], "\t")
  plain, _ = benchmarks.split_bad(benchmarks.load("threedsr_bench", tmp_path))
  assert [x.id for x in plain] == ["0", "2", "4"]
  items, _ = benchmarks.split_bad(benchmarks.load("threedsr_bench", tmp_path, circular=True))
  assert [x.id for x in items] == ["0", "1", "2", "3", "4"]
  (tmp_path / "threedsr_bench" / file).unlink()  # without it, circular has no copies to read
  with pytest.raises(FileNotFoundError, match="circular evaluation reads"):
    benchmarks.load("threedsr_bench", tmp_path, circular=True)


def test_a_table_without_question_columns_is_refused_naming_them(tmp_path):
  """3dsrbench_v1.csv, described upstream as raw annotations, may hold no question or
  options: refused as a whole (naming its columns and what to download), not read as N bad
  items."""
  from tests.evals.make_fixtures import put_table
  cols = ("qid", "image", "qtype", "relation", "subject", "object1", "object2", "answer")
  row = ("VIN6MS3J", "http://images.cocodataset.org/train2017/000000000285.jpg", "orientation",
         "facing", "car", "camera", "", "left")
  put_table(tmp_path / "threedsr_bench/3dsrbench_v1.csv", [dict(zip(cols, row))], ",")
  with pytest.raises(ValueError, match=r"3dsrbench_v1.csv has no question, A, B column\(s\) "
                                       r"\(columns: qid, image, qtype.*Download 3dsrbench"):
    list(benchmarks.load("threedsr_bench", tmp_path))


def test_cv_bench_split_jsonl_annotations(tmp_path):
  # the current release's test_2d.jsonl / test_3d.jsonl with img/ (e.g. from its build_img.py)
  shutil.copytree(VARIANTS / "cv_bench_jsonl", tmp_path / "cv_bench")
  (tmp_path / "cv_bench/test.jsonl").rename(tmp_path / "cv_bench/test_2d.jsonl")
  _check_items(benchmarks.load("cv_bench", tmp_path), *VARIANT_CASES[0][2:], "cv_bench")


def test_shuffle_off_keeps_release_order_with_key_first():
  items, _ = benchmarks.split_bad(vstar_bench.load(FIXTURES / "vstar_bench", shuffle=False))
  glove = next(x for x in items if x.id == "direct_attributes/sa_1")
  assert glove.options == ("rubber", "cotton", "leather", "linen") and glove.answer == "A"
  items, _ = benchmarks.split_bad(vstar_bench.load(VARIANTS / "vstar_jsonl", shuffle=False))
  assert items[0].options == ("black", "cyan", "white", "pink") and items[0].answer == "B"


def test_vstar_from_lmms_eval_parquet(tmp_path):
  """lmms-lab/vstar-bench (what lmms-eval reads): the jsonl's fields in parquet, the image an
  embedded HF Image struct; options as lines or on one line."""
  pytest.importorskip("pyarrow")
  from tests.evals.make_fixtures import image, put_parquet
  one_line = "What is the colour of the cup? (A) red (B) green (C) blue (D) cyan"
  lines = "Is the cup left of the plate?\n(A) left\n(B) right\nAnswer with the letter."
  put_parquet(tmp_path / "vstar_bench/data/test-00000-of-00001.parquet", [
      {"question_id": 0, "image": {"bytes": image("cyan", "JPEG"), "path": "sa_9.jpg"},
       "text": one_line, "category": "direct_attributes", "label": "D"},
      {"question_id": 1, "image": {"bytes": image("green", "JPEG"), "path": None},
       "text": lines, "category": "relative_position", "label": "A"},
      {"question_id": 2, "image": {"bytes": b"junk", "path": "sa_7.jpg"},
       "text": one_line, "category": "direct_attributes", "label": "A"}])
  items, bad = benchmarks.split_bad(vstar_bench.load(tmp_path / "vstar_bench", shuffle=False))
  assert [(x.id, x.question, x.options, x.answer) for x in items] == [
      ("direct_attributes/sa_9", "What is the colour of the cup?",
       ("red", "green", "blue", "cyan"), "D"),
      ("relative_position/1", "Is the cup left of the plate?", ("left", "right"), "A")]
  assert [(b.id, b.reason.split(":")[0]) for b in bad] == [
      ("direct_attributes/sa_7", "unreadable image (question_id 2)")]


def test_seeded_shuffles_are_deterministic_and_depend_on_the_seed():
  def orders(seed):
    items, _ = benchmarks.split_bad(benchmarks.load("whatsup", FIXTURES, seed=seed))
    return tuple(x.options for x in items)
  assert orders(0) == orders(0)
  assert len({orders(s) for s in range(8)}) > 1
  meta = dict(next(iter(benchmarks.load("vstar_bench", FIXTURES))).meta)
  assert meta["source_answer"] == "A"
  keys = {next(iter(benchmarks.load("vstar_bench", FIXTURES, seed=s))).answer for s in range(8)}
  assert len(keys) > 1  # the release's "key first" order is really shuffled away


def test_mme_meta_and_mmbench_meta():
  item = next(x for x in benchmarks.load("mme_realworld_lite", FIXTURES) if isinstance(x, Item))
  assert dict(item.meta) == {"task": "Perception", "subtask": "Remote Sensing",
                             "question_type": "Multiple Choice"}
  first = next(iter(benchmarks.load("mmbench", FIXTURES)))
  assert dict(first.meta)["l2-category"] == "finegrained_perception"
  assert dict(first.meta)["hint"] == "The picture is a flag."


def test_registry_and_missing_data_errors(tmp_path):
  assert benchmarks.list_benchmarks() == [
      "threedsr_bench", "cv_bench", "spatial_mm_obj", "spatial_mm_multihop", "whatsup",
      "vstar_bench", "mme_realworld_lite", "mmbench", "synthetic"]
  with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
    benchmarks.load("nope", tmp_path)
  with pytest.raises(ValueError, match="pass data_dir"):
    benchmarks.load("cv_bench")
  for name in benchmarks.list_benchmarks()[:-1]:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / name}.*(Download|Get|Snapshot)"):
      benchmarks.load(name, tmp_path)
    (tmp_path / name).mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / name)):
      list(benchmarks.load(name, tmp_path))


_BLOCKED_IMPORTS = """
import sys
class Block:  # the accelerator image has none of these
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {"grain", "array_record", "tensorflow_datasets", "pyarrow"}:
      raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
from evals import benchmarks
from evals.benchmarks import pipeline, tfds_builder
items, bad = benchmarks.split_bad(benchmarks.load("mmbench", sys.argv[1]))
print(len(items), len(bad), len(list(benchmarks.load("synthetic", n=2))))
"""


def test_loaders_work_without_grain_tfds_or_pyarrow():
  out = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORTS, str(FIXTURES)], check=True,
                       capture_output=True, text=True, cwd=Path(__file__).parents[2])
  assert out.stdout.split() == ["3", "2", "2"]


def test_ambiguous_annotation_files_are_refused(tmp_path):
  (tmp_path / "mmbench").mkdir()
  for name in ("a.tsv", "b.tsv"):
    (tmp_path / "mmbench" / name).write_text("index\tquestion\n")
  with pytest.raises(ValueError, match="several candidate files.*pass file="):
    benchmarks.load("mmbench", tmp_path)


@pytest.mark.parametrize("raw,letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("right", "B"), (" Right. ", "B"),
    ("B. right", "B"), ("(B) right", "B")])
def test_answer_forms(raw, letter):
  assert common.normalize_answer(raw, ["left", "right", "up"]) == letter


@pytest.mark.parametrize("raw,reason", [
    ("D", "outside the options A-C"), ("(E)", "outside"), ("B. up", "disagrees with option B"),
    ("sideways", "neither a letter"), (float("nan"), "no answer")])
def test_bad_answers(raw, reason):
  with pytest.raises(common.ItemError, match=reason):
    common.normalize_answer(raw, ["left", "right", "up"])


def test_option_prefixes_and_embedded_options():
  assert common.strip_prefixes(["(A) x", "(B) y"]) == ["x", "y"]
  assert common.strip_prefixes(["A. Lincoln", "Washington"]) == ["A. Lincoln", "Washington"]
  assert common.strip_prefixes(["A. x", "B. y"]) == ["x", "y"]
  assert common.strip_prefixes(["B. x", "A. y"]) == ["B. x", "A. y"]  # letters not positions
  assert common.strip_prefixes(["(B) x", "(B) y"]) == ["(B) x", "y"]
  stem, options, trailer = common.parse_embedded_options("Q?\n(A) x\n(B) y\nAnswer now.")
  assert (stem, options, trailer) == ("Q?", ["x", "y"], "Answer now.")


def test_fixture_script_matches_committed_text_fixtures(tmp_path):
  pytest.importorskip("pyarrow")
  make_fixtures.main(tmp_path)
  # Only text formats without embedded images: PNG/parquet bytes vary with library versions.
  for path in FIXTURES.rglob("*"):
    if path.suffix in (".json", ".jsonl", ".csv"):
      assert (tmp_path / path.relative_to(FIXTURES)).read_bytes() == path.read_bytes(), path
  assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 200_000


# ---------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_and_independent_of_n():
  a, b = synthetic.synthetic_items(10, seed=3), synthetic.synthetic_items(10, seed=3)
  assert a == b
  assert synthetic.synthetic_items(4, seed=3) == a[:4]
  assert synthetic.synthetic_items(10, seed=4) != a
  assert list(benchmarks.load("synthetic", n=10, seed=3)) == a


def _true_value(item: Item) -> str:
  """The answer recomputed from the drawn scene, independently of the generator's code."""
  meta, shapes = dict(item.meta), scene_from_json(dict(item.meta)["scene"])
  named = {s.name: s for s in shapes}
  if item.category in ("left_right", "above_below"):
    a, b = named[meta["subject"]], named[meta["object"]]
    if item.category == "left_right":
      return "left" if a.x < b.x else "right"
    return "above" if a.y < b.y else "below"  # y grows downwards
  if item.category == "count":
    target = meta["target"].removesuffix(" shapes").removesuffix("s")
    return str(sum(target in (s.color, s.kind) for s in shapes))
  if item.category == "color":
    return next(s.color for s in shapes if s.kind == meta["subject"])
  return next(s.kind for s in shapes if s.color == meta["subject"].split()[0])


def test_synthetic_answers_are_true_in_the_drawn_image():
  items = synthetic.synthetic_items(60, seed=1)
  assert {x.category for x in items} == set(synthetic.CATEGORIES)
  for item in items:
    assert item.options[item.answer_index] == _true_value(item), item
    assert 2 <= len(item.options) <= 4 and len(set(item.options)) == len(item.options)
    img = item.pil_images()[0]
    assert img.size == (224, 224) and item.images[0][:8] == b"\x89PNG\r\n\x1a\n"
    for s in scene_from_json(dict(item.meta)["scene"]):  # each shape is drawn where stated
      assert img.getpixel((s.x, s.y)) == SHAPE_COLORS[s.color], (item.id, s)


def test_synthetic_meta_has_a_statement_per_option():
  for item in synthetic.synthetic_items(5, seed=0, image_size=(96, 80)):
    meta = dict(item.meta)
    assert item.pil_images()[0].size == (96, 80)
    for letter, option in zip(item.letters, item.options):
      assert meta[f"option_{letter}"] == option and meta[f"statement_{letter}"]
    assert meta["statement"] == meta[f"statement_{item.answer}"]
  rel = synthetic.synthetic_items(1, seed=0)[0]
  meta = dict(rel.meta)
  assert meta["statement"] == f"The {meta['subject']} is {meta['relation']} the {meta['object']}."
  assert max(len(x.images[0]) for x in synthetic.synthetic_items(10)) < 4000


def test_malformed_records_are_bad_items_not_crashes(tmp_path):
  """Records of the wrong type or shape, and per-item files that are not UTF-8 JSON, become
  BadItems naming the problem; the other rows still load."""
  root = tmp_path / "whatsup"
  shutil.copytree(FIXTURES / "whatsup", root)
  path = root / "controlled_clevr_dataset.json"
  entries = json.loads(path.read_text())
  good = len(entries)
  entries += ["a string", None, {"image_path": "elsewhere/new.jpg", "caption_options": "left of"}]
  path.write_text(json.dumps(entries))
  items, bad = benchmarks.split_bad(benchmarks.load("whatsup", tmp_path,
                                                    subsets=("controlled_clevr",)))
  assert len(items) + len(bad) == good + 3
  reasons = [b.reason for b in bad[-3:]]
  assert reasons[0].startswith("malformed row (AttributeError") and "malformed row" in reasons[1]
  assert reasons[2] == "caption_options is a str, not a list"  # not split into letters

  root = tmp_path / "vstar_bench"
  shutil.copytree(FIXTURES / "vstar_bench", root)
  (root / "direct_attributes" / "sa_1.json").write_bytes(b'{"question": "caf\xe9?"}')
  (root / "direct_attributes" / "sa_3.json").write_text("[1, 2]")
  bad = benchmarks.split_bad(benchmarks.load("vstar_bench", tmp_path))[1]
  by_id = {b.id: b.reason for b in bad}
  assert "sa_1.json: not UTF-8 text" in by_id["direct_attributes/sa_1"]
  assert "malformed row" in by_id["direct_attributes/sa_3"]


def test_non_utf8_tables_name_the_file(tmp_path):
  root = tmp_path / "mmbench"
  root.mkdir()
  (root / "MMBench_DEV_EN.tsv").write_bytes(b"index\tquestion\n1\tcaf\xe9\n")
  with pytest.raises(ValueError, match="MMBench_DEV_EN.tsv: not UTF-8"):
    list(benchmarks.load("mmbench", tmp_path))


def test_mmbench_circular_copies_are_left_out_unless_asked_for(tmp_path):
  from tests.evals.make_fixtures import b64, put_table
  cols = ("index", "question", "A", "B", "C", "answer", "category", "image")
  rows = [("7", "Which colour?", "red", "green", "blue", "A", "colour", b64("red")),
          ("8", "Which shape?", "circle", "square", "", "B", "shape", b64("cyan")),
          # CircularEval copies of 7: options rotated, image shared by reference
          ("1000007", "Which colour?", "green", "blue", "red", "C", "colour", "7"),
          ("2000007", "Which colour?", "blue", "red", "green", "B", "colour", "7"),
          ("1000009", "A question of its own", "x", "y", "", "A", "misc", b64("blue"))]
  put_table(tmp_path / "mmbench/MMBench_DEV_EN.tsv", [dict(zip(cols, r)) for r in rows], "\t")
  items, bad = benchmarks.split_bad(benchmarks.load("mmbench", tmp_path))
  assert not bad and [i.id for i in items] == ["7", "8", "1000009"]  # no row 9: not a copy
  items, _ = benchmarks.split_bad(benchmarks.load("mmbench", tmp_path, circular=True))
  copies = {i.id: dict(i.meta).get("circular_of") for i in items}
  assert copies == {"7": None, "8": None, "1000007": "7", "2000007": "7", "1000009": None}
  rotated = next(i for i in items if i.id == "1000007")
  assert rotated.options == ("green", "blue", "red") and rotated.answer == "C"
  assert rotated.images == next(i for i in items if i.id == "7").images


def test_an_option_repeating_the_answer_text_is_a_bad_item():
  # a "wrong" option equal to the key would make wrong_think / wrong_caption assert the truth
  with pytest.raises(common.ItemError, match="option C repeats the answer's text '2'"):
    common.make_item("toy", "1", "How many?", ["2", "3", "2.", "4"], "A")
  item = common.make_item("toy", "2", "How many?", ["3", "2", "3", "4"], "B")  # twins, not key
  assert item.answer == "B"


def test_mmbench_options_with_a_gap_are_relettered(tmp_path):
  from tests.evals.make_fixtures import b64, put_table
  cols = ("index", "question", "A", "B", "C", "D", "answer", "category", "image")
  rows = [("1", "Which?", "red", "", "green", "blue", "C", "colour", b64("red")),
          ("2", "Which?", "red", "NA", "green", "blue", "(D)", "colour", b64("red")),
          ("3", "Which?", "red", "", "green", "blue", "green", "colour", b64("red")),
          ("4", "Which?", "red", "", "green", "blue", "B", "colour", b64("red"))]
  put_table(tmp_path / "mmbench/MMBench_DEV_EN.tsv", [dict(zip(cols, r)) for r in rows], "\t")
  items, bad = benchmarks.split_bad(benchmarks.load("mmbench", tmp_path))
  assert [(i.options, i.answer) for i in items] == [(("red", "green", "blue"), "B"),
                                                     (("red", "green", "blue"), "C"),
                                                     (("red", "green", "blue"), "B")]
  assert dict(items[0].meta)["option_columns"] == "A,C,D"
  assert [b.id for b in bad] == ["4"] and "names column B, which has no option" in bad[0].reason
