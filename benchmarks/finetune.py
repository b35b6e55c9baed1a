"""Semi-supervised fine-tuning (SimCLR protocol; LeOCLR Table 2, Fig. 5) of the whole encoder plus a linear head
(see docs/benchmarks.md).

    accelerate launch benchmarks/finetune.py --model moco_v2_r18_digits --pretrained --label-fraction 0.1 \\
        --output results/finetune.json

Same arguments as `ssl-zoo eval finetune` (`--help` lists them).
"""
import sys

from ssl_zoo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(protocol="finetune"))
