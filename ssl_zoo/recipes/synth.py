"""Synthesized-pair fine-grained SSL recipes ("synth", ../shared/papers/synth_fgvr_ssl.txt) and their baselines.

Paper settings (Sec. 4 and Appendix B): ResNet-50 initialised from ImageNet-supervised weights, 224 px,
batch 128, 100 epochs, MoCo v2 optimiser (SGD lr 0.03 x batch/256, momentum 0.9, wd 1e-4, cosine),
MoCo queue 65536, m 0.999, tau 0.2; alpha = beta = 0.5, delta = 0.02 (METHODS.md). sigma_gc,
sigma_var, the bank size N and the NT-Xent temperature are not legible in the paper: the values
below are this project's documented defaults (docs/synth.md). The baselines use the same settings
without the add-on, so a pair (baseline, synth) differs only in the method.
"""
import dataclasses

from ..recipe import AugmentCfg, BackboneCfg, Recipe, TrainCfg, WeightsCfg, register_recipe
from .moco import DIGITS_AUGMENT, DIGITS_MOCO_ARGS, DIGITS_TRAIN, MOCO_ARGS

SYNTH_PAPER = "Learning Discriminative Features from Synthesized Data for Self-Supervised Fine-Grained Recognition"
R50_IN1K = BackboneCfg("resnet50", {"zero_init_last": False}, init="timm:resnet50.tv_in1k")
R18 = BackboneCfg("resnet18", {"zero_init_last": False})
SIMSIAM_BASE_ARGS = dict(proj_dim=2048, pred_hidden_dim=512, fix_pred_lr=True)
SYNTH_ARGS = dict(variant="full", alpha=0.5, beta=0.5, delta=0.02, sigma_gc=0.5, sigma_var=0.5, bank_size=4096,
                  nt_xent_temperature=0.2)
PAPER_TRAIN = TrainCfg(epochs=100, batch_size=128, base_lr=0.03, lr_batch_denom=256, sgd_momentum=0.9,
                       weight_decay=1e-4, schedule="cosine", num_workers=8)
# SimSiam's own lr scale (0.05 x batch/256); everything else as above.
SIMSIAM_TRAIN = dataclasses.replace(PAPER_TRAIN, base_lr=0.05)

# Decoder pre-training (paper Appendix B.2: encoder frozen, MSE, Adam, batch 128, 200 epochs,
# images only resized). `ssl-zoo pretrain-decoder` reads the epochs from here (default 200).
DECODER_PRETRAIN_EPOCHS: dict[str, int] = {}

# dataset name in ssl_zoo.data -> recipe suffix
FINE_GRAINED = {"cub": "cub200", "cars": "stanford_cars", "aircraft": "aircraft", "gtsrb": "gtsrb",
                "isic2017": "isic2017"}

for short, dataset in FINE_GRAINED.items():
    register_recipe(Recipe(
        name=f"moco_v2_synth_r50_{short}", method="synth",
        method_args={**SYNTH_ARGS, "base": "moco_v2", "base_args": dict(MOCO_ARGS)}, backbone=R50_IN1K,
        augment=AugmentCfg(image_size=224), dataset=dataset, train=PAPER_TRAIN,
        weights=WeightsCfg(paper=SYNTH_PAPER),
        description=f"MoCo v2 + synthesized pairs, ResNet-50 (ImageNet-supervised init), {dataset}, 224 px, "
                    f"100 epochs (paper settings).",
    ))
    DECODER_PRETRAIN_EPOCHS[f"moco_v2_synth_r50_{short}"] = 200

for short in ("cub", "cars", "aircraft"):
    register_recipe(Recipe(
        name=f"moco_v2_r50_{short}", method="moco_v2", method_args=dict(MOCO_ARGS), backbone=R50_IN1K,
        augment=AugmentCfg(image_size=224), dataset=FINE_GRAINED[short], train=PAPER_TRAIN,
        weights=WeightsCfg(paper=SYNTH_PAPER),
        description=f"MoCo v2 baseline of the synth paper, ResNet-50 (ImageNet-supervised init), "
                    f"{FINE_GRAINED[short]}, 100 epochs.",
    ))
    register_recipe(Recipe(
        name=f"simsiam_synth_r50_{short}", method="synth",
        method_args={**SYNTH_ARGS, "base": "simsiam", "base_args": dict(SIMSIAM_BASE_ARGS)}, backbone=R50_IN1K,
        augment=AugmentCfg(image_size=224), dataset=FINE_GRAINED[short], train=SIMSIAM_TRAIN,
        weights=WeightsCfg(paper=SYNTH_PAPER),
        description=f"SimSiam + synthesized pairs, ResNet-50 (ImageNet-supervised init), {FINE_GRAINED[short]}, "
                    f"100 epochs.",
    ))
    DECODER_PRETRAIN_EPOCHS[f"simsiam_synth_r50_{short}"] = 200

register_recipe(Recipe(
    name="simsiam_r50_cub", method="simsiam", method_args=dict(SIMSIAM_BASE_ARGS), backbone=R50_IN1K,
    augment=AugmentCfg(image_size=224), dataset="cub200", train=SIMSIAM_TRAIN,
    weights=WeightsCfg(paper=SYNTH_PAPER),
    description="SimSiam baseline of the synth paper, ResNet-50 (ImageNet-supervised init), CUB-200, 100 epochs.",
))

# Digits demo: moco_v2_r18_digits plus the add-on (same backbone, augmentation, epochs, batch, lr,
# queue and momentum), random init (offline). delta is scaled with the feature size: a unit vector's
# mean component is 1/sqrt(d), 0.022 for d = 2048 and 0.044 for ResNet-18's d = 512, so delta = 0.04
# keeps the paper's threshold relative to the mean. bank = 16 global batches of 64.
_DIGITS_SYNTH = register_recipe(Recipe(
    name="moco_v2_synth_r18_digits", method="synth",
    method_args={**SYNTH_ARGS, "delta": 0.04, "bank_size": 1024, "base": "moco_v2",
                 "base_args": DIGITS_MOCO_ARGS,
                 "decoder_channels": [256, 128, 64, 32, 16]},
    backbone=R18, augment=DIGITS_AUGMENT, dataset="digits", train=DIGITS_TRAIN,
    weights=WeightsCfg(paper=SYNTH_PAPER),
    description="MoCo v2 + synthesized pairs demo on the embedded digits (32 px, CPU-friendly).",
))
DECODER_PRETRAIN_EPOCHS["moco_v2_synth_r18_digits"] = 20

# The paper's ablations on the demo (same everything, one noise criterion each; "random" = isotropic).
for _variant in ("gradcam", "lowvar", "random"):
    register_recipe(dataclasses.replace(
        _DIGITS_SYNTH, name=f"moco_v2_synth_r18_digits_{_variant}",
        method_args={**_DIGITS_SYNTH.method_args, "variant": _variant},
        description=f"Ablation of moco_v2_synth_r18_digits: variant {_variant!r}."))
