"""k-NN benchmark (weighted, cosine) of a frozen encoder (see docs/benchmarks.md).

    accelerate launch benchmarks/knn.py --model moco_v2_r18_digits --pretrained --output results/knn.json

Same arguments as `ssl-zoo eval knn` (`--help` lists them).
"""
import sys

from ssl_zoo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(protocol="knn"))
