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


# The shipped model's saved bf16 outputs (tests/data/golden.json, the shipped base features) were made on
# a CPU with AMX. Without AMX (AVX-512 BF16 alone, e.g. AMD Zen 4) oneDNN runs other bf16 kernels, which
# round differently: measured there, p(fight) moved by up to 9e-3 and pooled features by up to 0.14
# (mean 0.008), where the same CPU kind repeats them to 1e-4. fp32 outputs agree either way.
SAME_BF16_KERNELS = "amx_bf16" in cpu_flags()


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
