"""MoCo v2 recipes (hyperparameters from Chen et al. 2020 and the LeOCLR paper's baselines)."""
from ..recipe import AugmentCfg, BackboneCfg, Recipe, TrainCfg, WeightsCfg, register_recipe

MOCO_V2_PAPER = "arXiv:2003.04297"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
STL10_MEAN, STL10_STD = (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)
# torchvision-style ResNet as in the official MoCo code: no zero-init of the last BN in each block.
R50 = BackboneCfg("resnet50", {"zero_init_last": False})
R18 = BackboneCfg("resnet18", {"zero_init_last": False})
MOCO_ARGS = dict(proj_dim=128, queue_size=65536, temperature=0.2, momentum=0.999)

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
        train=TrainCfg(epochs=epochs, batch_size=256, base_lr=0.03, weight_decay=1e-4, num_workers=8),
        weights=MOCO_V2_WEIGHTS[name],
        description=f"MoCo v2, ResNet-50, ImageNet-1k, {desc} (official settings).",
    ))

# Small-image recipes: the CIFAR/STL-10 settings used for the MoCo v2 baselines in LeOCLR
# (K=4096 keys fits the smaller datasets; 800 epochs as in the LeOCLR paper's table).
for name, dataset, size, mean, std in [
        ("moco_v2_r18_cifar10", "cifar10", 32, CIFAR_MEAN, CIFAR_STD),
        ("moco_v2_r18_stl10", "stl10", 96, STL10_MEAN, STL10_STD)]:
    register_recipe(Recipe(
        name=name, method="moco_v2", method_args={**MOCO_ARGS, "queue_size": 4096}, backbone=R18,
        augment=AugmentCfg(image_size=size, mean=mean, std=std), dataset=dataset,
        # STL-10 pre-trains on its 100k unlabelled images plus the 5k labelled ones.
        train_split="train+unlabeled" if dataset == "stl10" else "train",
        train=TrainCfg(epochs=800, batch_size=256, base_lr=0.06, weight_decay=5e-4),
        weights=WeightsCfg(paper=MOCO_V2_PAPER),
        description=f"MoCo v2, ResNet-18, {dataset} at {size} px (LeOCLR paper's baseline setting).",
    ))

# The embedded default: scikit-learn's handwritten digits, 32 px, trains in minutes on a CPU.
DIGITS_AUGMENT = AugmentCfg(image_size=32, crop_scale=(0.3, 1.0), hflip_p=0.0, mean=(0.5, 0.5, 0.5),
                            std=(0.5, 0.5, 0.5))
# Tuned for a real k-NN gain in ~5 CPU minutes (docs/training.md): small batches give more steps,
# a short queue (4 batches) stays fresh on a 1,257-image set, and m=0.99 lets the keys keep up.
DIGITS_TRAIN = TrainCfg(epochs=30, batch_size=64, base_lr=0.24, weight_decay=5e-4, warmup_epochs=2,
                        num_workers=2)
DIGITS_MOCO_ARGS = {**MOCO_ARGS, "queue_size": 256, "momentum": 0.99}
register_recipe(Recipe(
    name="moco_v2_r18_digits", method="moco_v2", method_args=DIGITS_MOCO_ARGS, backbone=R18,
    augment=DIGITS_AUGMENT, dataset="digits", train=DIGITS_TRAIN,
    weights=WeightsCfg(paper=MOCO_V2_PAPER),
    description="MoCo v2 demo on the embedded scikit-learn digits (32 px, CPU-friendly).",
))
