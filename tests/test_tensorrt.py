"""TensorRT engines: the build plan, the parity gate, the device, the cache key, the export summary.

TensorRT cannot be installed on the development and CI machines (NVIDIA's index, no GPU), so
everything that decides what to build, and the parity gate that decides whether to cache an
engine, is tested here without it, with real ONNX Runtime sessions on real graphs. Tests that
need TensorRT and a GPU are at the end and skip with the reason elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from impasto.export.compatibility import check_tensorrt
from impasto.export.engine_parity import (
    ENGINE_TOLERANCE,
    check_engine_parity,
    compare_outputs,
    onnxruntime_runner,
    parity_inputs,
)
from impasto.export.fp16 import convert_to_fp16, node_precisions
from impasto.export.repository import ONNX_FP16, ONNX_FP32, RepositoryModel, TensorInfo, read_model
from impasto.export.tensorrt import (
    EngineBuildError,
    EngineParityError,
    GpuInfo,
    InvalidDevice,
    TensorRTUnavailable,
    engine_key,
    engines_folder,
    find_engine,
    gpu_info,
    installed_tensorrt_version,
    parse_cuda_device,
    pinned_layer,
    plan_build,
    store_engine,
    support_summary,
    timing_cache_path,
)
from impasto.runtime.errors import code_of

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "sm90")
H200 = GpuInfo(1, "NVIDIA H200", "sm90")


def _affine_graph(bias_shift: float = 0.0) -> onnx.ModelProto:
    """y = x @ W + b (x: batch x 4 -> y: batch x 3), with b[0] moved by ``bias_shift``."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    b = np.array([0.1 + bias_shift, -0.2, 0.3], np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"), helper.make_node("Add", ["h", "b"], ["y"], name="add")],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def affine(tmp_path) -> RepositoryModel:
    """A one-version model folder holding the affine graph, its profile (opt batch 4) and fp16 variant."""
    folder = tmp_path / "affine"
    (folder / "1").mkdir(parents=True)
    graph = _affine_graph()
    onnx.save_model(graph, str(folder / "1" / ONNX_FP32))
    onnx.save_model(convert_to_fp16(graph), str(folder / "1" / ONNX_FP16))
    return RepositoryModel(
        name="affine", version=1, folder=folder, max_batch_size=8,
        inputs=(TensorInfo("x", "FP32", (4,)),), outputs=(TensorInfo("y", "FP32", (3,)),),
        parameters={"impasto.profile.x": "1x4;4x4;8x4"},
    )


@pytest.fixture(scope="module")
def oil(tmp_path_factory) -> tuple[RepositoryModel, str]:
    """renderer_oil exported once through the real command line (about 6 s): model and stdout."""
    repo = tmp_path_factory.mktemp("trt") / "models"
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "export", "renderer_oil", "--repo", str(repo),
                          "--seed", "3"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return read_model(repo, "renderer_oil"), run.stdout


# --- what is built -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.0.1", "10.8.0.43", "10.15.1"])
def test_tensorrt_10_builds_fp16_strongly_typed_from_the_fp16_graph(version):
    plan = plan_build("fp16", version)
    assert plan.source == ONNX_FP16 and plan.strongly_typed
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert "FP16" not in plan.builder_flags and plan.builder_flags == ()  # precisions come from the graph
    assert plan.pin_fp32_from is None
    fp32 = plan_build("fp32", version)
    assert fp32.source == ONNX_FP32 and fp32.strongly_typed and fp32.cleared_flags == ("TF32",)


def test_tensorrt_11_is_always_strongly_typed_and_needs_no_flag():
    for precision, source in (("fp16", ONNX_FP16), ("fp32", ONNX_FP32)):
        plan = plan_build(precision, "11.0.0")
        assert plan.source == source and plan.strongly_typed and plan.network_flags == () and plan.builder_flags == ()


@pytest.mark.parametrize("version", ["8.6.1", "9.2.0.5"])
def test_tensorrt_8_and_9_fall_back_to_the_fp16_flag_with_fp32_layers_pinned(version):
    plan = plan_build("fp16", version)
    assert plan.source == ONNX_FP32 and not plan.strongly_typed
    assert plan.network_flags == ("EXPLICIT_BATCH",)
    assert plan.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and plan.pin_fp32_from == ONNX_FP16
    fp32 = plan_build("fp32", version)
    assert fp32.builder_flags == () and fp32.cleared_flags == ("TF32",) and fp32.pin_fp32_from is None


