"""Assemble docs/results.md from the result files the benchmark scripts write into docs/results/.

    python benchmarks/collect_results.py

Nothing here computes or types a number: each section is a file written by the command it
names (``ssl-zoo demo --markdown``, ``benchmarks/compare.py``, ``benchmarks/data_pipeline.py``,
``benchmarks/step_time.py``, ``benchmarks/eval_speed.py``, ``benchmarks/cli_speed.py``), copied
verbatim under a heading; ``*_notes.md`` files hold the
hand-written reading of a table, in words only. Missing files are listed as not yet measured
rather than skipped silently.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

SECTIONS = [
    ("`ssl-zoo demo`: MoCo v2 on the embedded digits, k-NN before and after", ["demo_digits.md"]),
    ("The embedded benchmark `photo_patches`: MoCo v2 vs SimSiam vs LeOCLR vs synth, same budget, 3 seeds, each "
     "against its own untrained start", ["photo_patches_3seeds.md", "photo_patches_notes.md"]),
    ("MoCo v2 vs SimSiam vs LeOCLR on the embedded digits, same budget, 3 seeds, each against its own untrained "
     "start", ["methods_digits_3seeds.md", "methods_digits_3seeds_notes.md"]),
    ("Peer check: the same recipes rebuilt from lightly's building blocks", ["peer_check_photo_patches.md",
                                                                            "peer_check_notes.md"]),
    ("MoCo v2 vs SimSiam vs LeOCLR on the embedded digits, same budget, one seed (before the global-batch and "
     "BatchNorm-group changes)", ["methods_digits.md", "methods_digits_notes.md"]),
    ("Benchmark scripts on the demo encoder: k-NN, retrieval, linear probe (label fractions)",
     ["benchmarks_demo.md", "benchmarks_demo_notes.md"]),
    ("Synthesized pairs (synth) on MoCo v2: variants vs the base, same budget",
     ["synth_digits.md", "synth_digits_steptime.md", "synth_steptime_notes.md", "synth_step_profile.md",
      "synth_digits_grid.png", "synth_digits_notes.md"]),
    ("The embedded benchmark `digits_textures` (64 px): MoCo v2, one seed",
     ["digits_textures_moco_seed0.md", "digits_textures_notes.md"]),
    ("The second embedded benchmark `digits_clutter` (32 px): untrained vs MoCo v2, one seed (stopped)",
     ["digits_clutter_3seeds.md", "digits_clutter_notes.md"]),
    ("Data pipeline vs training step throughput", ["data_pipeline.md", "data_pipeline_notes.md"]),
    ("BatchNorm groups split inside one pass vs one group (MoCo v2, LeOCLR)",
     ["bn_groups_32px.md", "bn_groups_64px.md", "bn_groups_notes.md"]),
    ("Training step vs a plain-torch reference step (MoCo v2, LeOCLR)",
     ["step_reference_32px.md", "step_reference_64px.md", "step_reference_notes.md", "step_profile_32px.md"]),
    ("k-NN and retrieval time vs the plain similarity matmul", ["eval_speed.md", "eval_speed_10_classes.md",
                                                                  "eval_speed_embed.md", "eval_speed_notes.md"]),
    ("`ssl-zoo` start-up time: `--help`, `list` and every subcommand's `--help`",
     ["cli_speed.md", "cli_speed_notes.md"]),
    ("Superseded: the 3-seed comparisons and the same-start correction under the evaluation view before issue 22",
     ["old_view/about.md", "old_view/photo_patches_same_start.md", "old_view/digits_same_start.md",
      "old_view/peer_check_photo_patches.md",
      "old_view/same_start_notes.md", "old_view/photo_patches_3seeds.md", "old_view/photo_patches_notes.md",
      "old_view/methods_digits_3seeds.md", "old_view/methods_digits_3seeds_notes.md",
      "old_view/photo_patches_untrained_3seeds.md", "old_view/digits_untrained_3seeds.md"]),
]


def build() -> str:
    out = ["# Measured results", "",
           "Every number on this page was written by a script of this repository; each section gives the",
           "command and the machine. Regenerate the page with `python benchmarks/collect_results.py` after",
           "re-running a section's command. Accuracies are top-1 on the named test split.", "",
           "The one-seed method comparisons below were measured before issue 10 changed the training semantics",
           "(global batch, BatchNorm groups of 32 in the query and key encoders instead of key-only",
           "chunks, weight decay on every parameter for paper recipes, the synth decoder stage): their",
           "commands now train slightly different runs. The 3-seed `photo_patches` and digits comparisons were",
           "re-trained and re-measured on 2026-12-02 under issue 22's whole-image evaluation view of the 32-px",
           "recipes; their earlier versions (Resize 37 + CenterCrop 32) are kept at the end of the page.",
           "",
           "Tables written by `benchmarks/compare.py` since issue 21 compare each method with its own untrained",
           "encoder (its recipe's init and seed, BatchNorm statistics recomputed on the training images; the",
           "initial-statistics number in brackets) and give the gain over it; older tables have one `random init`",
           "row: the first recipe's encoder with initial BatchNorm statistics, which is not every method's start.",
           ""]
    for title, files in SECTIONS:
        out += [f"## {title}", ""]
        for name in files:
            path = RESULTS / name
            if not path.exists():
                out += [f"_Not measured yet: `docs/results/{name}` is missing._", ""]
            elif path.suffix == ".png":
                out += [f"![{name}](results/{name})", ""]
            else:
                text = path.read_text().strip()
                # demote the fragment's own headings below this page's section heading
                text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
                out += [text, ""]
    return "\n".join(out)


def main() -> int:
    target = ROOT / "docs" / "results.md"
    target.write_text(build())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
