"""MoCo v2 recipes. Every number cites its source; docs/methods.md has the table recipe -> source -> value.

Sources: [MoCo v2] Chen et al. 2020, arXiv:2003.04297, and the official main_moco.py defaults
(--lr 0.03, --batch-size 256, --wd 1e-4, --momentum 0.9, --moco-k 65536, --moco-m 0.999,
--moco-t 0.2 with --mlp --aug-plus --cos); [demo] the official MoCo CIFAR-10 demo,
colab/moco_cifar10_demo.ipynb (lr 0.06 at batch 512, wd 5e-4, K 4096, m 0.99, T 0.1,
bn-splits 8, CIFAR ResNet-18, no blur, whole-image test view); [LeOCLR] arXiv:2403.06813
Tab. 5 (ResNet-18, 800 epochs on CIFAR-10 and STL-10). "ours" marks this project's choices.
"""
from ..recipe import AugmentCfg, BackboneCfg, EvalProtocol, PaperResult, Recipe, TrainCfg, WeightsCfg, register_recipe

MOCO_V2_PAPER = "arXiv:2003.04297"
# [demo]: transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]), the official demo's values
# (the widely copied CIFAR-10 std; the train set's per-pixel std is 0.247 / 0.243 / 0.262).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
STL10_MEAN, STL10_STD = (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)
# torchvision-style ResNet as in the official MoCo code: no zero-init of the last BN in each block.
R50 = BackboneCfg("resnet50", {"zero_init_last": False})
R18 = BackboneCfg("resnet18", {"zero_init_last": False})
# [demo]: conv1 3x3 stride 1, no max-pool (ssl_zoo.backbones registers it with timm).
R18_CIFAR = BackboneCfg("resnet18_cifar", {"zero_init_last": False})
# [MoCo v2] main_moco.py: K 65536, m 0.999, T 0.2 (--moco-t 0.2 with --mlp); 128-d head output.
# bn_group_size 32: the official run's per-GPU batch (256 images / 8 GPUs).
MOCO_ARGS = dict(proj_dim=128, queue_size=65536, temperature=0.2, momentum=0.999, bn_group_size=32)
# [demo]: K 4096, m 0.99, T 0.1, bn-splits 8 at batch 512 = groups of 64 images.
SMALL_IMAGE_MOCO_ARGS = dict(proj_dim=128, queue_size=4096, temperature=0.1, momentum=0.99, bn_group_size=64)
# [demo]: SGD lr 0.06 at batch 512 (not rescaled), momentum 0.9, wd 5e-4 on every parameter, cosine;
# 800 epochs as [LeOCLR] Tab. 5.
SMALL_IMAGE_TRAIN = TrainCfg(epochs=800, batch_size=512, base_lr=0.06, lr_batch_denom=512, weight_decay=5e-4,
                             sgd_momentum=0.9, schedule="cosine")
# [demo]: crop, flip, colour jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, NO blur; the test
# view is the whole 32x32 image (eval_crop_pct 1.0).
CIFAR_AUGMENT = AugmentCfg(image_size=32, blur_p=0.0, mean=CIFAR_MEAN, std=CIFAR_STD, eval_crop_pct=1.0)
# ours: STL-10 at its native 96 px with the MoCo v2 augmentation (blur included, as [MoCo v2]).
STL10_AUGMENT = AugmentCfg(image_size=96, mean=STL10_MEAN, std=STL10_STD, eval_crop_pct=1.0)

# The official releases (facebookresearch/moco README, CC-BY-NC 4.0): DDP-wrapped MoCo state dicts
# (`module.encoder_q.*`, converted by ssl_zoo.convert's "moco" source); md5 prefixes as the README
# prints them. `create_model(name, pretrained=True)` downloads, verifies and converts them once.
MOCO_RELEASES = "https://dl.fbaipublicfiles.com/moco/moco_checkpoints"
MOCO_V2_WEIGHTS = {
    "moco_v2_r50_in1k": WeightsCfg(url=f"{MOCO_RELEASES}/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar",
                                   md5="59fd9945", source="moco", paper=MOCO_V2_PAPER, license="cc-by-nc-4.0"),
    "moco_v2_r50_in1k_800ep": WeightsCfg(url=f"{MOCO_RELEASES}/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
                                         md5="a04e12f8", source="moco", paper=MOCO_V2_PAPER, license="cc-by-nc-4.0"),
}

