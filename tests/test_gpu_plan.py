"""The GPU side of the vllm_server engine, simulated (this machine has no GPU).

What is simulated, and how: ``nvidia-smi`` is a script answering from a JSON
state (a node of 8 H100s, other jobs on some GPUs), and the server's
interpreter is a fake CUDA vLLM 0.23.0 that answers the probe as a CUDA torch
would and, started as ``vllm serve``, records its command line and
environment and serves the OpenAI routes (``tests/gpu_fakes.py``). The model
configs are the real ones of Llama-3.1-8B, Qwen2.5-7B and Llama-3.1-70B
(architecture fields, ``tests/data/model_configs``); no weights. Everything
between those edges is the package's code, unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from gpu_fakes import (
    H100_MIB,
    install_cuda_python,
    install_nvidia_smi,
    node_state,
    path_with,
    uuid,
)

from axolotl_sealong.bench.tiny import build_tiny_tokenizer
from axolotl_sealong.sampling import cuda_env, server as ss, server_env as senv
from axolotl_sealong.sampling.base import SampleRequest, SamplingParams
from axolotl_sealong.sampling.options import VLLMOptions
from axolotl_sealong.sampling.parallel import (
    ModelShape,
    model_shape,
    plan_parallel,
)

CONFIGS = Path(__file__).parent / "data" / "model_configs"
LLAMA8, QWEN7, LLAMA70 = (
    "Llama-3.1-8B-Instruct",
    "Qwen2.5-7B-Instruct",
    "Llama-3.1-70B-Instruct",
)


def _shape(name: str) -> ModelShape:
    shape = model_shape(str(CONFIGS / name))
    assert shape is not None
    return shape


# -- the allocator settings a vLLM process gets --


@pytest.mark.parametrize(
    ("name", "value", "left"),
    [
        ("PYTORCH_ALLOC_CONF", "expandable_segments:True", None),
        (
            "PYTORCH_ALLOC_CONF",
            "expandable_segments:True,max_split_size_mb:512",
            "max_split_size_mb:512",
        ),
        (
            "PYTORCH_CUDA_ALLOC_CONF",
            "expandable_segments:True,roundup_power2_divisions:16",
            "roundup_power2_divisions:16",
        ),
        ("PYTORCH_ALLOC_CONF", "max_split_size_mb:256", "max_split_size_mb:256"),
        ("PYTORCH_ALLOC_CONF", " expandable_segments : False ", None),
    ],
)
def test_expandable_segments_leave_the_allocator_settings(name, value, left):
    env, changed = cuda_env.without_expandable_segments({name: value, "X": "1"})
    assert env.get(name) == left and env["X"] == "1"
    assert changed == ([] if left == value else [name])


def test_what_every_axolotl_command_sets_never_reaches_the_server():
    """axolotl/utils/__init__.py set_pytorch_cuda_alloc_conf (torch >= 2.9)."""
    base = {
        "PYTORCH_ALLOC_CONF": "expandable_segments:True",
        "RANK": "0",
        "PATH": "/usr/bin",
    }
    env = senv.server_environ("/srv/bin/python", base)
    assert "PYTORCH_ALLOC_CONF" not in env and "RANK" not in env


# -- visible GPUs --


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, list(range(8))),
        ("0,1,2,3", [0, 1, 2, 3]),
        ("3,1", [3, 1]),
        ("0,2,-1,1", [0, 2]),  # CUDA: the list ends at an invalid entry
        ("", []),
        ("7,9,1", [7]),  # 9 names no GPU: the list ends there
        (f"{uuid(5)[:12]},{uuid(2)}", [5, 2]),  # a UUID prefix and a full UUID
        ("2,2", [2]),
        ("1,GPU-", [1]),  # a prefix every GPU shares names none
    ],
)
def test_only_visible_gpus_are_read(tmp_path, monkeypatch, visible, expected):
    install_nvidia_smi(tmp_path, node_state(other_jobs={6: 30000}))
    monkeypatch.setenv("PATH", path_with(tmp_path))
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    state = cuda_env.query_gpus(environ)
    assert state is not None and state.all_gpus == 8 and state.driver == "580.95.05"
    assert [g.index for g in state.gpus] == expected
    # another job's process on GPU 6 counts only when GPU 6 is visible
    assert (4242 in state.pids) == (6 in expected)


def test_mig_devices_fall_back_to_whole_gpus_and_say_so(tmp_path, monkeypatch):
    install_nvidia_smi(tmp_path, node_state(gpus=2))
    monkeypatch.setenv("PATH", path_with(tmp_path))
    state = cuda_env.query_gpus({"CUDA_VISIBLE_DEVICES": "MIG-abc/1/0"})
    assert state is not None and len(state.gpus) == 2 and "MIG" in (state.note or "")
    assert (
        cuda_env.server_visible_devices({"CUDA_VISIBLE_DEVICES": "MIG-x"}, state) == {}
    )


def test_no_nvidia_smi_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert cuda_env.query_gpus({}) is None


def test_uuids_reach_the_server_as_indices_in_nvidia_smis_order(tmp_path, monkeypatch):
    """vLLM 0.20-0.23 int() every CUDA_VISIBLE_DEVICES entry."""
    install_nvidia_smi(tmp_path, node_state())
    monkeypatch.setenv("PATH", path_with(tmp_path))
    environ = {"CUDA_VISIBLE_DEVICES": f"{uuid(4)},{uuid(1)[:10]}"}
    state = cuda_env.query_gpus(environ)
    env = senv.server_environ("/srv/bin/python", environ, gpus=state)
    assert env["CUDA_VISIBLE_DEVICES"] == "4,1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    plain = senv.server_environ(
        "/srv/bin/python", {"CUDA_VISIBLE_DEVICES": "4,1"}, state
    )
    assert plain["CUDA_VISIBLE_DEVICES"] == "4,1" and "CUDA_DEVICE_ORDER" not in plain


# -- the memory wait after the server stops --


def _readings(*states: cuda_env.GpuState):
    it = iter(states)
    return lambda: next(it)


def _state(used: list[int], pids: set[int] = frozenset()) -> cuda_env.GpuState:
    gpus = [cuda_env.Gpu(i, uuid(i), "H100", H100_MIB, u) for i, u in enumerate(used)]
    return cuda_env.GpuState(gpus, set(pids), "580.95.05", len(used))


def test_memory_wait_until_the_servers_pids_and_memory_are_gone():
    query = _readings(
        _state([70000, 70000], {101, 102, 7}),  # server still listed
        _state([40000, 1000], {7}),  # gone from the list, memory not back yet
        _state([1500, 900], {7}),  # back to before (+ slack)
    )
    waited = cuda_env.wait_gpu_memory_released(
        {101, 102}, [1000, 800], query, timeout=30, poll=0.01
    )
    assert waited >= 0
    with pytest.raises(StopIteration):
        query()  # it read all three
    assert cuda_env.wait_gpu_memory_released({1}, None, lambda: None) == 0.0


def test_memory_not_released_stops_the_run_unless_asked_to_go_on(caplog):
    stuck = lambda: _state([9000], {101})  # noqa: E731
    with pytest.raises(cuda_env.GpuMemoryNotReleased) as err:
        cuda_env.wait_gpu_memory_released({101}, [1000], stuck, timeout=0.05, poll=0.01)
    text = str(err.value)
    assert "[101]" in text and "[9000]" in text and "[1000]" in text
    assert "sealong_vllm_server_gpu_release_timeout" in text
    assert "sealong_vllm_server_gpu_release_on_timeout: continue" in text
    waited = cuda_env.wait_gpu_memory_released(
        {101}, [1000], stuck, timeout=0.05, on_timeout="continue", poll=0.01
    )
    assert waited > 0.05 and "going on as asked" in caplog.text


# -- the plan over 1, 2, 4 and 8 H100s --

PLANS = {
    # model: {GPUs: (TP, DP)}; None: does not fit, refused with the numbers
    LLAMA8: {1: (1, 1), 2: (1, 2), 4: (1, 4), 8: (1, 8)},
    QWEN7: {1: (1, 1), 2: (1, 2), 4: (1, 4), 8: (1, 8)},
    LLAMA70: {1: None, 2: None, 4: (4, 1), 8: (4, 2)},
}


@pytest.mark.parametrize("model", list(PLANS))
@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_plan_replicas_where_a_model_fits_one_gpu(model, gpus):
    shape = _shape(model)
    args = dict(max_model_len=32768, num_samples=32, max_new_tokens=1024)
    want = PLANS[model][gpus]
    if want is None:
        with pytest.raises(ValueError) as err:
            plan_parallel(shape, gpus, H100_MIB, **args)
        text = str(err.value)
        assert f"does not fit the {gpus} visible GPU(s)" in text
        assert "131.4 GiB" in text and "--quantization fp8" in text
        return
    plan = plan_parallel(shape, gpus, H100_MIB, **args)
    assert (plan.tp, plan.dp) == want and plan.used == gpus
    assert plan.need_gib is not None and plan.need_gib <= plan.budget_gib


def test_the_model_shapes_match_the_published_sizes():
    assert round(_shape(LLAMA8).params / 1e9, 2) == 8.03
    assert round(_shape(QWEN7).params / 1e9, 2) == 7.62  # its q/k/v biases aside
    assert round(_shape(LLAMA70).params / 1e9, 1) == 70.6
    assert _shape(LLAMA8).kv_bytes_per_token() == 128 * 1024  # 32 x 8 x 128 x 2 x 2


def test_tensor_parallel_sizes_vllm_accepts():
    assert _shape(LLAMA8).valid_tps(8) == [1, 2, 4, 8]
    assert _shape(QWEN7).valid_tps(8) == [1, 2, 4]  # 28 heads, 4 KV heads
    assert _shape(LLAMA70).valid_tps(8) == [1, 2, 4, 8]


def test_an_impossible_setting_is_refused_with_the_numbers():
    args = dict(max_model_len=32768, num_samples=32, max_new_tokens=1024)
    with pytest.raises(ValueError) as err:
        plan_parallel(_shape(QWEN7), 8, H100_MIB, tp=8, **args)
    text = str(err.value)
    assert "sealong_vllm_tensor_parallel_size" in text and "28 attention heads" in text
    assert "accepts on 8 GPU(s): 1, 2, 4" in text
    with pytest.raises(ValueError, match="needs 16 GPUs, but 8 are visible"):
        plan_parallel(_shape(LLAMA8), 8, H100_MIB, tp=2, dp=8, **args)
    with pytest.raises(ValueError, match="= 16, but only 8 GPU"):
        plan_parallel(_shape(LLAMA8), 8, H100_MIB, dp=16, **args)
    with pytest.raises(ValueError, match="in-process vllm engine runs one"):
        plan_parallel(_shape(LLAMA8), 8, H100_MIB, dp=2, replicas=False, **args)


def test_the_users_sizes_win_and_a_misfit_only_warns():
    args = dict(max_model_len=32768, num_samples=32, max_new_tokens=1024)
    plan = plan_parallel(_shape(LLAMA8), 8, H100_MIB, tp=2, **args)
    assert (plan.tp, plan.dp, plan.how) == (2, 4, "set")
    plan = plan_parallel(_shape(LLAMA8), 8, H100_MIB, dp=3, **args)
    assert (plan.tp, plan.dp) == (1, 3) and "5 visible GPU(s) unused" in plan.lines
    tight = plan_parallel(_shape(LLAMA70), 8, H100_MIB, tp=2, **args)
    assert (tight.tp, tight.dp) == (2, 4) and "may fail to start" in tight.warnings[0]


def test_one_engine_in_process_takes_the_largest_size_that_fits():
    args = dict(max_model_len=32768, num_samples=32, max_new_tokens=1024)
    plan = plan_parallel(_shape(QWEN7), 8, H100_MIB, replicas=False, **args)
    assert (plan.tp, plan.dp) == (4, 1)
    plan = plan_parallel(_shape(LLAMA8), 8, H100_MIB, replicas=False, **args)
    assert (plan.tp, plan.dp) == (8, 1)


def test_cpu_has_no_plan_to_make():
    plan = plan_parallel(None, 0, None, max_model_len=0, num_samples=0,
                         max_new_tokens=0, cuda=False)  # fmt: skip
    assert (plan.tp, plan.dp, plan.how) == (1, 1, "cpu")


# -- the engine on a simulated node --


@pytest.fixture
def node(tmp_path, monkeypatch):
    """8 H100s (another job holds 30 GB on GPU 6), a CUDA vLLM interpreter,
    and the environment every `axolotl` command leaves behind."""
    smi = tmp_path / "smi"
    state = node_state(other_jobs={6: 30000})
    state["server_pid_file"] = str(tmp_path / "server_pid.json")
    state_file = install_nvidia_smi(smi, state)
    monkeypatch.setenv("PATH", path_with(smi))
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    record = tmp_path / "vllm_serve.json"
    python = install_cuda_python(
        tmp_path / "venv", record, FAKE_SMI_SERVER_PID=state["server_pid_file"]
    )
    return {
        "python": str(python),
        "record": record,
        "state": state_file,
        "labels": tmp_path / "labels",
    }


def _model(tmp_path: Path, name: str) -> str:
    """The real config with the tiny tokenizer: enough for plan and client."""
    folder = tmp_path / name
    build_tiny_tokenizer(folder)
    shutil.copy(CONFIGS / name / "config.json", folder / "config.json")
    return str(folder)


def _sampler(node, model, **kw) -> ss.VLLMServerSampler:
    options = dict(
        python=node["python"], max_model_len=32768,
        vllm=VLLMOptions(num_samples=4, max_new_tokens=16), concurrency=2,
        start_timeout=30, log_dir=node["labels"],
    )  # fmt: skip
    options.update(kw)
    return ss.VLLMServerSampler(model, **options)


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_node_with_4_of_8_gpus_visible_by_uuid(node, tmp_path, monkeypatch, caplog):
    """Replicas on the visible GPUs, the server's environment cleaned, the
    client's concurrency scaled, and the memory wait blind to GPU 6's job."""
    visible = ",".join(uuid(i)[:12] for i in (0, 1, 2, 3))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    model = _model(tmp_path, LLAMA8)
    caplog.set_level("INFO")
    sampler = _sampler(node, model)
    try:
        seen = json.loads(node["record"].read_text())
        args, env = seen["args"], seen["env"]
        assert _flag(args, "--tensor-parallel-size") == "1"
        assert _flag(args, "--data-parallel-size") == "4"
        assert "--disable-custom-all-reduce" not in args  # TP 1: no all-reduce
        assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert "PYTORCH_ALLOC_CONF" not in env and "RANK" not in env
        assert sampler.client.concurrency == 2 * 4
        # the plan was printed before the server started
        log = caplog.text
        assert log.index("vllm parallel plan: 4 data-parallel") < log.index("started")
        reqs = [SampleRequest(f"k{i}", f"question {i}?", i) for i in range(3)]
        params = SamplingParams(
            n=4, temperature=0.7, top_p=1.0, max_new_tokens=8, seed=0
        )
        got = dict(sampler.sample(reqs, params))
        assert sorted(r.key for r in got) == ["k0", "k1", "k2"]
        assert all(len(texts) == 4 for texts in got.values())
    finally:
        t0 = time.monotonic()
        sampler.close()
    assert time.monotonic() - t0 < 20  # GPU 6's job is not ours to wait for
    assert "GPU memory free again" in caplog.text


def test_tensor_parallel_where_it_must_with_all_reduce_off(node, tmp_path):
    sampler = _sampler(node, _model(tmp_path, LLAMA70))
    try:
        args = json.loads(node["record"].read_text())["args"]
        assert _flag(args, "--tensor-parallel-size") == "4"
        assert _flag(args, "--data-parallel-size") == "2"
        assert "--disable-custom-all-reduce" in args
    finally:
        sampler.close()


def test_sizes_in_the_server_args_win_and_are_checked(node, tmp_path):
    qwen = _model(tmp_path, QWEN7)
    with pytest.raises(ValueError, match="28 attention heads"):
        _sampler(node, qwen, server_args_extra="-tp 8")
    assert not node["record"].exists()  # refused before anything started
    sampler = _sampler(node, qwen, server_args_extra="--tensor-parallel-size=2")
    try:
        args = json.loads(node["record"].read_text())["args"]
        assert _flag(args, "--data-parallel-size") == "4"
        assert "--disable-custom-all-reduce" in args
        assert args[-1] == "--tensor-parallel-size=2"  # last: vLLM's argparse wins
    finally:
        sampler.close()


def test_memory_held_after_the_server_stops_is_an_error(node, tmp_path):
    """Another job grabs a visible GPU while we label: the wait names it."""
    sampler = _sampler(node, _model(tmp_path, LLAMA8), gpu_release_timeout=1.0)
    state = json.loads(node["state"].read_text())
    state["gpus"][0]["used"] += 20000
    node["state"].write_text(json.dumps(state))
    with pytest.raises(cuda_env.GpuMemoryNotReleased, match="not free"):
        sampler.close()


def test_a_cuda_build_that_sees_no_gpu_is_refused_before_start(node, tmp_path):
    state = json.loads(node["state"].read_text())
    state["driver"] = "550.54.15"
    node["state"].write_text(json.dumps(state))
    python = install_cuda_python(tmp_path / "old", node["record"], cuda=False)
    with pytest.raises(ValueError) as err:
        _sampler({**node, "python": str(python)}, _model(tmp_path, LLAMA8))
    text = str(err.value)
    assert "CUDA 13.0 build" in text and "driver 550.54.15" in text
    assert "found version 12040" in text and ">= 580" in text
    assert not node["record"].exists()


def test_the_plan_table_in_the_docs_is_current():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_plan_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
