"""The interpreter of a CUDA vLLM environment, as the package sees it (no GPU here).

Installed by ``gpu_fakes.install_cuda_python`` behind a ``python`` script:

- ``python -c <probe>`` (``sampling.server_env``'s probe): prints what a CUDA vLLM
  0.23.0 on torch 2.11.0+cu130 would, with as many GPUs as
  ``CUDA_VISIBLE_DEVICES`` leaves of ``$FAKE_VLLM_GPUS`` (``$FAKE_VLLM_CUDA=0``:
  a CUDA build whose torch sees none, as on a driver too old for CUDA 13);
- ``python -c <wrapper> -m vllm.entrypoints.openai.api_server ARGS``: records
  ARGS and the environment it got into ``$FAKE_VLLM_RECORD``, writes its pid
  and visible GPUs to ``$FAKE_SMI_SERVER_PID`` (the fake nvidia-smi then shows
  it holding memory there), and serves ``/health``, ``/v1/models`` and
  ``/v1/completions`` (texts from ``openai_fake``) until SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import ThreadingHTTPServer

from openai_fake import Behaviour, _Handler

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
RECORDED_ENV = (
    "PYTORCH_ALLOC_CONF",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "RANK",
    "WORLD_SIZE",
    "MASTER_PORT",
)


def _visible(total: int) -> list[str]:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return [str(i) for i in range(total)]
    return [v for v in value.split(",") if v.strip()]


def probe() -> None:
    total = int(os.environ.get("FAKE_VLLM_GPUS", "8"))
    cuda = os.environ.get("FAKE_VLLM_CUDA", "1") == "1"
    gpus = len(_visible(total)) if cuda else 0
    out = {
        "vllm": "0.23.0",
        "distribution": "vllm",
        "api_server": True,
        "torch": "2.11.0+cu130",
        "cuda": cuda and gpus > 0,
        "gpus": gpus,
        "cuda_version": "13.0",
        "cuda_warning": None
        if cuda
        else "CUDA initialization: The NVIDIA driver on your system is too old "
        "(found version 12040).",
        "gpu_mib": [81559] * gpus,
    }
    print("SEALONG_PROBE " + json.dumps(out))


def _arg(args: list[str], name: str, default: str | None = None) -> str | None:
    return args[args.index(name) + 1] if name in args else default


def serve(args: list[str]) -> None:
    record = os.environ["FAKE_VLLM_RECORD"]
    env = {k: os.environ[k] for k in RECORDED_ENV if k in os.environ}
    with open(record, "w") as f:
        json.dump({"args": args, "env": env, "pid": os.getpid()}, f)
    pid_file = os.environ.get("FAKE_SMI_SERVER_PID")
    if pid_file:
        total = int(os.environ.get("FAKE_VLLM_GPUS", "8"))
        with open(pid_file, "w") as f:
            json.dump({"pid": os.getpid(), "visible": _visible(total)}, f)
    behaviour = Behaviour(
        model=_arg(args, "--served-model-name", "sealong") or "sealong",
        max_model_len=int(_arg(args, "--max-model-len", "4096") or 4096),
    )

    class Handler(_Handler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/health":
                self._send(200, {})
                return
            super().do_GET()

    Handler.behaviour = behaviour
    port = int(_arg(args, "--port", "8000") or 8000)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"fake vllm serve on {port}: {' '.join(args)}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["-c"] and "SEALONG_PROBE" in argv[1]:
        probe()
    elif argv[:1] == ["-c"] and argv[2:4] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
    ]:
        serve(argv[4:])
    else:
        sys.exit(f"fake cuda python: unexpected arguments {argv[:4]}")


if __name__ == "__main__":
    main()
