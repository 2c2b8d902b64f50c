"""Stream drivers for the quick Amaranth-simulator tests (``tests/test_<unit>.py``).

The cocotb twins live in :mod:`attnforge.testbench.kit`; these are the same ideas for
``amaranth.sim``: a source that presents each item after random gaps and holds it until taken
(valid never waits on ready), and a sink that drops ready at random and records every taken
payload.
"""

__all__ = ["source", "sink", "watchdog", "run_streams", "run_feeder"]


def source(port, items, rng, gaps=0.0):
    """Async testbench putting ``items`` (payload values) on stream ``port``, in order, with a
    gap before each item with probability ``gaps`` (repeated)."""
    async def run(ctx):
        for item in items:
            while rng.random() < gaps:
                await ctx.tick()
            ctx.set(port.payload, item)
            ctx.set(port.valid, 1)
            await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
    return run


def sink(port, out, count, rng, stalls=0.0, convert=lambda payload: payload):
    """Async testbench taking ``count`` items from stream ``port`` into list ``out`` (each
    ``convert(payload)``), with ready low in a cycle with probability ``stalls``."""
    async def run(ctx):
        while len(out) < count:
            ready = rng.random() >= stalls
            ctx.set(port.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            if valid and ready:
                out.append(convert(payload))
    return run


def watchdog(cycles):
    """Background testbench failing the simulation after ``cycles`` clock cycles (add it with
    ``background=True``: a design that hangs fails instead of running forever)."""
    async def run(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"simulation did not finish within {cycles} cycles")
    return run


def run_streams(dut, sources, sinks, rng, *, gaps=0.2, stalls=0.2, timeout=40000):
    """Run ``dut`` in its own simulator with concurrent ``sources`` (``{port: items}``, gaps
    ``gaps``) until every sink of ``sinks`` (``{port: (count, convert)}``, stalls ``stalls``)
    has taken its ``count`` items; returns the sinks' lists in the order of ``sinks``."""
    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for port, items in sources.items():
        sim.add_testbench(source(port, items, rng, gaps))
    outs = []
    for port, (count, convert) in sinks.items():
        outs.append([])
        sim.add_testbench(sink(port, outs[-1], count, rng, stalls, convert))
    sim.add_testbench(watchdog(timeout), background=True)
    sim.run()
    return outs


def run_feeder(dut, loads, cmds, n_a, n_w, rng, *, gaps=0.2, stalls=0.2, load_gaps=0.0,
               cmd="tile", background=(), timeout=40000):
    """Run an RMMU operand feeder (``dut`` with streams ``load``, ``cmd`` (named by ``cmd``),
    ``a`` and ``w``) in its own simulator: ``loads`` on ``load`` (gaps ``load_gaps``), then
    ``cmds`` (gaps ``gaps``); take ``n_a`` ``a`` beats and ``n_w`` ``w`` beats (stalls
    ``stalls``). ``background``: more testbenches (e.g. a memory model). Returns ``(a, w)``:
    the ``a`` beats as lists of words, the ``w`` beats as lists of tiles of words -- the form
    of ``RMMUModel.a_beats`` / ``w_beats``."""
    from amaranth.sim import Simulator
    got_a, got_w = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def driver(ctx):
        await source(dut.load, loads, rng, load_gaps)(ctx)
        await source(getattr(dut, cmd), cmds, rng, gaps)(ctx)
    sim.add_testbench(driver)
    sim.add_testbench(sink(dut.a, got_a, n_a, rng, stalls, lambda p: [int(x) for x in p.data]))
    sim.add_testbench(sink(dut.w, got_w, n_w, rng, stalls,
                           lambda p: [[int(x) for x in t] for t in p.data]))
    for tb in background:
        sim.add_testbench(tb, background=True)
    sim.add_testbench(watchdog(timeout), background=True)
    sim.run()
    return got_a, got_w
