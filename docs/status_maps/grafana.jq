# Grafana alerting's webhook contact point: down while firing, up once resolved; the title
# names the rule ("[FIRING:1] High latency …").
{
  status: (if .status == "resolved" then "up" else "down" end),
  message: (.title // .message // .status)
}
