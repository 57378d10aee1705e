"""Training-data loaders (rl.datasets) on fixture copies of each release format.
Fixtures: tests/rl/make_fixtures.py (each image a solid colour, named in COLORS)."""

import io
import types
from pathlib import Path

import pytest

from rl import datasets
from rl.datasets import BadExample, split_bad
from rl.examples import Example
from rl.rewards import parse_number
from tests.evals.make_fixtures import COLORS
from tests.rl import make_fixtures

FIXTURES = Path(__file__).parent / "fixtures"
VARIANTS = FIXTURES / "variants"

# id -> (question, options, answer, category, image colours); options () marks a number example.
SAT_SHUFFLED = {
    "train_0": ("Is the lamp to the left or right of the bed?", ("right", "left"), "A",
                "static_relation", ["red"]),
    "train_1": ("Which way did the camera turn between the frames?",
                ("right", "it did not turn", "left"), "C", "ego_movement", ["green", "blue"]),
    "train_5": ("If the agent pushes the chair, where does it go?",
                ("backward", "right", "left", "forward"), "A", "action_consequence",
                ["magenta", "white"])}
SAT_RELEASE_ORDER = {
    "train_0": ("Is the lamp to the left or right of the bed?", ("left", "right"), "B",
                "static_relation", ["red"]),
    "train_1": ("Which way did the camera turn between the frames?",
                ("left", "right", "it did not turn"), "A", "ego_movement", ["green", "blue"]),
    "train_5": ("If the agent pushes the chair, where does it go?",
                ("forward", "backward", "left", "right"), "B", "action_consequence",
                ["magenta", "white"])}
SAT_BAD = {"train_2": "answer 'the sofa' is neither a letter A-B nor one of the option texts",
           "train_3": "unreadable image (row train_3 image 0)",
           "train_4": "no options"}
SAT_JSON = {
    "j1": ("Is the plant above or below the window?", ("above", "below"), "B",
           "static_relation", ["gray"]),
    "j2": ("Did the camera move forward?", ("yes", "no"), "A", "ego_movement",
           ["black", "white"])}
PIXMO = {
    "train_0": ("How many apple are in the image?", (), "3", "count", ["red"]),
    "train_1": ("How many parked car are in the image?", (), "0", "count", ["green"]),
    "train_2": ("How many pear are in the image?", (), "2", "count", ["red"])}
PIXMO_BAD = {"train_3": "missing image file", "train_4": "has sha256",
             "train_5": "unreadable image", "train_6": "no label"}
GEO = {
    "2": ("Find x.", ("3", "4", "5", "6"), "A", "Length", ["red"]),
    "11": ("In the circle, A B = 30. Find m \\widehat A B.", ("30", "40", "60", "80"), "D",
           "Angle+Arc", ["green"])}
GEO_BAD = {"12": "answer 'E' is outside the options A-D",
           "13": "missing image file", "14": "not valid JSON",
           "15": "duplicate option texts among ['1', '1', '2', '3']"}
GEO_HF = {
    "7": ("Find $x$.", ("3", "4", "5", "6"), "C", "", ["blue"]),
    "8": ("Find the area of the square.", (), "12.5", "", ["yellow"]),
    "11": ("Find $w$.", ("3", "4"), "B", "", ["magenta"])}
GEO_HF_BAD = {"9": "answer '2 \\\\sqrt { 3 }' is not a plain number",
              "10": "unreadable image (row 10 image 0)"}


def _colour(data: bytes) -> str:
  from PIL import Image
  rgb = Image.open(io.BytesIO(data)).convert("RGB").getpixel((4, 4))
  return min(COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLORS[c], rgb)))


def _check(results, source, expected, bad_expected):
  good, bad = split_bad(list(results))
  assert {x.id for x in good} == set(expected), [b.reason for b in bad]
  for x in good:
    question, options, answer, category, colours = expected[x.id]
    assert isinstance(x, Example) and x.source == source
    assert (x.question, x.options, x.answer, x.category) == (question, options, answer, category)
    assert x.kind == ("choice" if options else "number")
    assert [_colour(b) for b in x.images] == colours
  assert {b.id: b.source for b in bad} == {k: source for k in bad_expected}
  for b in bad:
    assert bad_expected[b.id] in b.reason, b.reason
  return good, bad


def test_sat2_parquet_shuffles_options_per_row_by_default():
  _check(datasets.load("sat2", FIXTURES), "sat2", SAT_SHUFFLED, SAT_BAD)
  _check(datasets.load("sat2", FIXTURES, shuffle=False), "sat2", SAT_RELEASE_ORDER, SAT_BAD)
  keys = {"train_0": "right", "train_1": "left", "train_5": "backward"}
  for seed in (0, 1, 2):
    good, _ = split_bad(datasets.load("sat2", FIXTURES, seed=seed))
    for x in good:  # the key's text survives every shuffle
      assert x.options[ord(x.answer) - 65] == keys[x.id]
      assert set(x.options) == set(SAT_RELEASE_ORDER[x.id][1])


