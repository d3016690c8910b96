"""Images per second of a SupCon training step per backbone, side by side in one run.

    nice python benchmarks/backbones.py                       # 32 px, batch 32 x 2 views, 3 repeats
    python benchmarks/backbones.py --batch 4 --image-size 16 --repeats 1 --backbones resnet18 timm/resnet18

Backbones (``--backbones``; all with the CIFAR stem where they have a ResNet stem, 3 input channels):

- ``resnet18``: the short name, torchvision's ResNet-18 with the CIFAR stem (``Backbone("torchvision/resnet18",
  cifar_stem=True)``), the reference of the ratios;
- ``timm/resnet18``: timm's ResNet-18 by name (``cifar_stem: true``);
- ``timm/convnext_atto``, ``timm/vit_tiny_patch16_224`` (``img_size`` set to the image size): other families.

One training step is what ``SupConModule`` computes for a batch of views: encoder, projection head, SupCon loss
(fused), backward, SGD step; the views are random tensors already on the device (no data loading or augmentation,
which are the same whatever the backbone). All backbones live in one process; each repeat times every backbone in
turn (``--warmup`` untimed steps, then ``--windows`` windows of ``--steps`` steps), so a noisy machine slows them
alike. The table shows the median window with the range, and the ratio to ``resnet18``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import WindowTimer, machine, markdown_table, rate_text, summary
from torch import nn

from lightning_supcon import Backbone, ProjectionHead, SupConLoss, build_encoder
from lightning_supcon.nets import encoder_feature_dim

BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda size: build_encoder("resnet18")[0],
    "timm/resnet18": lambda size: Backbone("timm/resnet18", cifar_stem=True),
    "timm/convnext_atto": lambda size: Backbone("timm/convnext_atto"),
    "timm/vit_tiny_patch16_224": lambda size: Backbone("timm/vit_tiny_patch16_224", options={"img_size": size}),
}
REFERENCE = "resnet18"


class Step:
    """One SupCon training step of ``encoder`` + projection head on fixed random views."""

    def __init__(self, encoder: nn.Module, batch: int, views: int, size: int, device: torch.device) -> None:
        self.model = nn.Sequential(encoder, ProjectionHead(encoder_feature_dim(encoder), 128)).to(device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        self.loss = SupConLoss(temperature=0.1)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch * views, 3, size, size, generator=generator).to(device)
        self.labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
        self.batch, self.views = batch, views

    def __call__(self) -> None:
        projections = self.model(self.images)  # the head L2-normalises
        features = projections.view(self.views, self.batch, -1).transpose(0, 1)  # (B, V, D)
        loss = self.loss(features, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def time_steps(step: Step, args: argparse.Namespace, device: torch.device) -> list[float]:
    """Images per second of each timed window."""
    timer = WindowTimer(args.warmup, args.steps, args.windows, args.batch, device)
    while not timer.done:
        step()
        timer.step()
    return timer.rates()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    parser.add_argument("--batch", type=int, default=32, help="images per step (each gives --views views)")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each backbone's windows")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per backbone and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all backbones")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"SupCon training step per backbone: {args.image_size} px, batch {args.batch} x {args.views} views, "
        f"device {args.device}\nmachine: {machine(args.device)}; {args.repeats} repeat(s) x {args.windows} windows "
        f"of {args.steps} step(s) per backbone, interleaved, after {args.warmup} warm-up step(s)\n",
        flush=True,
    )
    torch.manual_seed(0)
    steps = {
        name: Step(BACKBONES[name](args.image_size), args.batch, args.views, args.image_size, device)
        for name in args.backbones
    }
    params = {name: sum(p.numel() for p in step.model[0].parameters()) for name, step in steps.items()}
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            rates[name] += time_steps(step, args, device)
    medians = {name: summary(r)[0] for name, r in rates.items()}
    rows = []
    for name in steps:
        median, spread = summary(rates[name])
        ratio = f"{median / medians[REFERENCE]:.2f}x" if REFERENCE in medians else ""
        rows.append([name, f"{params[name] / 1e6:.2f} M", rate_text(median), spread, ratio])
    print(markdown_table(["backbone", "parameters", "images/s (median)", "range over windows", "vs resnet18"], rows))


if __name__ == "__main__":
    main()
