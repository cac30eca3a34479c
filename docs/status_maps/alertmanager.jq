# Prometheus Alertmanager (webhook_config, payload version 4): down while a critical alert
# fires, degraded while only others fire, up once the group is resolved.
[.alerts[] | select(.status == "firing")] as $firing
| {
    status: (if .status == "resolved" or ($firing | length) == 0 then "up"
             elif any($firing[]; .labels.severity == "critical") then "down"
             else "degraded" end),
    message: ([$firing[] | .annotations.summary // .labels.alertname] | join("; ")
              | if . == "" then "resolved" else . end)
  }
