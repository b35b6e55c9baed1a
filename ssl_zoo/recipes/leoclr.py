"""LeOCLR recipes (Alkhalefi, Leontidis, Zhong; arXiv:2403.06813). No official code was released.

Paper facts used (section of papers/leoclr.txt):
- Sec. 3, Eq. 1: momentum m = 0.999.
- Sec. 3, Fig. 3 / Algorithm 1: original view resized to 224 x 224 without crop, two
  RandomResizedCrop(224) views, MoCo v2 augmentations on all three.
- Sec. 4 "Training Setup": ResNet-50, SGD, weight decay 1e-4, momentum 0.9, initial lr 0.03,
  batch 256, up to 800 epochs on ImageNet-1K (Tab. 1: 76.2% linear at 800 epochs;
  Tab. 6: 71.7% at 200 epochs, centre-crop test).
- Sec. 5, Tab. 5: ResNet-18, 800 epochs on STL-10 (85.20%) and CIFAR-10 (79.59%).
Not given in the paper, taken from MoCo v2 (on which LeOCLR is built): temperature 0.2,
queue 65536 (ImageNet), the 128-d 2-layer MLP head, the cosine schedule, BatchNorm groups of 32
(the official MoCo per-GPU batch). For the ResNet-18 runs nothing beyond backbone and epochs is
given: we use exactly the moco_v2_r18_* settings (the official MoCo CIFAR-10 demo's: lr 0.06 at
batch 512, wd 5e-4, K 4096, m 0.99, T 0.1, BN groups of 64, CIFAR ResNet-18, no blur), so the two
methods compare like for like (docs/methods.md lists these reconstructions as ours).
Evaluation (``ssl-zoo reproduce``): the paper reports linear evaluation (top-1, all labels) only;
ImageNet is tested on its val split (Tab. 6's centre-crop column is the MoCo protocol's test view).
"""
from ..recipe import AugmentCfg, EvalProtocol, PaperResult, Recipe, TrainCfg, WeightsCfg, register_recipe
from .moco import (
    CIFAR_AUGMENT,
    DIGITS_AUGMENT,
    DIGITS_MOCO_ARGS,
    DIGITS_TRAIN,
    MOCO_ARGS,
    R18,
    R18_CIFAR,
    R50,
    SMALL_IMAGE_MOCO_ARGS,
    SMALL_IMAGE_TRAIN,
    STL10_AUGMENT,
)

LEOCLR_PAPER = "arXiv:2403.06813"
# LeOCLR keeps MoCo v2's head, queue (K=65536), temperature (0.2) and momentum (0.999).
LEOCLR_ARGS = dict(MOCO_ARGS)

LINEAR = (EvalProtocol("linear"),)
LINEAR_IN1K = (EvalProtocol("linear", test_split="val"),)


def _linear_top1(value: float, table: str) -> tuple[PaperResult, ...]:
    return (PaperResult("linear_100", "top1", value, f"LeOCLR paper {table}"),)


PAPER_TOP1 = {"leoclr_r50_in1k": _linear_top1(71.7, "Tab. 6 (centre crop)"),
              "leoclr_r50_in1k_800ep": _linear_top1(76.2, "Tab. 1"),
              "leoclr_r18_stl10": _linear_top1(85.20, "Tab. 5"), "leoclr_r18_cifar10": _linear_top1(79.59, "Tab. 5")}

for name, epochs, desc in [("leoclr_r50_in1k", 200, "200 epochs (paper Tab. 6: 71.7%)"),
                           ("leoclr_r50_in1k_800ep", 800, "800 epochs (paper Tab. 1: 76.2%)")]:
    register_recipe(Recipe(
        name=name, method="leoclr", method_args=LEOCLR_ARGS, backbone=R50,
        # Sec. 5 (Tab. 6): the centre-crop test resizes "to 256 pixels along the shorter side using bicubic
        # resampling"; training views keep MoCo v2's bilinear RandomResizedCrop.
        augment=AugmentCfg(image_size=224, eval_interpolation="bicubic"), dataset="imagenet1k",
        train=TrainCfg(epochs=epochs, batch_size=256, base_lr=0.03, weight_decay=1e-4, sgd_momentum=0.9,
                       num_workers=8),
        weights=WeightsCfg(paper=LEOCLR_PAPER, license="apache-2.0"),
        evaluation=LINEAR_IN1K, paper_results=PAPER_TOP1[name],
        description=f"LeOCLR, ResNet-50, ImageNet-1k, {desc}; paper Sec. 4 settings.",
    ))

for name, dataset, backbone, augment in [("leoclr_r18_cifar10", "cifar10", R18_CIFAR, CIFAR_AUGMENT),
                                         ("leoclr_r18_stl10", "stl10", R18, STL10_AUGMENT)]:
    register_recipe(Recipe(
        name=name, method="leoclr", method_args=SMALL_IMAGE_MOCO_ARGS, backbone=backbone,
        augment=augment, dataset=dataset,
        # STL-10 pre-trains on its 100k unlabelled images plus the 5k labelled ones.
        train_split="train+unlabeled" if dataset == "stl10" else "train",
        train=SMALL_IMAGE_TRAIN,
        weights=WeightsCfg(paper=LEOCLR_PAPER, license="apache-2.0"),
        evaluation=LINEAR, paper_results=PAPER_TOP1[name],
        description=f"LeOCLR, ResNet-18, {dataset} at {augment.image_size} px, 800 epochs (paper Tab. 5).",
    ))

# Digits demo: the same budget and method arguments as moco_v2_r18_digits.
register_recipe(Recipe(
    name="leoclr_r18_digits", method="leoclr",
    method_args=DIGITS_MOCO_ARGS, backbone=R18,
    augment=DIGITS_AUGMENT, dataset="digits", train=DIGITS_TRAIN,
    weights=WeightsCfg(paper=LEOCLR_PAPER, license="apache-2.0"),
    description="LeOCLR demo on the embedded scikit-learn digits (32 px, CPU-friendly).",
))
