"""Random-crop robustness test of a trained classifier (LeOCLR Table 6) (see docs/benchmarks.md).

    accelerate launch benchmarks/crop_robustness.py --model moco_v2_r18_digits --pretrained --cached-features \\
        --output results/crop_robustness.json

Same arguments as `ssl-zoo eval crop-robustness` (`--help` lists them).
"""
import sys

from ssl_zoo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(protocol="crop-robustness"))
