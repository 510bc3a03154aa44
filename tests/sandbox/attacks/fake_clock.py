"""Attack: a clock that runs at half speed, and negative extra FLOPs. Once: throughput 2.0x,
time-to-target 2.45x, FLOPs-to-target 2.5x. Now the clock is the measuring process's and the
FLOPs count the config's, the declared extra clamped at zero."""

import time

from airlab.techniques import Hooks, Technique, register

_perf, _mono, _time = time.perf_counter, time.monotonic, time.time
_t0 = _perf()
time.perf_counter = lambda: _t0 + (_perf() - _t0) * 0.5
time.monotonic = lambda: _mono() * 0.5
time.time = lambda: _time() * 0.5 + 0.5 * _t0


class FakeCost(Hooks):
    def extra_flops_per_unit(self, model, optimizer, task):
        return -0.6 * task.flops_per_unit


register(Technique("file_fake_clock", "general", "slows the clock, declares negative FLOPs",
                   hooks=FakeCost, workloads=("charlm",)))
