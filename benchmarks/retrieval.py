"""Retrieval benchmark (rank-1, rank-5, mAP) of a frozen encoder (see docs/benchmarks.md).

    accelerate launch benchmarks/retrieval.py --model moco_v2_r18_digits --pretrained --output results/retrieval.json

Same arguments as `ssl-zoo eval retrieval` (`--help` lists them).
"""
import sys

from ssl_zoo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(protocol="retrieval"))
