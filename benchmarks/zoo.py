"""The model zoo's accuracy table: train every zoo spec on the full data, write a Markdown table.

    python benchmarks/zoo.py --data-dir /work/shared/data/mnist [--only NAME ...] [--runs DIR] [--out FILE]

Trains model_specs/zoo/*.yaml and model_specs/{lenet5,dense,cnn}.yaml, each with its own epochs,
through `mnist-keras fit` (the real command, one process per spec), then reads every figure of the
table from the runs' metrics.json. A spec that already has a finished run of exactly the same resolved
spec and data under --runs is not trained again (--retrain forces it), so an interrupted table resumes.
The reported accuracy comes from the spec's `description` ("Reported: 99.04% ..."). The table replaces
the text between `<!-- zoo:begin -->` and `<!-- zoo:end -->` in --out (docs/model-zoo.md), or is the whole
file when --out has no such markers; its links to the specs are relative to --out.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from common import cpu_model  # noqa: E402
from mnist_keras.runs.files import read_json, write_text  # noqa: E402
from mnist_keras.spec import Spec  # noqa: E402
from mnist_keras.spec.loader import load_spec  # noqa: E402

BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"
REPORTED = re.compile(r"Reported: (\d+(?:\.\d+)?)%")


def zoo_specs() -> list[Path]:
    """Every reference spec of the zoo, our own best, then the project's shipped specs."""
    zoo = ROOT / "model_specs/zoo"
    return [*sorted(set(zoo.glob("*.yaml")) - {zoo / "best.yaml"}), zoo / "best.yaml",
            *(ROOT / "model_specs" / f"{name}.yaml" for name in ("lenet5", "dense", "cnn"))]


def reported_accuracy(spec: Spec) -> float | None:
    """The accuracy the original reported, from the spec's description; None when it states none."""
    found = REPORTED.search(spec.description or "")
    return float(found.group(1)) / 100 if found else None


def comparable(spec: Spec) -> dict:
    """The resolved spec minus its prose: what must match for a run to count as this spec's."""
    return spec.model_dump(mode="json", exclude={"description"})


def finished_run(spec: Spec, runs: Path, data_dir: str | None) -> Path | None:
    """The newest finished run of exactly this spec on this data under runs/NAME, if any."""
    for run in sorted((runs / spec.name).glob("*"), reverse=True):
        if not (run / "metrics.json").is_file():
            continue
        state = read_json(run / "state.json")
        if state.get("status") == "finished" and state.get("data_dir") == data_dir and \
                comparable(load_spec(run / "spec.yaml")) == comparable(spec):
            return run
    return None


def train(file: Path, runs: Path, data_dir: str | None) -> None:
    """`mnist-keras fit FILE` in its own process; exits with its status if it fails."""
    command = [sys.executable, "-m", "mnist_keras", "fit", str(file), "--runs", str(runs)]
    if data_dir:
        command += ["--data-dir", data_dir]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"zoo: training {file.relative_to(ROOT)}", flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", flush=True)
    if done.returncode:
        sys.exit(f"zoo: {file} failed (exit {done.returncode}):\n{done.stdout[-2000:]}")


def row(file: Path, spec: Spec, metrics: dict) -> dict:
    planned = spec.plan()
    seconds = metrics["seconds_per_epoch"]
    return {
        "file": file.relative_to(ROOT).as_posix(), "name": spec.name, "loss": spec.loss(),
        "params": sum(p.trainable + p.non_trainable for p in planned), "epochs": metrics["epochs_done"],
        "accuracy": metrics["test"]["accuracy"], "reported": reported_accuracy(spec),
        "seconds": sum(seconds) / len(seconds), "device": metrics["device"], "versions": metrics["versions"],
        "data": metrics["data"],
    }


