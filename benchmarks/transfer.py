"""Transfer fine-tuning with an lr x weight-decay grid selected on held-out training images (LeOCLR Table 3)
(see docs/benchmarks.md).

    accelerate launch benchmarks/transfer.py --model moco_v2_r18_digits --pretrained --dataset cifar10 \\
        --data /data/cifar --output results/transfer.json

Same arguments as `ssl-zoo eval transfer` (`--help` lists them).
"""
import sys

from ssl_zoo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(protocol="transfer"))
