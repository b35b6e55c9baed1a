"""Synthesized-pair fine-grained SSL recipes ("synth", ../shared/papers/synth_fgvr_ssl.txt) and their baselines.

Paper settings (Sec. 4 "Implementation details" and Appendix B): ResNet-50 initialised from
ImageNet-supervised weights, 224 px, batch 128, 100 epochs. B.1: MoCo v2 runs use "a cosine scheduled
SGD with an initial learning rate of 0.03", momentum 0.9, key momentum 0.999, memory bank 65536;
SimSiam runs "an initial learning rate of 0.05" with the predictor at a constant lr. Both are the lr
AT the paper's batch of 128 (lr_batch_denom 128: not halved by batch/256 scaling). The weight decay
is not legible in the text; 1e-4 is the value of the MoCo v2 / SimSiam settings B.1 says it follows.
B.2: the decoder is pre-trained 200 epochs first (``decoder_pretrain_epochs``; `ssl-zoo train` runs
that stage itself). alpha = beta = 0.5, delta = 0.02 (Sec. 4.4 ablations, METHODS.md). sigma_gc,
sigma_var, the bank size N and the NT-Xent temperature are not legible in the paper: the values
below are this project's documented defaults (docs/synth.md). The baselines use the same settings
without the add-on, so a pair (baseline, synth) differs only in the method.
GTSRB: "We take 4800 images for training and 3750 images for testing" (Sec. 4.1): the
``gtsrb_paper`` dataset is that subset (seeded, stratified: ours); ``--set dataset=gtsrb`` is the
full set.
Evaluation (Sec. 4.1.3, Appendix): linear evaluation (the MoCo protocol) with 100/50/20% of the labels
and image retrieval (rank-1, rank-5, mAP); k-NN is this project's addition. The reported numbers are
Tab. 1 (MoCo v2 and "Ours" on CUB-200, Cars, Aircraft) and Tab. 3 (SimSiam and SimSiam+Ours: linear
with all labels and retrieval rank-1, the metric whose MoCo v2 column equals Tab. 1's rank-1). Tab. 2
(GTSRB, ISIC2017) is not legible in our copy of the paper, so those recipes carry no paper numbers.
"""
import dataclasses

from ..recipe import AugmentCfg, BackboneCfg, EvalProtocol, PaperResult, Recipe, TrainCfg, WeightsCfg, register_recipe
from .moco import DIGITS_AUGMENT, DIGITS_MOCO_ARGS, DIGITS_TRAIN, MOCO_ARGS

SYNTH_PAPER = "Learning Discriminative Features from Synthesized Data for Self-Supervised Fine-Grained Recognition"
R50_IN1K = BackboneCfg("resnet50", {"zero_init_last": False}, init="timm:resnet50.tv_in1k")
R18 = BackboneCfg("resnet18", {"zero_init_last": False})
SIMSIAM_BASE_ARGS = dict(proj_dim=2048, pred_hidden_dim=512, fix_pred_lr=True)
SYNTH_ARGS = dict(variant="full", alpha=0.5, beta=0.5, delta=0.02, sigma_gc=0.5, sigma_var=0.5, bank_size=4096,
                  nt_xent_temperature=0.2, decoder_pretrain_epochs=200)
# B.1: lr 0.03 at batch 128 (MoCo v2 settings), SGD momentum 0.9, cosine; wd 1e-4 on every parameter.
PAPER_TRAIN = TrainCfg(epochs=100, batch_size=128, base_lr=0.03, lr_batch_denom=128, sgd_momentum=0.9,
                       weight_decay=1e-4, schedule="cosine", num_workers=8)
# B.1: "For SimSiam and our SimSiam based implementation, we use the settings of [6]": initial lr 0.05 at the
# paper's batch 128, predictor lr constant (fix_pred_lr), and SimSiam's SyncBatchNorm over all processes
# ([6]'s main_simsiam.py converts the whole model with torch.nn.SyncBatchNorm.convert_sync_batchnorm).
SIMSIAM_TRAIN = dataclasses.replace(PAPER_TRAIN, base_lr=0.05, sync_bn=True)

# Sec. 4.1.3: linear evaluation with 100/50/20% of the labels, and retrieval; plus k-NN (ours).
FGVR_EVALUATION = (EvalProtocol("linear", 1.0), EvalProtocol("linear", 0.5), EvalProtocol("linear", 0.2),
                   EvalProtocol("retrieval"), EvalProtocol("knn"))
_TAB1_COLUMNS = (("linear_100", "top1"), ("linear_50", "top1"), ("linear_20", "top1"),
                 ("retrieval", "rank1"), ("retrieval", "rank5"), ("retrieval", "mAP"))
# Tab. 1 rows: (dataset short name, method) -> 100%, 50%, 20% linear top-1; retrieval rank-1, rank-5, mAP.
TAB1 = {
    ("cub", "moco_v2"): (63.98, 56.35, 42.63, 39.72, 67.14, 15.91),
    ("cub", "synth"): (66.17, 60.84, 49.69, 42.06, 69.59, 19.70),
    ("cars", "moco_v2"): (62.02, 51.08, 35.44, 30.51, 56.15, 7.13),
    ("cars", "synth"): (65.60, 54.36, 40.24, 35.81, 61.94, 10.02),
    ("aircraft", "moco_v2"): (51.13, 44.34, 36.42, 30.02, 52.87, 11.24),
    ("aircraft", "synth"): (55.28, 49.37, 41.10, 33.27, 56.80, 12.69),
}
# Tab. 3 rows: (dataset, method) -> linear top-1 (100% labels), retrieval rank-1.
TAB3 = {
    ("cub", "simsiam"): (46.75, 16.24), ("cars", "simsiam"): (45.72, 12.45), ("aircraft", "simsiam"): (38.52, 18.49),
    ("cub", "simsiam_synth"): (57.80, 24.67), ("cars", "simsiam_synth"): (53.63, 19.72),
    ("aircraft", "simsiam_synth"): (47.50, 24.56),
}


