-- Records PostgreSQL refused for their data (a shipped event or a monitor history record),
-- kept whole so nothing shipped is lost and an operator can see what was refused and why.
-- The shipper stores a refused record here and moves on; the rest of its batch is stored as
-- usual. Small by nature, so not partitioned: the daily upkeep deletes rows past retention.

CREATE TABLE IF NOT EXISTS quarantine (
    -- event | history
    kind      text        NOT NULL,
    tenant_id text        NOT NULL,
    -- the event id, or the history record's sequence in its shard (a tenant has one shard)
    record_id text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    -- PostgreSQL's refusal, as it said it
    reason    text        NOT NULL,
    -- the record as the shipper held it (JSON, the body in base64)
    record    bytea       NOT NULL,
    PRIMARY KEY (kind, tenant_id, record_id)
);

CREATE INDEX IF NOT EXISTS quarantine_by_tenant ON quarantine (tenant_id, at DESC);