def test_build_plan_refuses_old_tensorrt_unknown_versions_and_precisions():
    with pytest.raises(EngineBuildError, match="TensorRT 8.5.3 is too old: impasto needs 8.6"):
        plan_build("fp16", "8.5.3")
    with pytest.raises(EngineBuildError, match="cannot read the TensorRT version 'ten'"):
        plan_build("fp16", "ten")
    with pytest.raises(EngineBuildError, match="precision must be 'fp32' or 'fp16', not 'int8'"):
        plan_build("int8", "10.8.0")


def test_an_fp16_engine_without_the_fp16_graph_says_what_to_do(affine):
    (affine.version_folder / ONNX_FP16).unlink()
    with pytest.raises(EngineBuildError, match="has no model.fp16.onnx .*--precision fp32"):
        plan_build("fp16", "10.8.0").source_path(affine)
    assert plan_build("fp32", "10.8.0").source_path(affine).name == ONNX_FP32


def test_weakly_typed_builds_pin_the_layers_the_fp16_graph_keeps_in_fp32():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                               helper.make_node("Softmax", ["h"], ["y"], name="soft", axis=-1)], "g", [x], [y], [w])
    half = convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    precisions = node_precisions(half)
    assert precisions == {"mm": "fp16", "soft": "fp32"}  # Softmax is kept fp32, Casts are not counted
    assert pinned_layer("soft", precisions) and pinned_layer("soft_1", precisions)  # the parser's extra layers
    assert not pinned_layer("mm", precisions) and not pinned_layer("mm_1", precisions)
    assert not pinned_layer("soft_x", precisions) and not pinned_layer("W", precisions)


def test_the_renderers_fp16_graph_names_an_fp32_branch_to_pin(oil):
    model, stdout = oil
    precisions = node_precisions(onnx.load(str(model.version_folder / ONNX_FP16)))
    kinds = list(precisions.values())
    assert f"({kinds.count('fp16')} fp16 nodes)" in stdout  # as `impasto export` reported
    assert kinds.count("fp16") > 0 and kinds.count("fp32") > 0  # the rasterisation branch stays fp32


# --- the parity gate -----------------------------------------------------------------------------


def test_parity_inputs_are_deterministic_at_the_opt_shape(affine):
    a, b = parity_inputs(affine), parity_inputs(affine)
    assert a["x"].shape == (4, 4) and a["x"].dtype == np.float32
    assert np.array_equal(a["x"], b["x"]) and 0 <= a["x"].min() and a["x"].max() < 1
    assert not np.array_equal(parity_inputs(affine, seed=1)["x"], a["x"])


def test_an_engine_matching_onnxruntime_is_cached(affine):
    key = engine_key(affine, "fp32", H100, "10.8.0")
    same = onnxruntime_runner(affine.version_folder / ONNX_FP32)
    plan, parity = store_engine(affine, key, b"serialized engine", same)
    assert parity.ok and parity.max_abs == 0.0 and parity.input_shapes == {"x": (4, 4)}
    assert plan.read_bytes() == b"serialized engine" and find_engine(affine, key) == plan


def test_an_engine_outside_the_tolerance_is_refused_and_nothing_is_cached(affine, tmp_path):
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save_model(_affine_graph(bias_shift=0.5), str(perturbed))
    key = engine_key(affine, "fp16", H100, "10.8.0")
    with pytest.raises(EngineParityError) as caught:
        store_engine(affine, key, b"bad engine", onnxruntime_runner(perturbed))
    message = str(caught.value)
    assert "model 'affine'" in message and "fp16 TensorRT engine" in message
    assert "by 0.5 on output 'y'" in message and "tolerance 0.05" in message and "not cached" in message
    assert code_of(caught.value) == "FAILED_PRECONDITION"  # exit 2 on the CLI, never a traceback
    folder = engines_folder(affine)
    assert not folder.exists() or not any(folder.iterdir())
    assert find_engine(affine, key) is None


