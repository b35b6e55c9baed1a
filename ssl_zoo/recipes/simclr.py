"""SimCLR and LeOCLR-on-SimCLR recipes (LeOCLR paper Sec. 5, Tab. 4: "train our approach 200 epochs, batch 256").

[SimCLR] Chen et al. 2020 (arXiv:2002.05709), default ImageNet setting: LARS, lr 0.3 x batch/256, weight
decay 1e-6, 10 warm-up epochs then cosine, temperature 0.1, 2-layer projection to 128-d, batch 4096;
CIFAR-10 (its Appendix B.9): batch 512-1024, temperature 0.5. The SimCLR paper is not in shared/papers:
these values are from the paper as widely reproduced and are labelled [SimCLR] in docs/methods.md; the
projection head carries BN (as SimCLR v2 and lightly). [LeOCLR] Sec. 5: 200 epochs at batch 256 on
ImageNet. Small-image recipes reuse the MoCo v2 CIFAR/STL augmentation and backbones so the four methods
compare like for like ("ours").
"""
import dataclasses

from ..recipe import AugmentCfg, Recipe, TrainCfg, WeightsCfg, register_recipe
from .moco import CIFAR_AUGMENT, DIGITS_AUGMENT, DIGITS_TRAIN, R18, R18_CIFAR, R50, STL10_AUGMENT

SIMCLR_PAPER = "arXiv:2002.05709"
LEOCLR_PAPER = "arXiv:2403.06813"
# [SimCLR]: LARS, lr 0.3 x batch / 256, wd 1e-6, 10 warm-up epochs, cosine.
# [SimCLR]'s LARS excludes BatchNorm and bias parameters from weight decay (decay_norm_and_bias=False).
SIMCLR_TRAIN = TrainCfg(epochs=100, batch_size=4096, base_lr=0.3, lr_batch_denom=256, optimizer="lars",
                        sgd_momentum=0.9, weight_decay=1e-6, warmup_epochs=10, num_workers=8,
                        decay_norm_and_bias=False)
SIMCLR_ARGS = dict(proj_dim=128, temperature=0.1)
SMALL_TRAIN = TrainCfg(epochs=800, batch_size=512, base_lr=0.3, lr_batch_denom=256, optimizer="lars",
                       sgd_momentum=0.9, weight_decay=1e-6, warmup_epochs=10, decay_norm_and_bias=False)
SMALL_ARGS = dict(proj_dim=128, temperature=0.5)  # [SimCLR] B.9: tau 0.5 on CIFAR-10

for method, prefix, paper in (("simclr", "simclr", SIMCLR_PAPER), ("leoclr_simclr", "leoclr_simclr", LEOCLR_PAPER)):
    in1k_train = SIMCLR_TRAIN if method == "simclr" else dataclasses.replace(SIMCLR_TRAIN, epochs=200,
                                                                              batch_size=256)
    register_recipe(Recipe(
        name=f"{prefix}_r50_in1k", method=method, method_args=SIMCLR_ARGS, backbone=R50,
        augment=AugmentCfg(image_size=224), dataset="imagenet1k", train=in1k_train,
        weights=WeightsCfg(paper=paper, license="apache-2.0"),
        description=(f"{'SimCLR' if method == 'simclr' else 'LeOCLR on SimCLR (end-to-end)'}, ResNet-50, "
                     f"ImageNet-1k, {in1k_train.epochs} epochs, batch {in1k_train.batch_size}"
                     + ("" if method == "simclr" else " (LeOCLR paper Tab. 4)")),
    ))
    for dataset, backbone, augment in (("cifar10", R18_CIFAR, CIFAR_AUGMENT), ("stl10", R18, STL10_AUGMENT)):
        register_recipe(Recipe(
            name=f"{prefix}_r18_{dataset}", method=method, method_args=SMALL_ARGS, backbone=backbone,
            augment=augment, dataset=dataset, train=SMALL_TRAIN,
            train_split="train+unlabeled" if dataset == "stl10" else "train",
            weights=WeightsCfg(paper=paper, license="apache-2.0"),
            description=f"{method}, ResNet-18, {dataset} at {augment.image_size} px, 800 epochs.",
        ))
    # Digits demo: the moco_v2_r18_digits budget; SGD at its lr (ours: LARS pays off at large batches only).
    register_recipe(Recipe(
        name=f"{prefix}_r18_digits", method=method, method_args=SMALL_ARGS, backbone=R18,
        augment=DIGITS_AUGMENT, dataset="digits", train=DIGITS_TRAIN,
        weights=WeightsCfg(paper=paper, license="apache-2.0"),
        description=f"{method} demo on the embedded digits (32 px, CPU-friendly).",
    ))
