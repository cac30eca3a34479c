-- An attempt's request and response headers, when the dispatcher kept them
-- (`dispatch.attempt_headers`): one line per header, `>name: value` sent (credentials
-- redacted) and `<name: value` received. NULL when they were not kept.
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS headers text;
