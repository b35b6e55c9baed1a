"""SimSiam recipes (Chen & He, CVPR 2021, arXiv:2011.10566; official facebookresearch/simsiam)."""
import dataclasses

from ..recipe import AugmentCfg, BackboneCfg, Recipe, TrainCfg, WeightsCfg, register_recipe
from .moco import CIFAR_AUGMENT, DIGITS_AUGMENT, DIGITS_TRAIN

SIMSIAM_PAPER = "arXiv:2011.10566"
# Official code (CC-BY-NC 4.0) builds torchvision ResNets with zero_init_residual=True.
R50_ZI = BackboneCfg("resnet50", {"zero_init_last": True})
R18_ZI = BackboneCfg("resnet18", {"zero_init_last": True})
# Appendix D: "the CIFAR variant of ResNet-18" (3x3 stride-1 stem, no max-pool).
R18_CIFAR_ZI = BackboneCfg("resnet18_cifar", {"zero_init_last": True})
# Paper Sec. 4 / main_simsiam.py: 2048-d projection output, 512-d predictor bottleneck, --fix-pred-lr.
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


# ImageNet (paper Sec. 4 "Implementation details", official main_simsiam.py): global batch 512,
# lr 0.05 x batch/256, SGD momentum 0.9, wd 1e-4 on every parameter, cosine, 100 epochs (68.1%
# linear), predictor lr fixed (--fix-pred-lr), SyncBatchNorm over all GPUs (main_simsiam.py
# converts the model). MoCo v2 augmentation (AugmentCfg defaults).
SIMSIAM_R50_IN1K = register_recipe(Recipe(
    name="simsiam_r50_in1k", method="simsiam", method_args=SIMSIAM_ARGS, backbone=R50_ZI,
    augment=AugmentCfg(image_size=224), dataset="imagenet1k",
    train=TrainCfg(epochs=100, batch_size=512, base_lr=0.05, weight_decay=1e-4, sgd_momentum=0.9,
                   num_workers=8, sync_bn=True),
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

# CIFAR-10 (paper Appendix D): the CIFAR ResNet-18, 800 epochs, batch 512, lr 0.03 x batch/256,
# wd 5e-4, SGD momentum 0.9, cosine; the ImageNet augmentation without blur; a 2-layer projector
# with 2048-d output. Hidden width 2048 (paper Sec. 4 "the hidden fc is 2048-d"; the official
# code's prev_dim would give ResNet-18's 512). SyncBatchNorm as in the ImageNet script (ours for
# CIFAR: the appendix trains on one GPU-sized batch). The predictor lr is fixed as on ImageNet
# (ours: the appendix does not say).
register_recipe(Recipe(
    name="simsiam_r18_cifar10", method="simsiam",
    method_args={**SIMSIAM_ARGS, "proj_layers": 2, "proj_hidden_dim": 2048}, backbone=R18_CIFAR_ZI,
    augment=CIFAR_AUGMENT, dataset="cifar10",
    train=TrainCfg(epochs=800, batch_size=512, base_lr=0.03, weight_decay=5e-4, sgd_momentum=0.9, sync_bn=True),
    weights=WeightsCfg(paper=SIMSIAM_PAPER, license="cc-by-nc-4.0"),
    description="SimSiam, ResNet-18 (CIFAR stem), CIFAR-10 at 32 px, 800 epochs (paper Appendix D settings).",
))

# Digits demo: the same budget (epochs, batch, backbone, augmentation) as moco_v2_r18_digits,
# only the learning rate on SimSiam's 0.05 x batch/256 scale. SyncBatchNorm as every SimSiam recipe
# (main_simsiam.py converts the model; in one process it is plain BatchNorm, so one-process runs are unchanged).
register_recipe(Recipe(
    name="simsiam_r18_digits", method="simsiam", method_args=SIMSIAM_ARGS, backbone=R18_ZI,
    augment=DIGITS_AUGMENT, dataset="digits", train=dataclasses.replace(DIGITS_TRAIN, base_lr=0.05, sync_bn=True),
    weights=WeightsCfg(paper=SIMSIAM_PAPER, license="apache-2.0"),
    description="SimSiam demo on the embedded scikit-learn digits (32 px, CPU-friendly).",
))
