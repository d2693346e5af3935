"""Named experiment scenarios (``mqttlb experiment --scenario NAME``, ``make experiment SCENARIO=NAME``).

``restart_pileup`` and ``heterogeneous`` (issue 14) each run arms on fresh local stacks: ``workloads``
(pure) builds the load, ``arm`` runs one stack with timed node stops and starts while sampling,
``analysis`` (pure) turns samples and audit entries into figures, ``report`` and ``plots`` write them,
``cli`` parses the command line.
"""
