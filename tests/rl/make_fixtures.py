"""Write tiny fixture copies of each training release's format into tests/rl/fixtures/.

    python -m tests.rl.make_fixtures [out_dir]

Images are solid 8x8 colours (tests/evals/make_fixtures.py's COLORS), so a test can tell which
image an example got. Every format has good rows and bad rows; test_datasets.py states the
expected examples and reasons. Folders named like a source use its default layout; variants/
holds the alternative layouts (SAT json + image files, PixMo jsonl with image_path, the HF
Geometry3K parquet). Needs pillow and pyarrow. Output is deterministic for fixed library versions.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tests.evals.make_fixtures import CORRUPT, image, put, put_parquet


def struct(data: bytes) -> dict:
  return {"bytes": data, "path": None}


def sat2(out: Path) -> None:
  def row(colors, question, answers, qtype, correct):
    images = [CORRUPT if c == "corrupt" else image(c) for c in colors]
    return {"image_bytes": [struct(b) for b in images], "question": question,
            "answers": answers, "question_type": qtype, "correct_answer": correct}
  put_parquet(out / "sat2/SAT_train.parquet", [
      row(["red"], "Is the lamp to the left or right of the bed?", ["left", "right"],
          "static_relation", "right"),
      row(["green", "blue"], "Which way did the camera turn between the frames?",
          ["left", "right", "it did not turn"], "ego_movement", "left"),
      row(["yellow"], "Which object is closer to the camera?", ["the chair", "the table"],
          "static_depth", "the sofa"),
      row(["corrupt"], "Is the cup above the shelf?", ["yes", "no"], "static_relation", "no"),
      row(["cyan"], "How far is the door?", [], "static_distance", "far"),
      row(["magenta", "white"], "If the agent pushes the chair, where does it go?",
          ["forward", "backward", "left", "right"], "action_consequence", "Backward")])
  json_root = out / "variants/json/sat2"
  put(json_root / "images/a.png", image("gray"))
  put(json_root / "frames/f0.png", image("black"))
  put(json_root / "frames/f1.png", image("white"))
  put(json_root / "train.json", [
      {"id": "j1", "question": "Is the plant above or below the window?",
       "answers": ["above", "below"], "correct_answer": "below",
       "question_type": "static_relation", "images": ["images/a.png"]},
      {"id": "j2", "question": "Did the camera move forward?", "answers": ["yes", "no"],
       "correct_answer": "yes", "question_type": "ego_movement",
       "images": ["frames/f0.png", "frames/f1.png"]},
      {"id": "j3", "question": "Is the bed left of the desk?", "answers": ["yes", "no"],
       "correct_answer": "no", "question_type": "static_relation",
       "images": ["images/missing.png"]}])


def pixmo_count(out: Path) -> None:
  root = out / "pixmo_count"
  files = {"red": image("red"), "green": image("green", "JPEG"), "blue": image("blue"),
           "corrupt": CORRUPT}
  sha = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
  put(root / f"images/{sha['red']}.png", files["red"])
  put(root / f"images/{sha['green']}.jpg", files["green"])
  put(root / f"images/{sha['corrupt']}.png", CORRUPT)
  wrong = "ab" * 32  # a file under this name whose bytes hash to something else
  put(root / f"images/{wrong}.png", image("yellow"))

  def row(key, label, count):
    digest = wrong if key == "wrong" else sha[key]
    return {"image_url": f"https://example.com/{key}.jpg", "image_sha256": digest,
            "count": count, "points": [{"x": 1.0, "y": 2.0}] * count, "label": label}
  put_parquet(root / "data/train-00000-of-00001.parquet", [
      row("red", "apple", 3), row("green", "parked car", 0), row("red", "pear", 2),
      row("blue", "cup", 4), row("wrong", "dog", 2), row("corrupt", "bird", 5),
      row("red", "", 1)])
  manifest = out / "variants/manifest/pixmo_count"
  put(manifest / "pics/one.png", image("cyan"))
  put(manifest / "train.jsonl", "".join(f"{line}\n" for line in (
      '{"image_path": "pics/one.png", "label": "dog", "count": 4}',
      '{"image_path": "pics/one.png", "label": "cat", "count": -1}',
      '{"image_path": "pics/none.png", "label": "cow", "count": 2}')))


def geometry3k(out: Path) -> None:
  root = out / "geometry3k/train"

  def problem(pid, text, choices, answer, goal, color="red"):
    put(root / f"{pid}/data.json", {
        "problem_text": text, "choices": choices, "answer": answer, "id": pid,
        "problem_type_graph": ["Triangle"], "problem_type_goal": goal,
        "annotat_text": text.replace("x", "$x$"), "data_type": "train"})
    if color:
      put(root / f"{pid}/img_diagram.png", image(color))
  problem(2, "Find x.", ["3", "4", "5", "6"], "A", ["Length"])
  problem(11, "In the circle, A B = 30. Find m \\widehat A B.", ["30", "40", "60", "80"], "D",
          ["Angle", "Arc"], "green")
  problem(12, "Find y.", ["1", "2", "3", "4"], "E", ["Length"])
  problem(13, "Find the area.", ["10", "20", "30", "40"], "B", ["Area"], None)
  problem(15, "Find z.", ["1", "1", "2", "3"], "C", ["Length"])
  put(root / "14/data.json", '{"problem_text": "Find x.", "choices": [')
  put(root / "14/img_diagram.png", image("blue"))

  def row(pid, color, text, answer, choices=None, truth=None):
    data = CORRUPT if color == "corrupt" else image(color)
    return {"images": [struct(data)], "problem": f"<image>{text}", "answer": answer,
            "id": pid, "choices": choices, "ground_truth": truth}
  put_parquet(out / "variants/hf/geometry3k/data/train-00000-of-00001.parquet", [
      row(7, "blue", "Find $x$.", "5", ["3", "4", "5", "6"], "C"),
      row(8, "yellow", "Find the area of the square.", "12.5"),
      row(9, "cyan", "Find $y$.", "2 \\sqrt { 3 }"),
      row(10, "corrupt", "Find $z$.", "4", ["3", "4"], "B"),
      row(11, "magenta", "Find $w$.", "4", ["3", "4"])])


def main(out: Path) -> None:
  for make in (sat2, pixmo_count, geometry3k):
    make(out)
  total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  print(f"wrote fixtures to {out} ({total} bytes)")


if __name__ == "__main__":
  main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "fixtures")