for name, epochs, desc in [("moco_v2_r50_in1k", 200, "200-epoch schedule"),
                           ("moco_v2_r50_in1k_800ep", 800, "800-epoch schedule")]:
    register_recipe(Recipe(
        name=name, method="moco_v2", method_args=MOCO_ARGS, backbone=R50,
        augment=AugmentCfg(image_size=224), dataset="imagenet1k",
        # [MoCo v2] main_moco.py: lr 0.03 at global batch 256, SGD momentum 0.9, wd 1e-4 on every
        # parameter, cosine (--cos); 200 / 800 epochs (paper Tab. 2, README).
        train=TrainCfg(epochs=epochs, batch_size=256, base_lr=0.03, weight_decay=1e-4, num_workers=8),
        weights=MOCO_V2_WEIGHTS[name],
        description=f"MoCo v2, ResNet-50, ImageNet-1k, {desc} (official settings).",
    ))

# Small-image recipes: the nearest official source is [demo]; MoCo v2's 2-layer MLP head (the demo
# uses a linear head) is ours, so the method is MoCo v2 as the LeOCLR baselines name it.
for name, dataset, backbone, augment in [
        ("moco_v2_r18_cifar10", "cifar10", R18_CIFAR, CIFAR_AUGMENT),
        # ours: STL-10's 96-px images keep timm's ImageNet stem (3x3 final map), as is usual for STL-10.
        ("moco_v2_r18_stl10", "stl10", R18, STL10_AUGMENT)]:
    register_recipe(Recipe(
        name=name, method="moco_v2", method_args=SMALL_IMAGE_MOCO_ARGS, backbone=backbone,
        augment=augment, dataset=dataset,
        # STL-10 pre-trains on its 100k unlabelled images plus the 5k labelled ones.
        train_split="train+unlabeled" if dataset == "stl10" else "train",
        train=SMALL_IMAGE_TRAIN,
        weights=WeightsCfg(paper=MOCO_V2_PAPER),
        # LeOCLR's baseline: linear top-1 after 800 epochs (LeOCLR paper Tab. 5).
        evaluation=(EvalProtocol("linear"),),
        paper_results=(PaperResult("linear_100", "top1", {"stl10": 80.08, "cifar10": 73.88}[dataset],
                                   "LeOCLR paper Tab. 5 (MoCo-v2 row)"),),
        description=f"MoCo v2, ResNet-18, {dataset} at {augment.image_size} px, 800 epochs (official CIFAR-10 "
                    f"demo settings).",
    ))

# The embedded default: scikit-learn's handwritten digits, 32 px, trains in minutes on a CPU.
# ours: the test view is the whole image (eval_crop_pct 1.0), as in the CIFAR recipes ([demo]); at 32 px the
# ImageNet protocol's Resize(37) + CenterCrop(32) cut 5 of 37 columns and rows off images that fill the frame.
DIGITS_AUGMENT = AugmentCfg(image_size=32, crop_scale=(0.3, 1.0), hflip_p=0.0, mean=(0.5, 0.5, 0.5),
                            std=(0.5, 0.5, 0.5), eval_crop_pct=1.0)
# Tuned for a real k-NN gain in ~5 CPU minutes (docs/training.md): small batches give more steps,
# a short queue (4 batches) stays fresh on a 1,257-image set, and m=0.99 lets the keys keep up.
# ours: the norm/bias decay exemption and timm's ImageNet stem at 32 px (1x1 final map, ~15x less compute
# than the CIFAR stem) keep the demo within minutes on a CPU and its measured numbers reproducible.
DIGITS_TRAIN = TrainCfg(epochs=30, batch_size=64, base_lr=0.24, weight_decay=5e-4, warmup_epochs=2,
                        num_workers=2, decay_norm_and_bias=False)
DIGITS_MOCO_ARGS = {**MOCO_ARGS, "queue_size": 256, "momentum": 0.99}
register_recipe(Recipe(
    name="moco_v2_r18_digits", method="moco_v2", method_args=DIGITS_MOCO_ARGS, backbone=R18,
    augment=DIGITS_AUGMENT, dataset="digits", train=DIGITS_TRAIN,
    weights=WeightsCfg(paper=MOCO_V2_PAPER),
    description="MoCo v2 demo on the embedded scikit-learn digits (32 px, CPU-friendly).",
))
