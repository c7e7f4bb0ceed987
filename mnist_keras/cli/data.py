"""`mnist-keras data info | preview | check`: what a spec's data section reads, what the model sees, and what is
wrong with a folder of images before training; each command formats what its API function returns."""

from __future__ import annotations

import click

from .options import note


def _data_options(func):
    func = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                        help="Override a spec value, e.g. --set data.validation=5000.")(func)
    func = click.option("--data-dir", type=click.Path(file_okay=False),
                        help="A folder with the dataset's IDX files (or mnist.npz); tried first.")(func)
    func = click.option("--dataset", help="mnist, fashion_mnist, a folder of IDX files, an .npz file, a folder "
                                          "of class folders or a .csv (default: the spec's, else mnist).")(func)
    return click.argument("spec", required=False)(func)


@click.group("data")
def data_group():
    """Inspect the data a spec reads: sources, shapes, statistics, and a preview of what the model sees."""


@data_group.command()
@_data_options
def info(spec, dataset, data_dir, overrides):
    """Source, shapes, dtypes, class counts and pixel statistics of the dataset."""
    from ..api import Reporter, data_info

    found = data_info(spec, dataset, data_dir=data_dir, overrides=overrides, reporter=Reporter(echo=note))
    click.echo(f"dataset   {found.dataset} from {found.source}: {found.path or 'keras.datasets'}")
    for name, digest in found.sha256.items():
        click.echo(f"          sha256 {digest}  {name}")
    for split in found.splits:
        click.echo(f"{split.name:<9} images {split.images_dtype} {split.images_shape}, "
                   f"labels {split.labels_dtype} {split.labels_shape}")
        click.echo("          per class: " + "  ".join(f"{c}: {n:,}" for c, n in split.per_class.items()))
    fed = "fed to the model" + (" (before resize)" if found.fed_before_resize else "")
    for name, stats in (("pixels    stored", found.stored), (" " * 10 + fed, found.fed)):
        click.echo(f"{name}: min {stats.min:.4g}, max {stats.max:.4g}, mean {stats.mean:.4g}, std {stats.std:.4g}")
    click.echo(f"splits    {found.training:,} training, {found.validation:,} validation ({found.held_out}), "
               f"{found.test:,} test; model input {found.input_shape}")


@data_group.command()
@_data_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The PNG file to write.")
@click.option("--count", default=36, show_default=True, type=click.IntRange(1, 400), help="How many images.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="train: the first images of epoch 0, in training order; test: the first test images.")
def preview(spec, dataset, data_dir, overrides, out, count, split):
    """A grid of images as they enter the model (after preprocessing), each titled with its label."""
    from ..api import Reporter, data_preview

    shown = data_preview(out, spec, dataset, count=count, split=split, data_dir=data_dir, overrides=overrides,
                         reporter=Reporter(echo=note))
    click.echo(f"wrote {shown.path} ({len(shown.titles)} {shown.split} images from {shown.input_shape} inputs)")


@data_group.command()
@_data_options
def check(spec, dataset, data_dir, overrides):
    """Check image files before training: files that do not decode (each decoded whole), empty or missing
    classes, classes left without training images, images shared between splits, and the balance of the
    classes (exit 2 on a problem that stops training)."""
    from ..api import data_check

    found = data_check(spec, dataset, data_dir=data_dir, overrides=overrides)
    if not found.decoded:
        click.echo(f"{found.dataset}: {found.images['train']:,} training and {found.images['test']:,} test images "
                   "from array files, checked on loading")
        return
    click.echo(f"dataset   {found.dataset} from {found.source}: {found.path}")
    width = max(len(name) for name in [*found.class_names, "class", "total"]) + 2
    click.echo("class".ljust(width) + "".join(f"{split:>12}" for split in found.counts))
    for name in found.class_names + ["total"]:
        cells = (found.images[split] if name == "total" else counts[name] for split, counts in found.counts.items())
        click.echo(name.ljust(width) + "".join(f"{n:>12,}" for n in cells))
    for line in found.notes:
        click.echo(line)
    skipped = f" ({len(found.skipped)} skipped)" if found.skipped else ""
    click.echo(f"checked {sum(found.images.values()):,} images: all decode{skipped}, "
               f"{len(found.shared)} shared between splits")
