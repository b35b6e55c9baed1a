"""SimSiam recipes (Chen & He, CVPR 2021, arXiv:2011.10566; official facebookresearch/simsiam)."""
import dataclasses

from ..recipe import AugmentCfg, BackboneCfg, Recipe, TrainCfg, WeightsCfg, register_recipe
from .moco import CIFAR_MEAN, CIFAR_STD, DIGITS_AUGMENT, DIGITS_TRAIN

SIMSIAM_PAPER = "arXiv:2011.10566"
# Official code (CC-BY-NC 4.0) builds torchvision ResNets with zero_init_residual=True.
R50_ZI = BackboneCfg("resnet50", {"zero_init_last": True})
R18_ZI = BackboneCfg("resnet18", {"zero_init_last": True})
SIMSIAM_ARGS = dict(proj_dim=2048, pred_hidden_dim=512, fix_pred_lr=True)

# The official releases (facebookresearch/simsiam README, CC-BY-NC 4.0; no checksums published):
# pre-trained `module.encoder.*` (ssl_zoo.convert's "simsiam" source) and the 1000-class linear
# classifier of main_lincls.py on those frozen weights (68.1% / 68.3% top-1), which
# `create_model(name, pretrained=True, num_classes=1000)` loads too.
SIMSIAM_RELEASES = "https://dl.fbaipublicfiles.com/simsiam/models"


def simsiam_weights(run: str) -> WeightsCfg:
    return WeightsCfg(url=f"{SIMSIAM_RELEASES}/{run}/pretrain/checkpoint_0099.pth.tar", source="simsiam",
                      classifier_url=f"{SIMSIAM_RELEASES}/{run}/linear/model_best.pth.tar", classifier_classes=1000,
                      paper=SIMSIAM_PAPER, license="cc-by-nc-4.0")


# ImageNet (paper Sec. 4 "Implementation details", official main_simsiam.py): batch 512,
# lr 0.05 x batch/256, SGD momentum 0.9, wd 1e-4, cosine, 100 epochs (68.1% linear),
# predictor lr fixed (--fix-pred-lr). MoCo v2 augmentation (AugmentCfg defaults).
SIMSIAM_R50_IN1K = register_recipe(Recipe(
    name="simsiam_r50_in1k", method="simsiam", method_args=SIMSIAM_ARGS, backbone=R50_ZI,
    augment=AugmentCfg(image_size=224), dataset="imagenet1k",
    train=TrainCfg(epochs=100, batch_size=512, base_lr=0.05, weight_decay=1e-4, sgd_momentum=0.9,
                   num_workers=8),
    weights=simsiam_weights("100ep"),
    description="SimSiam, ResNet-50, ImageNet-1k, 100 epochs, batch 512 (official settings).",
))

# The same recipe at batch 256 (lr 0.05 x 256/256): the official release with the best linear
# accuracy (68.3%, README table).
register_recipe(dataclasses.replace(
    SIMSIAM_R50_IN1K, name="simsiam_r50_in1k_bs256",
    train=dataclasses.replace(SIMSIAM_R50_IN1K.train, batch_size=256), weights=simsiam_weights("100ep-256bs"),
    description="SimSiam, ResNet-50, ImageNet-1k, 100 epochs, batch 256 (official settings, 68.3% linear release).",
))

# CIFAR-10 (paper Appendix D): ResNet-18, 800 epochs, batch 512, lr 0.03 x batch/256, wd 5e-4,
# SGD momentum 0.9, cosine. The paper's CIFAR ResNet-18 variant (3x3 stem, no max-pool) is not
# a timm option; like the MoCo v2 CIFAR recipe we use timm's resnet18 at 32 px (docs/methods.md).
register_recipe(Recipe(
    name="simsiam_r18_cifar10", method="simsiam", method_args=SIMSIAM_ARGS, backbone=R18_ZI,
    augment=AugmentCfg(image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD), dataset="cifar10",
    train=TrainCfg(epochs=800, batch_size=512, base_lr=0.03, weight_decay=5e-4, sgd_momentum=0.9),
    weights=WeightsCfg(paper=SIMSIAM_PAPER, license="cc-by-nc-4.0"),
    description="SimSiam, ResNet-18, CIFAR-10 at 32 px, 800 epochs (paper Appendix D settings).",
))

# Digits demo: the same budget (epochs, batch, backbone, augmentation) as moco_v2_r18_digits,
# only the learning rate on SimSiam's 0.05 x batch/256 scale.
register_recipe(Recipe(
    name="simsiam_r18_digits", method="simsiam", method_args=SIMSIAM_ARGS, backbone=R18_ZI,
    augment=DIGITS_AUGMENT, dataset="digits", train=dataclasses.replace(DIGITS_TRAIN, base_lr=0.05),
    weights=WeightsCfg(paper=SIMSIAM_PAPER, license="apache-2.0"),
    description="SimSiam demo on the embedded scikit-learn digits (32 px, CPU-friendly).",
))
