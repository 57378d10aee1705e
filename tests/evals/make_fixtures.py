"""Write tiny fixture copies of every benchmark's release format into tests/evals/fixtures/.

    python tests/evals/make_fixtures.py [out_dir]

Each image is a solid 8x8 colour (named in COLORS) so a test can tell which image an item got.
Every format has good rows and at least one bad row (missing or unreadable image, undecodable
base64, no options, answer outside the options, ...); test_benchmarks.py states the expected
items and reasons. Folders named like a benchmark use its default layout; variants/ holds the
alternative layouts (CV-Bench jsonl, 3DSRBench csv, MME parquet, V* jsonl).
Needs pillow and pyarrow (for the parquet files). Output is deterministic.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from pathlib import Path

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
          "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255),
          "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
CORRUPT = b"\x89PNG\r\n\x1a\nthis is not really a png"


def image(color: str, fmt: str = "PNG") -> bytes:
  from PIL import Image
  out = io.BytesIO()
  Image.new("RGB", (8, 8), COLORS[color]).save(out, format=fmt)
  return out.getvalue()


def b64(color: str) -> str:
  return base64.b64encode(image(color)).decode()


def put(path: Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, bytes):
    path.write_bytes(data)
  elif isinstance(data, str):
    path.write_text(data, encoding="utf-8")
  else:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def put_table(path: Path, rows: list[dict], delimiter: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def put_parquet(path: Path, rows: list[dict]) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), path)


def cv_bench(out: Path) -> None:
  def row(idx, kind, task, img, question, choices, answer, filename):
    return {"idx": idx, "type": kind, "task": task, "image": {"bytes": img, "path": None},
            "question": question, "choices": choices, "answer": answer,
            "prompt": f"{question} Select from the following choices.", "filename": filename,
            "source": "ADE20K", "source_dataset": "ADE20K Validation Set"}
  put_parquet(out / "cv_bench/test_2d.parquet", [
      row(0, "2D", "Count", image("red"), "How many chairs are in the image?",
          ["3", "2", "1", "0"], "(B)", "img/2D/count/ade20k_1.png"),
      row(1, "2D", "Relation", image("green"), "Is the lamp left or right of the bed?",
          ["left", "right"], "(A)", "img/2D/relation/ade20k_2.png"),
      row(2, "2D", "Count", image("blue"), "How many cups?", ["1", "2"], "(E)", "img/x.png")])
  put_parquet(out / "cv_bench/test_3d.parquet", [
      row(0, "3D", "Depth", image("yellow"), "Which is closer, the sofa or the table?",
          ["sofa", "table"], "(B)", "img/3D/depth/omni3d_1.png"),
      row(1, "3D", "Distance", image("cyan"), "Which is closer to the chair?", [], "(A)", "a"),
      row(2, "3D", "Depth", CORRUPT, "Which is closer?", ["a", "b"], "(A)", "b")])
  jsonl = out / "variants/cv_bench_jsonl"
  put(jsonl / "img/2D/count/ade20k_7.png", image("magenta"))
  lines = [{"idx": 7, "type": "2D", "task": "Count", "question": "How many beds?",
            "choices": ["1", "2", "3"], "answer": "(C)", "filename": "img/2D/count/ade20k_7.png"},
           {"idx": 8, "type": "2D", "task": "Count", "question": "How many doors?",
            "choices": ["1", "2"], "answer": "(A)", "filename": "img/2D/count/missing.png"}]
  put(jsonl / "test.jsonl", "".join(json.dumps(x) + "\n" for x in lines))


def threedsr(out: Path) -> None:
  base = {"A": "", "B": "", "C": "", "D": "", "image_source": "MS-COCO"}
  rows = [
      {"index": "100", "question": "Which side of the car faces the camera?", "A": "front",
       "B": "back", "C": "left", "D": "right", "answer": "C", "category": "orientation",
       "image": b64("red"), "image_source": "MS-COCO"},
      {**base, "index": "101", "question": "Is the dog higher than the cat?", "A": "yes",
       "B": "no", "answer": "B", "category": "height", "image": b64("green")},
      {**base, "index": "102", "question": "Which is closer?", "A": "cup", "B": "plate",
       "answer": "A", "category": "location", "image": "#not base64#" * 8},
      {**base, "index": "103", "question": "Which is taller?", "A": "man", "B": "tree",
       "C": "pole", "answer": "D", "category": "height", "image": b64("blue")}]
  put_table(out / "threedsr_bench/3dsrbench_v1_vlmevalkit.tsv",
            [{k: r.get(k, "") for k in ("index", "question", "A", "B", "C", "D", "answer",
                                        "category", "image", "image_source")} for r in rows],
            "\t")
  variant = out / "variants/threedsr_csv"
  put(variant / "images/val2017/000000000139.jpg", image("yellow", "JPEG"))
  url = "http://images.cocodataset.org/val2017/"
  put_table(variant / "3dsrbench_v1.csv", [
      {"index": "7", "question": "Is the TV facing left?", "A": "yes", "B": "no", "C": "",
       "D": "", "answer": "A", "category": "orientation", "image_source": "MS-COCO",
       "image_url": url + "000000000139.jpg"},
      {"index": "8", "question": "Is the man left of the chair?", "A": "yes", "B": "no",
       "C": "", "D": "", "answer": "B", "category": "location", "image_source": "MS-COCO",
       "image_url": url + "000000000285.jpg"}], ",")


def mmbench(out: Path) -> None:
  cols = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
          "source", "l2-category", "comment", "split")
  rows = [
      ("1", "What is the main colour?", "The picture is a flag.", "red", "green", "blue",
       "gray", "A", "attribute_recognition", b64("red"), "ai2d", "finegrained_perception", "",
       "dev"),
      ("2", "What colour is the same picture?", "nan", "blue", "red", "nan", "nan", "B",
       "attribute_recognition", "1", "ai2d", "finegrained_perception", "", "dev"),
      ("3", "Which shape?", "", "circle", "square", "triangle", "", "C", "shape", b64("cyan"),
       "scienceqa", "logic_reasoning", "", "dev"),
      ("4", "Refers to a missing image", "", "x", "y", "", "", "A", "misc", "99", "s", "l", "",
       "dev"),
      ("5", "No options here", "", "", "", "", "", "A", "misc", b64("blue"), "s", "l", "", "dev")]
  put_table(out / "mmbench/MMBench_DEV_EN.tsv", [dict(zip(cols, r)) for r in rows], "\t")


def mme(out: Path) -> None:
  root = out / "mme_realworld_lite"
  put(root / "imgs/good_1.png", image("red"))
  put(root / "imgs/bad_3.png", CORRUPT)
  put(root / "imgs/good_4.png", image("green"))
  choices = ["(A) In the upper left", "(B) In the lower right", "(C) In the middle",
             "(D) At the top", "(E) This image doesn't feature the position."]
  def rec(qid, img, gt, text="Where is the crane?"):
    return {"Question_id": qid, "Image": img, "Text": text, "Question Type": "Multiple Choice",
            "Answer choices": choices, "Ground truth": gt, "Category": "position",
            "Subtask": "Remote Sensing", "Task": "Perception"}
  put(root / "MME-RealWorld-Lite.json", [
      rec("perception/remote_sensing/position/1", "good_1.png", "B"),
      rec("perception/remote_sensing/position/2", "missing_2.png", "A"),
      rec("perception/remote_sensing/position/3", "bad_3.png", "A"),
      rec("perception/remote_sensing/position/4", "good_4.png", "F")])
  # lmms-eval's parquet and VLMEvalKit's TSV: category = "Task/Subtask", l2-category = the
  # JSON's fine "Category".
  put_parquet(out / "variants/mme_parquet/data/train-00000-of-00004.parquet", [
      {"index": 11, "question": "What is written on the sign?",
       "multi-choice options": ["(A) STOP", "(B) GO", "(C) YIELD", "(D) EXIT"], "answer": "C",
       "category": "Perception/OCR with Complex Context", "l2-category": "ocr",
       "bytes": b64("blue")},
      {"index": 12, "question": "What colour is the car?",
       "multi-choice options": ["(A) red", "(B) blue"], "answer": "A",
       "category": "Perception/Monitoring", "l2-category": "color",
       "bytes": "%%%% not base64 %%%%"}])
  options = str(["(A) left", "(B) right", "(C) top", "(D) bottom",
                 "(E) This image doesn't feature the position."])
  put_table(out / "variants/mme_tsv/mme_realworld_lite.tsv", [
      {"index": "21", "image": b64("magenta"), "question": "Where is the plane?",
       "multi-choice options": options, "answer": "B", "category": "Perception/Remote Sensing",
       "l2-category": "position"},
      {"index": "22", "image": "21", "question": "Where will the plane go?",  # shares 21's image
       "multi-choice options": options, "answer": "E", "category": "Reasoning/Remote Sensing",
       "l2-category": "intention"},
      {"index": "23", "image": "99", "question": "Where is the car?",
       "multi-choice options": options, "answer": "A", "category": "Perception/Remote Sensing",
       "l2-category": "position"}], "\t")


def vstar(out: Path) -> None:
  root = out / "vstar_bench"
  put(root / "direct_attributes/sa_1.jpg", image("red", "JPEG"))
  put(root / "direct_attributes/sa_1.json", {
      "target_object": ["glove"], "bbox": [[1, 1, 4, 4]],
      "question": "What is the material of the glove?",
      "options": ["rubber", "cotton", "leather", "linen"]})
  put(root / "relative_position/sa_2.jpg", image("green", "JPEG"))
  put(root / "relative_position/sa_2.json", {
      "target_object": ["cup", "plate"], "bbox": [[0, 0, 2, 2], [4, 4, 2, 2]],
      "question": "Is the cup on the left or right side of the plate?",
      "options": ["left", "right"]})
  put(root / "direct_attributes/sa_3.jpg", image("blue", "JPEG"))
  put(root / "direct_attributes/sa_3.json", {"question": "What colour is the bag?",
                                             "options": []})
  put(root / "relative_position/sa_4.json", {"question": "Is the dog left of the cat?",
                                             "options": ["left", "right"]})
  jsonl = out / "variants/vstar_jsonl"
  put(jsonl / "direct_attributes/sa_9.jpg", image("cyan", "JPEG"))
  text = ("What is the colour of the umbrella?\n(A) black\n(B) cyan\n(C) white\n(D) pink\n"
          "Answer with the option's letter from the given choices directly.")
  lines = [{"question_id": 0, "image": "direct_attributes/sa_9.jpg", "text": text,
            "category": "direct_attributes", "label": "B"},
           {"question_id": 1, "image": "direct_attributes/sa_9.jpg",
            "text": "Is it day?\n(A) yes\n(B) no", "category": "relative_position", "label": "E"}]
  put(jsonl / "test_questions.jsonl", "".join(json.dumps(x) + "\n" for x in lines))


def whatsup(out: Path) -> None:
  root = out / "whatsup"
  put(root / "controlled_images/mug_on_table.jpeg", image("red", "JPEG"))
  put(root / "controlled_images_dataset.json", [
      {"image_path": "data/controlled_images/mug_on_table.jpeg",
       "caption_options": ["A mug on a table", "A mug under a table",
                           "A mug to the left of a table", "A mug to the right of a table"]},
      {"image_path": "data/controlled_images/dog_under_table.jpeg",
       "caption_options": ["A dog under a table", "A dog on a table",
                           "A dog to the left of a table", "A dog to the right of a table"]}])
  put(root / "controlled_clevr/cube_left_of_sphere.png", image("green"))
  put(root / "controlled_clevr/no_captions.png", image("blue"))
  put(root / "controlled_clevr/broken.png", CORRUPT)
  put(root / "controlled_clevr_dataset.json", [
      {"image_path": "data/controlled_clevr/cube_left_of_sphere.png",
       "caption_options": ["A cube to the left of a sphere", "A cube to the right of a sphere",
                           "A cube in front of a sphere", "A cube behind a sphere"]},
      {"image_path": "data/controlled_clevr/no_captions.png", "caption_options": []},
      {"image_path": "data/controlled_clevr/broken.png",
       "caption_options": ["A cone on a cube", "A cone under a cube"]}])


def spatial_mm(out: Path) -> None:
  obj = out / "spatial_mm_obj"
  put(obj / "images/129d118ad0.jpg", image("red", "JPEG"))
  put(obj / "images/b2a8fdeff0.jpg", image("green", "JPEG"))
  put(obj / "images/75a3568a9a.jpg", image("blue", "JPEG"))
  put(obj / "spatial_mm_one_obj.json", [
      {"image_name": "129d118ad0.jpg", "question": "Which direction is cat looking at from "
       "camera's perspective?\nA. bottom left\nB. left\nC. right\nD. upwards",
       "answer": "D. upwards", "object1": "cat", "object2": ""},
      {"image_name": "b2a8fdeff0.jpg", "question": "Where is the steering wheel located from "
       "camera's perspective?\nA. middle\nB. bottom\nC. left\nD. right",
       "answer": "C. middle", "object1": "steering wheel", "object2": ""}])
  put(obj / "data/spatial_mm_two_obj.json", [
      {"image_name": "75a3568a9a.jpg", "question": "In which hand is the man holding the "
       "glass?\nA. left\nB. right", "answer": "B. right", "object1": "man", "object2": "glass"},
      {"image_name": "00f3c6fd0d.jpg", "question": "Where is the building?\nA. right\nB. front",
       "answer": "A. right", "object1": "building", "object2": "wall"}])
  hop = out / "spatial_mm_multihop"
  for name, color in (("d9d4f495e8.jpeg", "yellow"), ("c51cu410c1.jpeg", "cyan"),
                      ("a87df479a2.jpeg", "magenta"), ("q1.jpg", "white")):
    put(hop / "images" / name, image(color, "JPEG"))
  put(hop / "multihop_reasoning_309.json", [
      {"image_name": "d9d4f495e8.jpeg", "question": "Is the lighter horse behind the darker "
       "horse?", "answer": "no", "reasoning": "{[lighter horse is closer]}", "hop": 3},
      {"image_name": "c51cu410c1.jpeg", "question": "Which direction is the adult monkey "
       "facing from camera's perspective?", "answer": "left",
       "reasoning": "{[adult monkey has baby on back], [facing left]}", "hop": 2},
      {"image_name": "a87df479a2.jpeg", "question": "What color is the garment worn by the "
       "person sitting to the left?", "answer": "pink", "reasoning": "{[garment is pink]}",
       "hop": 3},
      {"id": "custom-1", "image_path": "q1.jpg", "question": "Where is the cup?",
       "choices": {"A": "on the table", "B": "under the table"}, "answer": "under the table",
       "category": "relation"},
      {"image_name": "gone.jpeg", "question": "Is it raining?", "answer": "yes", "hop": 2}])


def main(out: Path) -> None:
  for make in (cv_bench, threedsr, mmbench, mme, vstar, whatsup, spatial_mm):
    make(out)
  total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  print(f"wrote fixtures to {out} ({total} bytes)")


if __name__ == "__main__":
  main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "fixtures")
