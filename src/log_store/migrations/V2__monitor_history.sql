-- The history of monitors and watched sources: every status record (check) and every
-- incident, partitioned by day like the event log.

CREATE TABLE IF NOT EXISTS checks (
    tenant_id text        NOT NULL,
    subject   text        NOT NULL,
    at        timestamptz NOT NULL,
    -- the history stream entry that carried it: a check shipped twice is stored once
    seq       text        NOT NULL,
    record    text        NOT NULL,
    PRIMARY KEY (seq, at)
) PARTITION BY RANGE (at);

CREATE INDEX IF NOT EXISTS checks_by_subject ON checks (tenant_id, subject, at DESC);

CREATE TABLE IF NOT EXISTS incidents (
    tenant_id text        NOT NULL,
    subject   text        NOT NULL,
    id        text        NOT NULL,
    opened_at timestamptz NOT NULL,
    -- the newest state of the incident (it is written again when it resolves)
    record    text        NOT NULL,
    seq       text        NOT NULL,
    PRIMARY KEY (id, opened_at)
) PARTITION BY RANGE (opened_at);

CREATE INDEX IF NOT EXISTS incidents_by_subject ON incidents (tenant_id, subject, opened_at DESC);
