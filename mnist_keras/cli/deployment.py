"""`export` and `serve`: a run's model for deployment, checked against Keras, and served over REST."""

from __future__ import annotations

import click

from ..errors import ExportFailed, UserError
from .options import note


@click.command("export")
@click.argument("run_dir")
@click.option("--format", "fmt", type=click.Choice(["savedmodel", "litert", "onnx", "all"]), default="savedmodel",
              show_default=True, help="savedmodel: TensorFlow Serving's layout; litert: a .tflite file; onnx: a .onnx "
              "file; all: every format and quantization the installed packages can export.")
@click.option("--quantize", type=click.Choice(["float16", "int8"]),
              help="litert only: float16 weights, or int8 throughout (calibrated on training images).")
@click.option("--out", type=click.Path(file_okay=False), help="The folder to export into (default: RUN_DIR/export).")
@click.option("--data-dir", type=click.Path(), help="A folder with the dataset's files (default: the run's).")
def export_command(run_dir, fmt, quantize, out, data_dir):
    """Export a run's model for deployment (uint8 images in, probabilities out), then check it against the
    Keras model on the test set; exit 1 if it misses its bar (float: 99.9% top-1 agreement; int8: at most
    0.5 accuracy points lost)."""
    from ..api import Reporter, export, export_all

    progress = Reporter(echo=note)
    if fmt != "all":
        try:
            results = [export(run_dir, fmt, quantize, out=out, data_dir=data_dir, reporter=progress)]
        except ExportFailed as err:
            results = [err]
    elif quantize:
        raise UserError(f"--quantize {quantize}: not with --format all, which exports every quantization")
    else:
        results = export_all(run_dir, out=out, data_dir=data_dir, reporter=progress).results
    for result in results:
        if not isinstance(result, ExportFailed):
            click.echo(f"exported {result.key}: {result.path}")
        for line in result.parity.lines() if result.parity else []:
            click.echo(line)
    exported = [result for result in results if not isinstance(result, ExportFailed)]
    if exported:
        click.echo(f"labels.txt and export.json in {exported[-1].folder}")
    failures = [result for result in results if isinstance(result, ExportFailed)]
    if failures:
        raise ExportFailed(*[message for err in failures for message in err.messages])


@click.command()
@click.argument("targets", nargs=-1, metavar="RUN_DIR|EXPORT_DIR...")
@click.option("--models-config", type=click.Path(dir_okay=False),
              help="A YAML file naming the models to serve (name, path, versions, allow_label_change), instead of "
              "folders.")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on (0.0.0.0: all).")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(0, 65535),
              help="The port (TensorFlow Serving's REST port by default; 0: any free one).")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1, 1024),
              help="At most this many images per model call when concurrent requests are batched.")
@click.option("--batch-wait", default=2.0, show_default=True, type=click.FloatRange(0, 1000), metavar="MS",
              help="How long the first request of a batch waits for others, in milliseconds.")
@click.option("--no-batching", is_flag=True, help="One model call per request (same as --max-batch 1).")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0, 86400), metavar="SECONDS",
              help="How often export folders are checked for new or removed versions (0: never).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One line per request on stdout.")
@click.option("--threads", type=click.IntRange(1, 1024), help="TensorFlow's threads for a model call (default: one "
              "fewer than the CPU cores, so HTTP keeps one).")
@click.option("--drain-delay", default=0.0, show_default=True, type=click.FloatRange(0, 3600), metavar="SECONDS",
              help="After SIGTERM, serve on this long with /v2/health/ready answering 503 (a load balancer's time "
              "to stop sending), then drain and exit 0.")
def serve(targets, models_config, host, port, max_batch, batch_wait, no_batching, poll, access_log, threads,
          drain_delay):
    """Serve runs' models, or exported ones, over TensorFlow Serving's REST API and KServe's V2 inference
    protocol on one port, with Prometheus metrics at /metrics and a drawing page at /.

    POST /v1/models/NAME:predict takes {"instances": [...]} of uint8 images or {"b64": ...} image files;
    POST /v2/models/NAME/infer typed tensors. Concurrent requests are batched into one model call. SIGTERM
    drains (requests in flight are answered) and exits 0.
    """
    from ..api import Reporter, serve as run_server

    run_server(targets, models_config=models_config, host=host, port=port,
               max_batch=1 if no_batching else max_batch, batch_wait=0 if no_batching else batch_wait / 1000,
               poll=poll, access_log=access_log, threads=threads, drain_delay=drain_delay,
               reporter=Reporter(echo=click.echo))
