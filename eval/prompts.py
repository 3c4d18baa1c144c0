"""Prompt templates, selectable by name. The template name and text enter every result's key, so changing a
template never reuses answers given to another one."""

from __future__ import annotations

import hashlib

# MedQ-Deg (VLMEvalKit MedQDEGBenchDataset): question, blank line, one "X. text" per option, blank line, the
# instruction. No hint, no chain of thought, no confidence request.
_MEDQ_DEG = "{question}\n\n{options}\n\nAnswer with the option letter from the given choices directly."

# MedQ-Bench perception (VLMEvalKit medqbench_mcq, same layout in our words).
_MEDQ_BENCH = ("Look carefully at the medical image and answer the question.\n{question}\nOptions:\n{options}\n"
               "Reply with the letter of the correct option only.")

# Verbalised confidence (Xiong et al. arXiv 2306.13063 style): letter first, then a percentage.
_VERBAL = ("{question}\n\n{options}\n\nAnswer with the option letter from the given choices, then on a new line "
           "give your confidence that the answer is correct as 'Confidence: N%'.")

# MedQ-Bench reasoning: no-reference description with a verdict, and the two-image comparison.
_DESCRIPTION = ("You are an expert in medical image quality. Describe the low-level quality of this image "
                "(noise, blur, artefacts, contrast, resolution) in 3 to 5 concise sentences, and finish with: "
                "'Overall, the quality of this image is good', '... usable' or '... reject'.")
_COMPARISON = ("You are an expert in medical image quality. The first image is A and the second is B. Compare "
               "their low-level quality (noise, blur, artefacts, contrast, resolution) in 3 to 5 concise "
               "sentences, and finish with which image is of higher quality: 'Image A' or 'Image B'.")

TEMPLATES: dict[str, str] = {"medq-deg": _MEDQ_DEG, "medq-bench": _MEDQ_BENCH, "verbal": _VERBAL,
                             "description": _DESCRIPTION, "comparison": _COMPARISON}
MCQ_TEMPLATES = ("medq-deg", "medq-bench", "verbal")


def check_template(name: str) -> str:
    if name not in MCQ_TEMPLATES:
        raise ValueError(f"unknown template {name!r} (multiple-choice templates: {', '.join(MCQ_TEMPLATES)})")
    return name


def mcq_prompt(question: str, options: dict[str, str], template: str = "medq-deg") -> str:
    """The text turn for a multiple-choice item; options in letter order, empty ones already removed."""
    lines = "\n".join(f"{k}. {v}" for k, v in sorted(options.items()))
    return TEMPLATES[check_template(template)].format(question=question.strip(), options=lines)


def free_prompt(kind: str, question: str | None = None) -> str:
    """Reasoning tasks (``description`` / ``comparison``): the TSV's own question when it has one."""
    return question.strip() if question and question.strip() else TEMPLATES[kind]


def template_digest(name: str) -> str:
    """Short digest of a template's text: part of each result key."""
    return hashlib.sha256(f"{name}\0{TEMPLATES[name]}".encode()).hexdigest()[:12]