def test_sat2_json_layout_with_image_files():
  _check(datasets.load("sat2", VARIANTS / "json", shuffle=False), "sat2", SAT_JSON,
         {"j3": "missing image file 'images/missing.png'"})


def test_pixmo_count_parquet_with_images_by_hash():
  _check(datasets.load("pixmo_count", FIXTURES), "pixmo_count", PIXMO, PIXMO_BAD)
  unchecked = dict(PIXMO, train_4=("How many dog are in the image?", (), "2", "count",
                                   ["yellow"]))
  bad = {k: v for k, v in PIXMO_BAD.items() if k != "train_4"}
  _check(datasets.load("pixmo_count", FIXTURES, check_sha256=False), "pixmo_count", unchecked,
         bad)


def test_pixmo_count_jsonl_with_image_path():
  _check(datasets.load("pixmo_count", VARIANTS / "manifest"), "pixmo_count",
         {"train_0": ("How many dog are in the image?", (), "4", "count", ["cyan"])},
         {"train_1": "count -1 is not a whole number >= 0", "train_2": "missing image file"})


def test_geometry3k_intergps_folders_in_numeric_order():
  results = list(datasets.load("geometry3k", FIXTURES))
  assert [x.id for x in results] == ["2", "11", "12", "13", "14", "15"]
  _check(results, "geometry3k", GEO, GEO_BAD)


def test_geometry3k_hf_parquet_choice_and_number_rows():
  _check(datasets.load("geometry3k", VARIANTS / "hf"), "geometry3k", GEO_HF, GEO_HF_BAD)


def test_examples_fit_the_training_schema():
  for name in datasets.SOURCES:
    for x in datasets.load(name, FIXTURES):
      if isinstance(x, BadExample):
        continue
      if x.kind == "choice":
        x.as_item()  # letters, options, images validated again
      else:
        assert parse_number(x.answer) == float(x.answer)
      assert all(b[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0") for b in x.images)


def test_limit_unknown_source_and_missing_data(tmp_path):
  assert [x.id for x in datasets.load("sat2", FIXTURES, limit=2)] == ["train_0", "train_1"]
  with pytest.raises(ValueError, match="unknown training source 'nope'"):
    datasets.load("nope", FIXTURES)
  with pytest.raises(ValueError, match="pass data_dir"):
    datasets.load("sat2", None)
  for name, where in (("sat2", "array/SAT"), ("pixmo_count", "allenai/pixmo-count"),
                      ("geometry3k", "lupantech/InterGPS")):
    with pytest.raises(FileNotFoundError, match=f"does not exist.*{where}"):
      datasets.load(name, tmp_path)
    (tmp_path / name).mkdir()
    with pytest.raises(FileNotFoundError, match=f"no annotation file under .*{where}"):
      datasets.load(name, tmp_path)


def test_rl_data_loads_every_source_and_skips_bad_rows(capsys):
  from rl.data import load_items
  config = types.SimpleNamespace(data="sat2,pixmo_count,geometry3k", data_dir=str(FIXTURES),
                                 prompts_per_step=2, synthetic_n=0, seed=0, limits=dict)
  items = load_items(config)
  assert [x.source for x in items] == ["sat2"] * 3 + ["pixmo_count"] * 3 + ["geometry3k"] * 2
  out = capsys.readouterr().out
  assert "skipped 11 unusable training rows" in out
  # each source's bad rows are named with their reasons, so a broken release can be found
  assert "sat2: 3 bad, e.g. sat2/train_2: answer 'the sofa' is neither" in out
  assert "geometry3k: 4 bad, e.g. geometry3k/12: answer 'E' is outside" in out
  assert "(and 1 more)" in out
  with pytest.raises(ValueError, match=r"8 training items < prompts_per_step=9 \(sat2: 3 bad "
                                       r"rows, pixmo_count: 4 bad rows, geometry3k: 4 bad rows\)"):
    load_items(types.SimpleNamespace(**{**vars(config), "prompts_per_step": 9}))


def test_fixture_script_matches_committed_text_fixtures(tmp_path):
  make_fixtures.main(tmp_path)
  # Only text files: PNG / parquet bytes (and so the PixMo file names) vary with library versions.
  for path in FIXTURES.rglob("*"):
    if path.suffix in (".json", ".jsonl"):
      assert (tmp_path / path.relative_to(FIXTURES)).read_bytes() == path.read_bytes(), path
  assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 100_000
