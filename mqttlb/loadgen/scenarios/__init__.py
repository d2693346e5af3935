"""Named experiment scenarios (``mqttlb experiment --scenario NAME``, ``make experiment SCENARIO=NAME``).

``catalog`` (pure) names the scenarios and builds their loads with ``workloads``; ``policies`` names the
balancing policies compared; ``runner`` runs every seed and policy on fresh local stacks through ``arm``
(one stack with timed node stops and starts, sampled meanwhile); ``metrics`` and ``analysis`` (pure) turn
samples and audit entries into figures; ``bench_report`` and ``plots`` write them; ``cli`` parses the
command line.
"""
