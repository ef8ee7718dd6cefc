"""The `dora` command line (training and evaluation land here as they are built)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="DoRA: learn image encoders from long videos by discovering and tracking objects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def info() -> None:
    """Print what this machine offers for training: torch, devices, distributed backends, timm ViTs.

    Example: dora info
    """
    import timm
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    lines = {
        "dora": __import__("dora").__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": f"{torch.cuda.device_count()} device(s)" if cuda else "not available (training runs on the CPU)",
        "bf16 on cpu": str(torch.backends.mkldnn.is_available()),
        "backends": ", ".join(b for b in ("gloo", "nccl") if getattr(dist, f"is_{b}_available")()),
        "cpu threads": str(torch.get_num_threads()),
        "vit archs": str(len(timm.list_models("vit_*"))),
    }
    for key, value in lines.items():
        typer.echo(f"{key:>12}: {value}")


@app.callback()
def main() -> None:
    """DoRA training and evaluation."""


if __name__ == "__main__":
    app()
