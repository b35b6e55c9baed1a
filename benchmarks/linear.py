"""Linear-probe benchmark (MoCo protocol) of a frozen encoder (see docs/benchmarks.md).

    accelerate launch benchmarks/linear.py --model moco_v2_r18_digits --pretrained --output results/linear.json

Same arguments as `ssl-zoo eval linear` (`--help` lists them).
"""
import sys

from ssl_zoo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(protocol="linear"))
