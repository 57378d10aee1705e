"""Per-model prompt conventions (PAPER.md section 2): system prompt, user template, answer style.

Each evaluated model was trained with its own prompt; evaluating it with another one measures the
prompt, not the model. A preset renders a `PromptSpec` into chat messages for the processor and
parses the model's output back to an option letter. The wording of each preset follows the
model's published convention in substance (output format, answer style) [ours: exact strings].
"""

from __future__ import annotations

import dataclasses
import re

from evals.variants import PromptSpec

_TAGS = ("Output the thinking process in <think> </think> and the final answer in "
         "<answer> </answer> tags, i.e. <think> reasoning </think><answer> X </answer>.")
_LETTER = "Answer with the option's letter."
_TEXT = "Answer with the option's text."


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  system: str | None            # None: the chat template's default system prompt
  instruction: str              # appended to the question and options
  answer_style: str = "letter"  # "letter" or "text" (ViGoRL answers with the option text)
  answer_tags_optional: bool = False  # Vision-R1 may end with a bare answer after </think>

  def messages(self, spec: PromptSpec, num_images: int) -> list[dict]:
    """Chat messages: optional system, then the images and the question with lettered options."""
    options = "\n".join(f"({l}) {o}" for l, o in zip(spec.letters, spec.options))
    content = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": f"{spec.question}\nOptions:\n{options}\n"
                                            f"{self.instruction}"})
    out = [{"role": "system", "content": self.system}] if self.system else []
    return out + [{"role": "user", "content": content}]


PRESETS = {
    "qwen2_5_vl_instruct": Preset("qwen2_5_vl_instruct", None, f"{_TAGS} {_LETTER}"),
    # Video-R1 and SpaceR share the R1-style template: think aloud, then the tagged answer.
    "r1": Preset("r1", None,
                 "Please think about this question as if you were a human pondering deeply, "
                 "with self-reflection and verification. Provide your detailed reasoning between "
                 "the <think> </think> tags, and then give your final answer between the "
                 "<answer> </answer> tags. Please provide only the single option letter "
                 "(e.g., A, B, C, D, etc.) within the <answer> </answer> tags."),
    "vlaa_thinker": Preset(
        "vlaa_thinker",
        "You are VL-Thinking, a helpful assistant with excellent reasoning ability. A user asks "
        "you a question, and you should try to solve it. You should first think about the "
        "reasoning process in the mind and then provide the user with the answer. The reasoning "
        "process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think><answer> answer here "
        "</answer>.", _LETTER),
    "vision_r1": Preset("vision_r1", None, f"{_TAGS} {_LETTER}", answer_tags_optional=True),
    "vigorl_spatial": Preset(
        "vigorl_spatial", None,
        "First reason step by step inside <think> </think>, grounding each step in the image "
        "with (x, y) points, then give the final answer inside <answer> </answer>. " + _TEXT,
        answer_style="text"),
}
PRESETS["video_r1"] = dataclasses.replace(PRESETS["r1"], name="video_r1")
PRESETS["spacer"] = dataclasses.replace(PRESETS["r1"], name="spacer")


def get_preset(name: str) -> Preset:
  key = name.lower().replace("-", "_")
  if key not in PRESETS:
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
  return PRESETS[key]


def answer_text(output: str, preset: Preset) -> str | None:
  """The text the model gives as its answer: inside <answer>, or (when the preset allows) what
  follows </think>; None when there is none."""
  from evals.answers import THINK_CLOSE, split_output  # noqa: PLC0415 (imports nothing of ours)
  _, answer = split_output(output)
  closings = list(THINK_CLOSE.finditer(output)) if answer is None else []
  if closings and preset.answer_tags_optional:  # "</think>", "</THINK>", "</ think >" alike
    answer = output[closings[-1].end():].strip() or None
  return answer


def parse_answer(output: str, spec: PromptSpec, preset: Preset) -> str | None:
  """Option letter of the model's answer, or None ("unparsed": never guessed)."""
  from evals.answers import parse_letter  # noqa: PLC0415
  answer = answer_text(output, preset)
  if answer is None:
    return None
  letters, options = list(spec.letters), list(spec.options)
  first, _, explanation = answer.strip().partition("\n")
  if explanation.strip() and (label := _LONE_LABEL.match(first.strip())):
    # a label on a line of its own, then an explanation ("B\n\nThe blue cube is closer."):
    # the line decides (collapsed, "B The blue cube ..." would read as prose)
    letter = parse_letter(label[0], letters, options)
    if letter is not None:
      return letter
  answer = re.sub(r"\s+", " ", answer).strip()
  return parse_letter(answer, letters, options)


# a first line that is only an option label: "B", "(B)", "B.", "**B**", "Option B:"
_LONE_LABEL = re.compile(r"^[*_`]*(?:(?i:option|choice|answer)\s*[:\-]?\s*)?"
                         r"(?:\(\s*[A-Za-z]\s*\)|[A-Z])[.:)]?[*_`]*$")
