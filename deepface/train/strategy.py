"""The distribution strategy of a training run, and this process's role in it.

`choose_strategy` (and `choose_precision`) are pure functions of the environment and the devices, given
as arguments: ``auto`` follows the hardware (TPU, one GPU, several GPUs, several workers from
``TF_CONFIG`` or Vertex AI's ``CLUSTER_SPEC``, else the CPU); an explicit choice is checked against it.
They return a `StrategyPlan` (the kind, the cluster, whether this process is the chief, why). Only
`detect_tpu`, `make_strategy` and `resolve_strategy` touch the machine; `make_strategy` builds the
``tf.distribute.Strategy`` of a plan.

Raises `DeepFaceError` for a choice the hardware or the cluster cannot give, and for a ``TF_CONFIG`` or
``CLUSTER_SPEC`` that is not valid.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from deepface.config import PRECISIONS, STRATEGIES
from deepface.errors import DeepFaceError

# Vertex AI worker pools as TF_CONFIG task types (pool 0 is the primary replica).
WORKER_POOL_ROLES = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps", "workerpool3": "evaluator"}


def tf_config_from_cluster_spec(cluster_spec: Mapping[str, Any]) -> dict:
    """The ``TF_CONFIG`` equivalent of Vertex AI's ``CLUSTER_SPEC``.

    Vertex AI names its replica groups ``workerpool0`` (the primary replica) to ``workerpool3``; they
    become the TF_CONFIG task types ``chief``, ``worker``, ``ps`` and ``evaluator``.

    Args:
        cluster_spec: the parsed ``CLUSTER_SPEC``, e.g. ``{"cluster": {"workerpool0": ["host0:2222"],
            "workerpool1": ["host1:2222"]}, "task": {"type": "workerpool1", "index": 0}}``.

    Returns:
        ``{"cluster": {"chief": [...], "worker": [...]}, "task": {"type": "worker", "index": 0}}``.
    """
    try:
        pools = cluster_spec["cluster"]
        task = cluster_spec["task"]
        cluster = {WORKER_POOL_ROLES[pool]: list(hosts) for pool, hosts in pools.items() if hosts}
        tf_config = {"cluster": cluster, "task": {"type": WORKER_POOL_ROLES[task["type"]], "index": int(task["index"])}}
    except (KeyError, TypeError, ValueError) as error:
        raise DeepFaceError(
            f"CLUSTER_SPEC is not a Vertex AI cluster spec ({type(error).__name__}: {error}): it needs "
            "'cluster' with workerpool0..3 host lists and 'task' with 'type' and 'index'."
        ) from None
    if "environment" in cluster_spec:
        tf_config["environment"] = cluster_spec["environment"]
    return tf_config


def cluster_from_env(env: Mapping[str, str]) -> dict | None:
    """The TF_CONFIG of this process: ``TF_CONFIG`` if set, else converted from ``CLUSTER_SPEC``, else None."""
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = env.get(name, "").strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeepFaceError(f"environment variable {name} is not valid JSON ({error}): fix or unset it.") from None
        if not isinstance(value, dict):
            raise DeepFaceError(f"environment variable {name} must be a JSON object, got {text[:80]!r}.")
        if name == "CLUSTER_SPEC":
            return tf_config_from_cluster_spec(value)
        if not value.get("cluster"):
            return None  # a TF_CONFIG without a cluster describes a single machine
        return value
    return None


def training_workers(tf_config: Mapping[str, Any] | None) -> int:
    """Machines that train synchronously in a cluster (chief and workers; not ps or evaluator)."""
    if not tf_config:
        return 1
    cluster = tf_config.get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


@dataclasses.dataclass(frozen=True)
class StrategyPlan:
    """Which distribution strategy to build, and this process's role.

    Attributes:
        kind: one of ``tpu``, ``gpu``, ``multi-gpu``, ``multi-worker``, ``cpu``.
        tf_config: the cluster (TF_CONFIG form) for ``multi-worker``, else None.
        is_chief: whether this process writes the model directory, TensorBoard logs and checkpoints.
        reason: why this kind was chosen (logged).
    """

    kind: str
    tf_config: dict | None = None
    is_chief: bool = True
    reason: str = ""


def is_chief_task(tf_config: Mapping[str, Any] | None) -> bool:
    """The chief is the ``chief`` task, or worker 0 in a cluster without one; a single machine is chief."""
    if not tf_config or "task" not in tf_config:
        return True
    task_type, index = tf_config["task"].get("type"), int(tf_config["task"].get("index", 0))
    if "chief" in tf_config.get("cluster", {}):
        return task_type == "chief"
    return task_type == "worker" and index == 0


def choose_strategy(
    requested: str = "auto", *, env: Mapping[str, str], gpus: Sequence[Any], has_tpu: bool
) -> StrategyPlan:
    """Choose the distribution strategy (pure: the environment and devices are arguments).

    ``auto`` picks, in this order: several workers in TF_CONFIG / CLUSTER_SPEC -> ``multi-worker``;
    a TPU -> ``tpu``; several GPUs -> ``multi-gpu``; one GPU -> ``gpu``; else ``cpu``. An explicit
    choice is checked against the hardware.

    Args:
        requested: ``auto`` or one of the kinds.
        env: environment variables (``TF_CONFIG``, ``CLUSTER_SPEC``).
        gpus: the visible GPUs (e.g. ``tf.config.list_physical_devices("GPU")``); only the count matters.
        has_tpu: whether a TPU is attached (see `detect_tpu`).
    """
    if requested not in STRATEGIES:
        raise DeepFaceError(f"strategy={requested!r} is not one of {', '.join(STRATEGIES)}.")
    tf_config = cluster_from_env(env)
    workers = training_workers(tf_config)
    num_gpus = len(gpus)
    if requested == "auto":
        if workers > 1:
            kind, reason = "multi-worker", f"{workers} workers in the cluster spec"
        elif has_tpu:
            kind, reason = "tpu", "a TPU is attached"
        elif num_gpus > 1:
            kind, reason = "multi-gpu", f"{num_gpus} GPUs"
        elif num_gpus == 1:
            kind, reason = "gpu", "one GPU"
        else:
            kind, reason = "cpu", "no GPU or TPU found"
    else:
        kind, reason = requested, "requested"
        if kind == "gpu" and num_gpus < 1:
            raise DeepFaceError("strategy='gpu': no GPU is visible; use 'auto' or 'cpu'.")
        if kind == "multi-gpu" and num_gpus < 2:
            raise DeepFaceError(f"strategy='multi-gpu' needs at least 2 GPUs, {num_gpus} visible: use 'auto'.")
        if kind == "multi-worker" and tf_config is None:
            raise DeepFaceError(
                "strategy='multi-worker' needs the cluster in TF_CONFIG or CLUSTER_SPEC (as Vertex AI sets "
                "it for jobs with several replicas): set one or use 'auto'."
            )
    if kind != "multi-worker":
        return StrategyPlan(kind, None, True, reason)
    return StrategyPlan(kind, tf_config, is_chief_task(tf_config), reason)


def choose_precision(requested: str, strategy_kind: str) -> str:
    """``auto`` is bfloat16 on TPU (its native matmul type) and float32 elsewhere; else as requested."""
    if requested not in PRECISIONS:
        raise DeepFaceError(f"precision={requested!r} is not one of {', '.join(PRECISIONS)}.")
    if requested == "auto":
        return "bfloat16" if strategy_kind == "tpu" else "float32"
    return requested


def detect_tpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether this machine has a TPU attached (a Cloud TPU VM: TPU_* variables or accelerator devices)."""
    env = os.environ if env is None else env
    if any(env.get(name) for name in ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")):
        return True
    if glob.glob("/dev/accel[0-9]*"):
        return True
    return bool(glob.glob("/dev/vfio/[0-9]*")) and importlib.util.find_spec("libtpu") is not None


def make_strategy(plan: StrategyPlan) -> tf.distribute.Strategy:
    """Build the strategy of a plan (connects to and initialises the TPU for ``tpu``)."""
    try:
        if plan.kind == "tpu":
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        if plan.kind == "gpu":
            return tf.distribute.OneDeviceStrategy("/gpu:0")
        if plan.kind == "multi-gpu":
            return tf.distribute.MirroredStrategy()
        if plan.kind == "multi-worker":
            cluster = {role: hosts for role, hosts in plan.tf_config["cluster"].items() if role in ("chief", "worker")}
            resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec(cluster),
                task_type=plan.tf_config["task"]["type"],
                task_id=int(plan.tf_config["task"]["index"]),
                rpc_layer="grpc",
            )
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        # cpu: an explicit strategy too, so that every kind takes the same (distributed) code path
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise DeepFaceError(
            f"Cannot set up the {plan.kind} strategy ({type(error).__name__}: {error}); "
            "pick another strategy."
        ) from None


def resolve_strategy(
    strategy: str | tf.distribute.Strategy, env: Mapping[str, str]
) -> tuple[StrategyPlan, tf.distribute.Strategy]:
    """The plan and the strategy of a run.

    Args:
        strategy: a kind for `choose_strategy` (``auto`` included), chosen for this machine's devices and
            built by `make_strategy`; or a ``tf.distribute.Strategy`` built by the caller, used as is (its
            plan's kind is ``tpu`` for a TPUStrategy, else the class name; the chief is the process
            that checkpoints).
        env: environment variables (``TF_CONFIG``, ``CLUSTER_SPEC``, ``TPU_*``).

    Raises:
        DeepFaceError: see `choose_strategy` and `make_strategy`.
    """
    if isinstance(strategy, tf.distribute.Strategy):
        plan = StrategyPlan(
            "tpu" if isinstance(strategy, tf.distribute.TPUStrategy) else type(strategy).__name__,
            is_chief=strategy.extended.should_checkpoint, reason="given",
        )
        return plan, strategy
    plan = choose_strategy(strategy, env=env, gpus=tf.config.list_physical_devices("GPU"), has_tpu=detect_tpu(env))
    return plan, make_strategy(plan)
