"""Fleet simulation and protocol test doubles: test tooling, kept out of the product packages.

* :mod:`fleetsim.simulator` — many lightweight simulated agents on one I/O thread;
* :mod:`fleetsim.harness` — a whole loopback fleet (mosquitto, registry, fleet service,
  rollout engine, simulated agents) for tests and benchmarks;
* :mod:`fleetsim.scripted` — one scripted device that publishes exactly what a test says;
* :mod:`fleetsim.controller_stub` — a minimal controller that feeds bad inputs to real agents;
* :mod:`fleetsim.wire` — what they share: logins, message builders, publishing by the topic
  table of :mod:`common.topics`;
* :mod:`fleetsim.waiting` — ``wait_until``, the one poll-with-deadline of tests, benchmarks and
  these doubles.

The controller never imports this package; benchmarks and tests do. The simulator reuses
the agent's gate (:func:`agent.compare.decide`) and benchmark code, which is why it sits
beside both rather than inside either.
"""