def test_the_fp16_graph_holds_fp16_parity_but_not_fp32s_on_a_real_renderer(oil):
    """The fp16 variant on ONNX Runtime stands in for a good fp16 engine: within 5e-2 of the fp32
    graph, yet far outside fp32's 1e-3, so the tolerance follows the precision asked for."""
    model, _ = oil
    half = onnxruntime_runner(model.version_folder / ONNX_FP16)
    reference = onnxruntime_runner(model.version_folder / ONNX_FP32)
    fp16 = check_engine_parity(model, half, "fp16", reference=reference)
    assert fp16.ok and 1e-3 < fp16.max_abs < ENGINE_TOLERANCE["fp16"], fp16
    assert fp16.input_shapes == {"params": (32, 12)}  # the profile's opt shape
    fp32 = check_engine_parity(model, half, "fp32", reference=reference)
    assert not fp32.ok and "tolerance 0.001" in fp32.message()


def test_missing_misshapen_or_non_finite_outputs_fail():
    ref = {"a": np.zeros((2, 3), np.float32), "b": np.ones(2, np.float32)}
    assert compare_outputs(ref, {"a": ref["a"] + 0.25, "b": ref["b"]}) == (0.25, "a")
    assert compare_outputs(ref, {"a": ref["a"]}) == (float("inf"), "b")
    assert compare_outputs(ref, {"a": np.zeros((3, 2), np.float32), "b": ref["b"]})[0] == float("inf")
    assert compare_outputs(ref, {"a": np.full((2, 3), np.nan, np.float32), "b": ref["b"]}) == (float("inf"), "a")
    assert compare_outputs(ref, {"a": ref["a"].astype(np.float16), "b": ref["b"]}) == (0.0, "a")


# --- the device and the cache key ----------------------------------------------------------------


def test_device_strings_parse_to_a_cuda_index():
    assert [parse_cuda_device(d) for d in ("cuda:1", "CUDA:0", "2", 3, " cuda:12 ")] == [1, 0, 2, 3, 12]
    assert [parse_cuda_device(d) for d in (None, "", "auto", "cuda")] == [None] * 4  # the current device
    for bad, words in (("cpu", "cannot run TensorRT"), ("cuda:-1", "not a CUDA device"), ("gpu1", "not a CUDA device"),
                       ("cuda:1x", "not a CUDA device"), (-1, "0 or more"), (True, "cuda, cuda:N or N"),
                       ("x" * 10_000, "'x{40}' is not")):  # a long value is not echoed in full
        with pytest.raises(InvalidDevice, match=words) as caught:
            parse_cuda_device(bad)
        assert code_of(caught.value) == "INVALID_ARGUMENT"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_device_on_a_machine_without_cuda_says_so():
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU is visible") as caught:
        gpu_info("cuda:1")
    assert code_of(caught.value) == "FAILED_PRECONDITION"


def test_engines_and_timing_caches_are_keyed_by_gpu_model(affine):
    h100, h200 = engine_key(affine, "fp16", H100, "10.8.0"), engine_key(affine, "fp16", H200, "10.8.0")
    assert h100.compute_capability == h200.compute_capability == "sm90"
    assert h100 != h200 and h100.filename() != h200.filename()
    assert h100.filename().startswith("sm90-nvidia-h100-80gb-hbm3-trt10.8.0-fp16-")
    assert GpuInfo(0, "Tesla V100-SXM2-16GB / (x)", "sm70").slug == "tesla-v100-sxm2-16gb-x"
    assert timing_cache_path(affine, H100, "10.8.0") != timing_cache_path(affine, H200, "10.8.0")
    # the key follows the graph the plan builds from: fp16 on 10 hashes model.fp16.onnx
    assert h100.onnx_sha256 != engine_key(affine, "fp32", H100, "10.8.0").onnx_sha256
    # 8.6 builds fp16 from model.onnx pinned by model.fp16.onnx: both are in its key
    assert engine_key(affine, "fp16", H100, "8.6.1").onnx_sha256 not in (h100.onnx_sha256,
                                                                        engine_key(affine, "fp32", H100, "8.6.1").onnx_sha256)
    store_engine(affine, h100, b"engine", onnxruntime_runner(affine.version_folder / ONNX_FP32))
    meta = (engines_folder(affine) / h100.filename()).with_suffix(".json")
    assert json.loads(meta.read_text())["gpu"] == "NVIDIA H100 80GB HBM3"
    assert find_engine(affine, h100) is not None and find_engine(affine, h200) is None


