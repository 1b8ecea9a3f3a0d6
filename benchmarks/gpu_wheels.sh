#!/usr/bin/env bash
# Build wheels/: the project's dependencies that the GPU machine's python3 lacks, as wheels
# for it (CPython 3.12, manylinux x86-64), for benchmarks/gpu_check.sh to install offline.
#
#   bash benchmarks/gpu_wheels.sh            # from the repository root, where pip reaches PyPI
#
# The versions are the ones installed in this checkout's .venv (what the tests ran with).
# Wheels of packages the GPU machine already has (its image holds torch, numpy, pandas,
# pyarrow, scipy, ... : /work/.library/device/KINDS.md) are left out when they are compiled
# (swapping a compiled package under torch is what breaks); pure-Python ones stay, so the
# versions match. wheels/ is git-ignored: a device run takes it with `carry: ["wheels"]`.
# Everything that travels must stay under 64 MiB: the script fails above
# GPU_WHEELS_LIMIT_MIB (default 56, leaving room for the repository itself).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=${GPU_WHEELS_DIR:-wheels}
LIMIT_MIB=${GPU_WHEELS_LIMIT_MIB:-56}
PY=${PYTHON:-.venv/bin/python}

# The GPU image's packages (KINDS.md, read 2026-11-17), normalized (lower case, '_').
PREINSTALLED="absl_py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated_doc
anyio attrs botorch build certifi charset_normalizer chex click cloudpickle cmake colorama
contourpy coverage cuda_bindings cuda_core cuda_pathfinder cuda_toolkit cupy_cuda13x cycler
cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf_xet httpcore httpx humanize hypothesis idna
imageio iniconfig interface_meta jax jax_cuda13_pjrt jax_cuda13_plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy_loader lightning lightning_utilities linear_operator lineax llvmlite lxml
markdown markdown_it_py markupsafe matplotlib mdurl meson ml_dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy_extensions nanobind narwhals networkx ninja numba numba_cuda
numpy numpyro nvidia_cublas nvidia_cuda_cupti nvidia_cuda_nvrtc nvidia_cuda_runtime
nvidia_cudnn_cu13 nvidia_cufft nvidia_cufile nvidia_curand nvidia_cusolver nvidia_cusparse
nvidia_cusparselt_cu13 nvidia_ml_py nvidia_nccl_cu13 nvidia_nvjitlink nvidia_nvshmem_cu13
nvidia_nvtx onnx onnx_ir onnxruntime onnxscript opencv_python_headless optax opt_einsum
opt_einsum_fx optimistix orbax_checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus_client propcache protobuf psutil pyarrow pybind11 py_cpuinfo
pygments pyparsing pyproject_hooks pyre_extensions pytest pytest_benchmark pytest_cov
pytest_mock pytest_timeout pytest_xdist python_dateutil pytorch_lightning pyyaml regex
requests rich sacrebleu safetensors scikit_build_core scikit_image scikit_learn scipy seaborn
sentencepiece sentence_transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard_data_server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch_geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing_extensions
typing_inspect urllib3 uvloop wadler_lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

pinned=()
for name in prefect prefect-dask dask distributed zarr tomli-w; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  pinned+=("$name==$version")
done
echo "downloading ${pinned[*]} and what they need, for CPython 3.12 on manylinux x86-64"

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --quiet --only-binary=:all: --dest "$DEST" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any \
  "${pinned[@]}"

for wheel in "$DEST"/*.whl; do
  file=$(basename "$wheel")
  project=$(echo "${file%%-*}" | tr '[:upper:]-.' '[:lower:]__')
  if [[ " ${PREINSTALLED//$'\n'/ } " == *" $project "* && "$file" != *-none-any.whl ]]; then
    rm "$wheel"  # compiled, and the GPU image has its own
  fi
done

size_mib=$(du -sm "$DEST" | cut -f1)
count=$(find "$DEST" -name '*.whl' | wc -l)
echo "$DEST: $count wheels, ${size_mib} MiB"
if ((size_mib > LIMIT_MIB)); then
  echo "error: $DEST is ${size_mib} MiB, over GPU_WHEELS_LIMIT_MIB=${LIMIT_MIB}: it would not" \
    "travel (64 MiB in all); gpu_check.sh still runs its torch-only parts without it" >&2
  exit 1
fi