def paper_results(short: str, method: str) -> tuple[PaperResult, ...]:
    """The paper's numbers for one (dataset, method) pair, each citing its table."""
    if (short, method) in TAB1:
        return tuple(PaperResult(p, m, v, "synth paper Tab. 1")
                     for (p, m), v in zip(_TAB1_COLUMNS, TAB1[short, method]))
    if (short, method) in TAB3:
        top1, rank1 = TAB3[short, method]
        return (PaperResult("linear_100", "top1", top1, "synth paper Tab. 3"),
                PaperResult("retrieval", "rank1", rank1, "synth paper Tab. 3"))
    return ()


# dataset name in ssl_zoo.data -> recipe suffix
FINE_GRAINED = {"cub": "cub200", "cars": "stanford_cars", "aircraft": "aircraft", "gtsrb": "gtsrb_paper",
                "isic2017": "isic2017"}

for short, dataset in FINE_GRAINED.items():
    register_recipe(Recipe(
        name=f"moco_v2_synth_r50_{short}", method="synth",
        method_args={**SYNTH_ARGS, "base": "moco_v2", "base_args": dict(MOCO_ARGS)}, backbone=R50_IN1K,
        augment=AugmentCfg(image_size=224), dataset=dataset, train=PAPER_TRAIN,
        weights=WeightsCfg(paper=SYNTH_PAPER),
        evaluation=FGVR_EVALUATION, paper_results=paper_results(short, "synth"),
        description=f"MoCo v2 + synthesized pairs, ResNet-50 (ImageNet-supervised init), {dataset}, 224 px, "
                    f"100 epochs (paper settings).",
    ))

for short in ("cub", "cars", "aircraft"):
    register_recipe(Recipe(
        name=f"moco_v2_r50_{short}", method="moco_v2", method_args=dict(MOCO_ARGS), backbone=R50_IN1K,
        augment=AugmentCfg(image_size=224), dataset=FINE_GRAINED[short], train=PAPER_TRAIN,
        weights=WeightsCfg(paper=SYNTH_PAPER),
        evaluation=FGVR_EVALUATION, paper_results=paper_results(short, "moco_v2"),
        description=f"MoCo v2 baseline of the synth paper, ResNet-50 (ImageNet-supervised init), "
                    f"{FINE_GRAINED[short]}, 100 epochs.",
    ))
    register_recipe(Recipe(
        name=f"simsiam_synth_r50_{short}", method="synth",
        method_args={**SYNTH_ARGS, "base": "simsiam", "base_args": dict(SIMSIAM_BASE_ARGS)}, backbone=R50_IN1K,
        augment=AugmentCfg(image_size=224), dataset=FINE_GRAINED[short], train=SIMSIAM_TRAIN,
        weights=WeightsCfg(paper=SYNTH_PAPER),
        evaluation=FGVR_EVALUATION, paper_results=paper_results(short, "simsiam_synth"),
        description=f"SimSiam + synthesized pairs, ResNet-50 (ImageNet-supervised init), {FINE_GRAINED[short]}, "
                    f"100 epochs.",
    ))

register_recipe(Recipe(
    name="simsiam_r50_cub", method="simsiam", method_args=dict(SIMSIAM_BASE_ARGS), backbone=R50_IN1K,
    augment=AugmentCfg(image_size=224), dataset="cub200", train=SIMSIAM_TRAIN,
    weights=WeightsCfg(paper=SYNTH_PAPER), evaluation=FGVR_EVALUATION, paper_results=paper_results("cub", "simsiam"),
    description="SimSiam baseline of the synth paper, ResNet-50 (ImageNet-supervised init), CUB-200, 100 epochs.",
))

# Digits demo: moco_v2_r18_digits plus the add-on (same backbone, augmentation, epochs, batch, lr,
# queue and momentum), random init (offline). delta is scaled with the feature size: a unit vector's
# mean component is 1/sqrt(d), 0.022 for d = 2048 and 0.044 for ResNet-18's d = 512, so delta = 0.04
# keeps the paper's threshold relative to the mean. bank = 16 global batches of 64.
_DIGITS_SYNTH = register_recipe(Recipe(
    name="moco_v2_synth_r18_digits", method="synth",
    method_args={**SYNTH_ARGS, "delta": 0.04, "bank_size": 1024, "decoder_pretrain_epochs": 20, "base": "moco_v2",
                 "base_args": DIGITS_MOCO_ARGS,
                 "decoder_channels": [256, 128, 64, 32, 16]},
    backbone=R18, augment=DIGITS_AUGMENT, dataset="digits", train=DIGITS_TRAIN,
    weights=WeightsCfg(paper=SYNTH_PAPER),
    # The paper's protocols on the demo data; the paper reports no digits numbers.
    evaluation=FGVR_EVALUATION,
    description="MoCo v2 + synthesized pairs demo on the embedded digits (32 px, CPU-friendly).",
))

# The paper's ablations on the demo (same everything, one noise criterion each; "random" = isotropic).
for _variant in ("gradcam", "lowvar", "random"):
    register_recipe(dataclasses.replace(
        _DIGITS_SYNTH, name=f"moco_v2_synth_r18_digits_{_variant}",
        method_args={**_DIGITS_SYNTH.method_args, "variant": _variant},
        description=f"Ablation of moco_v2_synth_r18_digits: variant {_variant!r}."))