# --- what `impasto export` says ------------------------------------------------------------------


def test_export_says_the_graph_is_supported_not_that_tensorrt_is_ok(oil):
    _, stdout = oil
    here = installed_tensorrt_version()
    expected = f"TensorRT {here} installed here" if here else "TensorRT not installed here"
    assert f"TensorRT: graph supported (opset 18); {expected})" in stdout, stdout
    assert "TensorRT ok" not in stdout


def test_support_summary_names_allowed_and_unsupported_constructs():
    def graph(op: str) -> onnx.ModelProto:
        node = helper.make_node(op, ["x"], ["y"], name="n")
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    assert support_summary(check_tensorrt(graph("Relu"))).startswith("TensorRT: graph supported (opset 17); ")
    allowed = support_summary(check_tensorrt(graph("Unique"), allow=["Unique"]))
    assert allowed.startswith("TensorRT: graph supported (opset 17) except 1 allowed construct(s); ")
    assert support_summary(check_tensorrt(graph("Unique"))).startswith("TensorRT: graph not supported (opset 17; 1 problem(s))")


# --- with TensorRT and a GPU (skipped elsewhere) --------------------------------------------------


_NO_TENSORRT = ("TensorRT cannot be installed on this machine (NVIDIA's index, no GPU)"
                if importlib.util.find_spec("tensorrt") is None else
                "TensorRT needs a CUDA GPU" if not torch.cuda.is_available() else "")
# a mark, not a skip in the body: the module's export fixture is not run for nothing
needs_tensorrt = pytest.mark.skipif(bool(_NO_TENSORRT), reason=_NO_TENSORRT)


def _tensorrt_gpu():
    return pytest.importorskip("tensorrt", reason=_NO_TENSORRT)


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_built_engine_holds_parity_and_is_reused(oil, precision):
    _tensorrt_gpu()
    from impasto.export.tensorrt import build_engine
    from impasto.runtime.backends.tensorrt import TensorRTBackend

    model, _ = oil
    plan = build_engine(model, precision, force=True)
    assert build_engine(model, precision) == plan  # cached under the same key
    backend = TensorRTBackend(model, precision, device="cuda:0")
    parity = check_engine_parity(model, backend.infer, precision)
    assert parity.ok, parity.message()
    assert backend.describe()["device"] == "cuda:0"


@needs_tensorrt
def test_an_engine_failing_parity_is_not_cached(oil):
    _tensorrt_gpu()
    from impasto.export.tensorrt import build_engine

    model, _ = oil
    before = set(engines_folder(model).glob("*.plan")) if engines_folder(model).exists() else set()
    with pytest.raises(EngineParityError, match="model 'renderer_oil'.*tolerance 0;"):
        build_engine(model, "fp16", force=True, tolerance=0.0)  # nothing is exact in fp16
    after = set(engines_folder(model).glob("*.plan")) if engines_folder(model).exists() else set()
    assert after == before


@needs_tensorrt
def test_a_corrupt_timing_cache_is_replaced_with_a_warning(oil, caplog):
    trt = _tensorrt_gpu()
    from impasto.export.tensorrt import build_engine

    model, _ = oil
    path = timing_cache_path(model, gpu_info(), trt.__version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a timing cache")
    with caplog.at_level(logging.WARNING, logger="impasto.export.tensorrt"):
        build_engine(model, "fp32", force=True)
    assert "timing cache" in caplog.text and path.read_bytes() != b"not a timing cache"


@needs_tensorrt
def test_an_engine_runs_on_the_device_asked_for(oil):
    _tensorrt_gpu()
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    from impasto.runtime.backends.tensorrt import TensorRTBackend

    model, _ = oil
    backend = TensorRTBackend(model, "fp16", device="cuda:1")
    assert backend.runner.device == torch.device("cuda", 1)
    assert check_engine_parity(model, backend.infer, "fp16").ok
    with pytest.raises(TensorRTUnavailable, match=f"cuda:{torch.cuda.device_count()} does not exist"):
        TensorRTBackend(model, "fp16", device=torch.cuda.device_count())

