"""The balancing policies a scenario compares, each one arm on its own fresh stack.

* ``round-robin``: Envoy ROUND_ROBIN, the webhook in dry run (decides and logs, moves nothing);
* ``least-request``: Envoy LEAST_REQUEST (power of two choices on active connections), dry run;
* ``weighted-cpu-rr``: ROUND_ROBIN with the webhook's weights by spare CPU (evict lever off);
* ``weighted-cpu-lr``: LEAST_REQUEST with the same weights, converted for least request
  (``mqttlb.webhook.policy_base``; evict lever off);
* ``weighted-cpu+evict``: LEAST_REQUEST, weights and the evict lever (``params.eviction``);
* ``weighted-cpu-counts``: LEAST_REQUEST, weights aimed at the connection counts that even the CPU
  (``policy.steer_target: connection-count``), steering below the alert (``steer_below_alert``); evict off;
* ``weighted-cpu-counts+evict``: the same weights with the evict lever on;
* ``weighted-cpu-counts-10s``: ``weighted-cpu-counts`` stepping every 10 s (``policy.cooldown_seconds``)
  instead of the measurement lag (35 s shipped): the count target's predictor corrects the CPU for the
  moves the rate window has not seen yet, so a step need not wait for it.
"""

from __future__ import annotations

from mqttlb.loadgen.scenarios.arm import ArmSetup

ROUND_ROBIN = "round-robin"
LEAST_REQUEST = "least-request"
WEIGHTED_RR = "weighted-cpu-rr"
WEIGHTED_LR = "weighted-cpu-lr"
WEIGHTED_EVICT = "weighted-cpu+evict"
WEIGHTED_COUNTS = "weighted-cpu-counts"
WEIGHTED_COUNTS_EVICT = "weighted-cpu-counts+evict"
WEIGHTED_COUNTS_10S = "weighted-cpu-counts-10s"
EVICT_OFF = {"eviction": {"enabled": False}}
EVICT_ON = {"eviction": {"enabled": True}}
COUNT_TARGET = {"policy": {"steer_target": "connection-count", "steer_below_alert": True}}

POLICIES: dict[str, ArmSetup] = {
    ROUND_ROBIN: ArmSetup(ROUND_ROBIN, "Envoy ROUND_ROBIN; webhook dry-run", "ROUND_ROBIN", False, EVICT_OFF),
    LEAST_REQUEST: ArmSetup(LEAST_REQUEST, "Envoy LEAST_REQUEST; webhook dry-run", "LEAST_REQUEST", False, EVICT_OFF),
    WEIGHTED_RR: ArmSetup(WEIGHTED_RR, "ROUND_ROBIN + webhook weights by spare CPU (evict off)", "ROUND_ROBIN", True,
                          EVICT_OFF),
    WEIGHTED_LR: ArmSetup(WEIGHTED_LR, "LEAST_REQUEST + webhook weights by spare CPU, converted for least request "
                          "(evict off)", "LEAST_REQUEST", True, EVICT_OFF),
    WEIGHTED_EVICT: ArmSetup(WEIGHTED_EVICT, "LEAST_REQUEST + webhook weights by spare CPU and the evict lever",
                             "LEAST_REQUEST", True, EVICT_ON),
    WEIGHTED_COUNTS: ArmSetup(WEIGHTED_COUNTS, "LEAST_REQUEST + webhook weights toward the connection counts that "
                              "even the CPU, steering below the alert (evict off)", "LEAST_REQUEST", True,
                              {**EVICT_OFF, **COUNT_TARGET}),
    WEIGHTED_COUNTS_EVICT: ArmSetup(WEIGHTED_COUNTS_EVICT, "LEAST_REQUEST + webhook weights toward the connection "
                                    "counts that even the CPU, steering below the alert, and the evict lever",
                                    "LEAST_REQUEST", True, {**EVICT_ON, **COUNT_TARGET}),
    WEIGHTED_COUNTS_10S: ArmSetup(WEIGHTED_COUNTS_10S, "weighted-cpu-counts with a step every 10 s (evict off)",
                                  "LEAST_REQUEST", True,
                                  {**EVICT_OFF, "policy": {**COUNT_TARGET["policy"], "cooldown_seconds": 10}}),
}
BASELINES = (ROUND_ROBIN, LEAST_REQUEST)
WEIGHTED = (WEIGHTED_RR, WEIGHTED_LR, WEIGHTED_EVICT, WEIGHTED_COUNTS, WEIGHTED_COUNTS_EVICT, WEIGHTED_COUNTS_10S)
WITHOUT_EVICTION = (ROUND_ROBIN, LEAST_REQUEST, WEIGHTED_RR, WEIGHTED_LR, WEIGHTED_COUNTS, WEIGHTED_COUNTS_10S)


def parse_policies(text: str) -> list[str]:
    """``round-robin,least-request`` -> the names in that order; ValueError for an unknown or repeated name
    or an empty list."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"--policies must be distinct names from {', '.join(POLICIES)}; got {text!r}")
    return names
