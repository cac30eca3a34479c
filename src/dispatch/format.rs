//! Chat formats of a target (`format = "slack"` or `"discord"`): an alert event (`monitor.*`,
//! `source.silent`, `source.resumed`) becomes that platform's incoming-webhook message; any
//! other event becomes a short message naming it, with its body (when it is text) in a code
//! block, so a chat channel can also follow ordinary events. `raw` sends the event as it is.
//!
//! Slack: `{"text", "blocks"}` (text is the notification fallback; `&`, `<`, `>` escaped as
//! Slack's mrkdwn requires). Discord: `{"content", "embeds", "allowed_mentions"}` within
//! Discord's limits (content 2000, title 256, description 4096, field value 1024), with
//! mentions disabled so a monitor's message cannot ping a channel.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::model::Format;

/// The alert fields of a `monitor.*` or `source.*` event body.
struct Alert {
    kind: &'static str,
    name: String,
    status: String,
    previous: String,
    reason: String,
    message: Option<String>,
    at: Option<String>,
    incident: Option<String>,
}

impl Alert {
    fn parse(event_type: &str, body: &[u8]) -> Option<Alert> {
        let kind = if event_type.starts_with("monitor.") {
            "monitor"
        } else if event_type == "source.silent" || event_type == "source.resumed" {
            "source"
        } else {
            return None;
        };
        let v: Value = serde_json::from_slice(body).ok()?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Alert {
            kind,
            name: v.get(kind)?.get("name")?.as_str()?.to_owned(),
            status: text("status")?,
            previous: text("previous_status").unwrap_or_default(),
            reason: text("reason").unwrap_or_default(),
            message: text("message"),
            at: text("at"),
            incident: text("incident_id"),
        })
    }

    /// "Monitor api is DOWN" / "Source github is SILENT".
    fn headline(&self) -> String {
        let what = if self.kind == "monitor" {
            "Monitor"
        } else {
            "Source"
        };
        let state = match (self.kind, self.status.as_str()) {
            ("source", "down") => "SILENT".to_owned(),
            ("source", "up") => "receiving events again".to_owned(),
            (_, s) => s.to_uppercase(),
        };
        format!("{what} {} is {state}", self.name)
    }

    fn detail(&self) -> String {
        let mut d = format!("{} (was {})", self.reason.replace('_', " "), self.previous);
        if let Some(m) = &self.message {
            d.push_str(": ");
            d.push_str(m);
        }
        d
    }

    fn emoji(&self) -> &'static str {
        match self.status.as_str() {
            "up" => ":large_green_circle:",
            "degraded" => ":large_yellow_circle:",
            _ => ":red_circle:",
        }
    }

    fn colour(&self) -> u32 {
        match self.status.as_str() {
            "up" => 0x2E_B6_7D,
            "degraded" => 0xEC_B2_2E,
            _ => 0xE0_1E_5A,
        }
    }

    fn footer(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.incident {
            parts.push(format!("incident {i}"));
        }
        if let Some(at) = &self.at {
            parts.push(at.clone());
        }
        parts.join(" · ")
    }
}

/// Slack's mrkdwn control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, marked when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// [`clip`] for escaped text: a cut inside `&amp;`, `&lt;` or `&gt;` drops the partial entity.
fn clip_escaped(s: &str, max: usize) -> String {
    let clipped = clip(s, max);
    if clipped.len() == s.len() {
        return clipped;
    }
    let body = clipped.trim_end_matches('…');
    match body.rfind('&') {
        Some(amp) if !body[amp..].contains(';') => format!("{}…", &body[..amp]),
        _ => clipped,
    }
}

fn slack(event_type: &str, event_id: &str, body: &[u8]) -> Value {
    if let Some(a) = Alert::parse(event_type, body) {
        let headline = format!("{} {}", a.emoji(), slack_escape(&a.headline()));
        // Slack counts the escaped text (a section holds 3000 characters): escape, then clip,
        // never inside an entity.
        let room = 2900usize.saturating_sub(headline.chars().count());
        let detail = clip_escaped(&slack_escape(&a.detail()), room);
        return json!({
            "text": format!("{headline}: {detail}"),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{headline}*\n{detail}")}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(&a.footer())}]},
            ],
        });
    }
    let mut text = format!("Event `{event_type}` ({event_id})");
    if let Ok(s) = std::str::from_utf8(body) {
        text.push_str(&format!("\n```{}```", clip_escaped(&slack_escape(s), 2500)));
    }
    json!({ "text": text })
}

