"""DeepSpeed ZeRO-3 on 2 CPU processes (DeepSpeed's CPU accelerator, gloo) through ``rpo-tutorial train``.

Skipped without deepspeed. To run it (DeepSpeed ships as a source package; its ops compile on first
use, none is needed here): ``DS_BUILD_OPS=0 pip install --no-build-isolation "deepspeed==0.19.8"``
(``pip install -e ".[deepspeed]"`` after that pins the same version). The same 2-step run under
DDP is the reference: ZeRO-3 shards parameters, gradients and optimizer state, and must give the
same losses and the same final weights; the frozen reference becomes a ZeRO-3 inference engine,
so step 1's loss is exactly log 2 (every log-ratio 0).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CPU_ZERO3 = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
mixed_precision: 'no'
num_machines: 1
num_processes: 2
machine_rank: 0
main_training_function: main
rdzv_backend: static
same_network: true
use_cpu: true
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: false
  zero3_save_16bit_model: true
  offload_optimizer_device: none
  offload_param_device: none
  gradient_accumulation_steps: 1
  gradient_clipping: 10.0
"""
TRAIN = ["-m", "rpo_lab", "train", "--preset", "smoke", "--reference", "model", "--max-steps", "2",
         "--overwrite"]


def launch(command: list[str], timeout: int = 600) -> str:
    """Run a 2-process launch; on timeout kill its whole process group. Returns stdout + stderr."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env=environment, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{command[:4]} did not finish in {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]
    return output


def losses(folder: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.slow
def test_zero3_on_two_cpu_processes_trains_like_ddp_and_saves_a_loadable_model(tmp_path):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip('deepspeed is not installed (DS_BUILD_OPS=0 pip install --no-build-isolation "deepspeed==0.19.8")')
    from transformers import AutoModelForCausalLM

    config = tmp_path / "zero3_cpu.yaml"
    config.write_text(CPU_ZERO3)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    zero3 = launch(accelerate + TRAIN + ["--output-dir", str(tmp_path / "zero3")])
    assert "route=deepspeed" in zero3 and "zero_stage=3" in zero3, zero3[-3000:]
    ddp = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *TRAIN,
                  "--output-dir", str(tmp_path / "ddp")])
    assert "route=ddp" in ddp
    zero3_losses, ddp_losses = losses(tmp_path / "zero3"), losses(tmp_path / "ddp")
    assert sorted(zero3_losses) == [1, 2]
    assert zero3_losses[1] == pytest.approx(math.log(2), abs=1e-6)  # the ZeRO-3 reference engine is the policy
    for step, loss in ddp_losses.items():
        assert zero3_losses[step] == pytest.approx(loss, rel=1e-5), step
    sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3").state_dict()
    replicated = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp").state_dict()
    assert sharded.keys() == replicated.keys()
    assert max((sharded[name] - replicated[name]).abs().max().item() for name in sharded) <= 1e-4
