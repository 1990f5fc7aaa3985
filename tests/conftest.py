import json
import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SURV_FIGHT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "surv-fight")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((x for x in f if x.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.partition(":")[2].split())


def bf16_kernels() -> str:
    """The kind of bf16 kernels oneDNN runs here: "amx" (AMX tiles), "avx512_bf16", or "other"."""
    flags = cpu_flags()
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "other"


# The shipped model's saved bf16 outputs (tests/data/golden.json, which names the kernels that made them,
# and the shipped base features, made with the same) are repeated to 1e-4 by a CPU of the same kind only:
# oneDNN rounds bf16 otherwise on another (AMX against AVX-512 BF16 alone: p(fight) moved by up to 9e-3
# and pooled features by up to 0.14, mean 0.008, in one measurement). fp32 outputs agree either way.
with open(os.path.join(os.path.dirname(__file__), "data", "golden.json")) as _f:
    SAME_BF16_KERNELS = bf16_kernels() == json.load(_f).get("bf16_kernels", "amx")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and a shared machine punishes more); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small synthetic dataset on disk: normal/ and alert/ folders of MP4 clips."""
    from xvad.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_dataset(str(root), per_class=16, frames=8, size=40, seed=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A new service database's URL: SQLite in a folder not made yet, then one on the PostgreSQL server
    (the module imports ``postgres_server`` from ``servers``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'xvad.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def db(url):
    """The service's database at ``url``, migrated to the newest schema."""
    from xvad.service.store import Database

    d = Database(url)
    d.migrate()
    yield d
    d.close()