fn discord(event_type: &str, event_id: &str, body: &[u8]) -> Value {
    if let Some(a) = Alert::parse(event_type, body) {
        let mut embed = json!({
            "title": clip(&a.headline(), 256),
            "description": clip(&a.detail(), 4096),
            "color": a.colour(),
            "fields": [
                {"name": "Status", "value": clip(&a.status, 1024), "inline": true},
                {"name": "Previous", "value": clip(&a.previous, 1024), "inline": true},
            ],
            "footer": {"text": clip(&a.footer(), 2048)},
        });
        if let Some(at) = &a.at {
            embed["timestamp"] = at.clone().into();
        }
        return json!({
            "content": clip(&a.headline(), 2000),
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        });
    }
    let mut content = format!("Event `{event_type}` ({event_id})");
    if let Ok(s) = std::str::from_utf8(body) {
        let room = 2000usize.saturating_sub(content.chars().count() + 8);
        content.push_str(&format!("\n```{}```", clip(s, room)));
    }
    json!({ "content": content, "allowed_mentions": {"parse": []} })
}

/// The body and content type to send to a target of `format`; `None` for `raw`.
pub fn render(format: Format, event_type: &str, event_id: &str, body: &[u8]) -> Option<Bytes> {
    let message = match format {
        Format::Raw => return None,
        Format::Slack => slack(event_type, event_id, body),
        Format::Discord => discord(event_type, event_id, body),
    };
    Some(Bytes::from(message.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert_body() -> Vec<u8> {
        json!({
            "type": "monitor.down",
            "monitor": {"id": "mon_1", "name": "billing <api> & co"},
            "status": "down",
            "previous_status": "up",
            "reason": "heartbeat_missed",
            "incident_id": "inc_1",
            "at": "2026-11-23T10:00:00.000Z",
        })
        .to_string()
        .into_bytes()
    }

    fn parsed(b: Option<Bytes>) -> Value {
        b.and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn raw_is_untouched() {
        assert!(render(Format::Raw, "monitor.down", "evt_1", &alert_body()).is_none());
    }

    #[test]
    fn slack_alert_escapes_and_has_fallback_text() {
        let v = parsed(render(
            Format::Slack,
            "monitor.down",
            "evt_1",
            &alert_body(),
        ));
        let text = v["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("billing &lt;api&gt; &amp; co is DOWN"),
            "{text}"
        );
        assert!(text.contains("heartbeat missed (was up)"), "{text}");
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(v["blocks"][1]["type"], "context");
    }

    #[test]
    fn discord_alert_is_an_embed_without_mentions() {
        let v = parsed(render(
            Format::Discord,
            "monitor.down",
            "evt_1",
            &alert_body(),
        ));
        assert_eq!(v["content"], "Monitor billing <api> & co is DOWN");
        assert_eq!(v["embeds"][0]["color"], 0xE0_1E_5A);
        assert_eq!(v["embeds"][0]["timestamp"], "2026-11-23T10:00:00.000Z");
        assert_eq!(v["embeds"][0]["fields"][1]["value"], "up");
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn other_events_become_short_messages_within_limits() {
        let big = "x".repeat(10_000);
        let v = parsed(render(
            Format::Discord,
            "order.paid",
            "evt_9",
            big.as_bytes(),
        ));
        let content = v["content"].as_str().unwrap_or_default();
        assert!(content.starts_with("Event `order.paid` (evt_9)"));
        assert!(content.chars().count() <= 2000);
        let v = parsed(render(Format::Slack, "order.paid", "evt_9", b"{\"a\":1}"));
        assert_eq!(v["text"], "Event `order.paid` (evt_9)\n```{\"a\":1}```");
    }

    #[test]
    fn slack_clips_after_escaping_and_never_inside_an_entity() {
        let long = "<".repeat(5000);
        let body = json!({"type": "monitor.down", "monitor": {"id": "m", "name": "n"},
            "status": "down", "previous_status": "up", "reason": "status_push", "message": long})
        .to_string();
        let v = parsed(render(Format::Slack, "monitor.down", "e", body.as_bytes()));
        let section = v["blocks"][0]["text"]["text"].as_str().unwrap_or_default();
        assert!(
            section.chars().count() <= 3000,
            "{}",
            section.chars().count()
        );
        assert!(
            section.ends_with("&lt;…"),
            "{}",
            &section[section.len() - 20..]
        );
        assert_eq!(clip_escaped("ab&amp;cd", 4), "ab…");
        assert_eq!(clip_escaped("ab&amp;cd", 100), "ab&amp;cd");
    }

    #[test]
    fn source_silence_reads_naturally() {
        let body = json!({"type": "source.silent", "source": {"id": "src_1", "name": "github"},
            "status": "down", "previous_status": "up", "reason": "silent"})
        .to_string();
        let v = parsed(render(
            Format::Slack,
            "source.silent",
            "evt_2",
            body.as_bytes(),
        ));
        assert!(
            v["text"]
                .as_str()
                .unwrap_or_default()
                .contains("Source github is SILENT")
        );
    }
}
