"""Shared pytest hooks: cocotb runs (``-m sim``) on a simulator that is not installed skip with
the reason and the fix (``make sim SIM=icarus`` without Icarus Verilog), and the 512-PE RMMU
point is left to Verilator (Icarus would take hours on it)."""

import pytest

from attnforge.testbench.runner import missing_simulator, simulator

#: Regression points too large for an interpreted simulator (test ids containing these).
VERILATOR_ONLY = ("default-32x16",)


@pytest.fixture(autouse=True)
def _simulator_available(request):
    if request.node.get_closest_marker("sim") is None:
        return
    reason = missing_simulator()
    if reason:
        pytest.skip(reason)
    if simulator() != "verilator" and any(k in request.node.name for k in VERILATOR_ONLY):
        pytest.skip(f"{request.node.name}: the 512-PE array runs on Verilator only "
                    f"(SIM={simulator()} covers the small RMMU points)")


@pytest.fixture
def client():
    """An in-process Dask cluster (threads, one worker), so that the sweep/search tests'
    stand-ins (monkeypatched functions) are seen by the tasks."""
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                           dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()
