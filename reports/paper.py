"""The paper's numbers (docs/method.md section 9), each with its provenance.

provenance: "paper" (stated in the paper), "secondary" (a named public secondary source, not
checked against the paper's body), "secondary, unverified" (origin in the paper unconfirmed).
Accuracies in percent; cost as a percentage of the large model's training FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperValue:
    setting: str  # "resnet20/cifar10", ...
    method: str  # suite method name
    metric: str  # "accuracy" | "accuracy_std" | "cost" | "speedup"
    value: float
    provenance: str
    source: str
    note: str = ""


WIKI = "growing_wiki (docs/method.md §9.1), reproducing the paper's ablation table; mean +- std over 3 runs"
_ABLATION = {  # method: (ResNet-20/C-10 mean, std, ResNet-18/C-100 mean, std)
    "net2net": (91.60, 0.21, 76.48, 0.20),
    "growing": (91.62, 0.12, 76.82, 0.17),
    "growing+vrs": (92.00, 0.10, 77.27, 0.14),
    "growing+lra": (92.24, 0.11, 77.74, 0.16),
    "full": (92.53, 0.11, 78.12, 0.15),
    "large": (92.62, 0.15, 78.36, 0.12),
}

ABLATION_ROWS = tuple(_ABLATION)  # the methods the paper's ablation table lists
ABLATION_SETTINGS = ("resnet20/cifar10", "resnet18/cifar100")  # its settings

VALUES: list[PaperValue] = []
for _m, (_a, _sa, _b, _sb) in _ABLATION.items():
    for _setting, _mean, _std in zip(ABLATION_SETTINGS, (_a, _b), (_sa, _sb)):
        VALUES += [PaperValue(_setting, _m, "accuracy", _mean, "secondary", WIKI),
                   PaperValue(_setting, _m, "accuracy_std", _std, "secondary", WIKI)]
VALUES += [
    PaperValue("resnet18/cifar100", "full", "speedup", 1.2, "secondary",
               "growing_wiki 'When to stop' (docs/method.md §9.2)",
               "the wiki's latest revision gives about 15 % for ResNet-20/CIFAR-10 instead"),
    PaperValue("resnet18/cifar100", "full+ba", "speedup", 1.7, "secondary",
               "growing_wiki 'When to stop' (docs/method.md §9.2)",
               "with batch-size adaptation; 'about 70 %' for ResNet-20/CIFAR-10 in the latest revision"),
    PaperValue("resnet20/cifar10", "full", "cost", 54.9, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "full", "accuracy", 75.90, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "full", "cost", 60.1, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "large", "accuracy", 76.72, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "net2net", "accuracy", 74.89, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "net2net", "cost", 60.1, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "firefly", "accuracy", 75.01, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("resnet50/imagenet", "firefly", "cost", 71.2, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("mobilenet_v1_imagenet/imagenet", "full", "accuracy", 69.91, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("mobilenet_v1_imagenet/imagenet", "full", "cost", 63.7, "secondary, unverified", "docs/method.md §9.3"),
    PaperValue("mobilenet_v1_imagenet/imagenet", "large", "accuracy", 70.80, "secondary, unverified", "docs/method.md §9.3"),
]


def lookup(setting: str, method: str, metric: str) -> PaperValue | None:
    for v in VALUES:
        if (v.setting, v.method, v.metric) == (setting, method, metric):
            return v
    return None