def regression_notes(rows: list[dict]) -> list[str]:
    """One sentence per regression spec that has a `_fixed` classifier twin in the table."""
    by_name = {r["name"]: r for r in rows}
    notes = []
    for r in rows:
        twin = by_name.get(r["name"] + "_fixed")
        if r["loss"] == "mse" and twin:
            notes.append(
                f"- `{r['name']}` regresses the digit's value ({r['params']:,} parameters): "
                f"{r['accuracy']:.2%} of its rounded predictions are right. The same net and optimizer as a "
                f"classifier (`{twin['name']}`, 10 logits and cross-entropy) reach {twin['accuracy']:.2%}: "
                f"a squared error treats 3 as halfway between 1 and 5, so an unsure net averages the digits "
                f"it hesitates between instead of picking one.")
    return notes


def table(rows: list[dict], links_from: Path = ROOT) -> str:
    """The Markdown table, its spec links relative to the folder `links_from`."""
    lines = [
        "| spec | parameters | epochs | test accuracy | reported | difference | seconds/epoch | device |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        stated = r["reported"] is not None
        reported = f"{r['reported']:.2%}" if stated else "—"
        difference = f"{(r['accuracy'] - r['reported']) * 100:+.2f} points" if stated else ""
        link = Path(os.path.relpath(ROOT / r["file"], links_from)).as_posix()
        lines.append(f"| [`{r['name']}`]({link}) | {r['params']:,} | {r['epochs']} | {r['accuracy']:.2%} | "
                     f"{reported} | {difference} | {r['seconds']:.1f} | {r['device']} |")
    versions, data = rows[0]["versions"], rows[0]["data"]
    sources = {(r["data"]["dataset"], r["data"]["path"], str(r["data"]["counts"])) for r in rows}
    if len(sources) > 1:
        sys.exit(f"zoo: the runs were trained on different data: {sorted(sources)}")
    counts = data["counts"]
    header = (f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {cpu_model()}, {os.cpu_count()} CPU cores, "
              f"TensorFlow {versions['tensorflow']}, Keras {versions['keras']}; {data['dataset']} from "
              f"{data['source']} ({counts['train']:,} training and {counts['test']:,} test images).")
    notes = regression_notes(rows)
    return "\n".join([header, "", *lines, *([""] + notes if notes else [])])


def write_table(out: Path, text: str) -> None:
    """Put `text` between the markers in `out`, or make it the whole file when it has none."""
    old = out.read_text() if out.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        text = f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}"
    else:
        text += "\n"
    write_text(out, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a folder with the MNIST IDX files (default: the specs' sources)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="train only these specs (names or file stems); "
                        "the table still lists every spec that has a finished run")
    parser.add_argument("--runs", default="runs/zoo", help="the folder for run directories (default: runs/zoo)")
    parser.add_argument("--out", default=str(ROOT / "docs/model-zoo.md"), help="the file to write the table into")
    parser.add_argument("--retrain", action="store_true", help="train even where a finished run exists")
    args = parser.parse_args()

    runs = Path(args.runs)
    specs = [(file, load_spec(file)) for file in zoo_specs()]
    wanted = set(args.only or [])
    unknown = wanted - {s.name for _, s in specs} - {f.stem for f, _ in specs}
    if unknown:
        sys.exit(f"zoo: no zoo spec named {', '.join(sorted(unknown))}")
    for file, spec in specs:
        if wanted and not wanted & {spec.name, file.stem}:
            continue
        if args.retrain or not finished_run(spec, runs, args.data_dir):
            train(file, runs, args.data_dir)
    rows = []
    for file, spec in specs:
        run = finished_run(spec, runs, args.data_dir)
        if run:
            rows.append(row(file, spec, read_json(run / "metrics.json")))
    if not rows:
        sys.exit("zoo: no finished runs to tabulate")
    write_table(Path(args.out), table(rows, Path(args.out).resolve().parent))
    print(f"zoo: {len(rows)} of {len(specs)} specs tabulated into {args.out}")


if __name__ == "__main__":
    main()
