-- The event log: events with their bodies, per-target delivery state and attempts.
-- Every table is partitioned by the event's receive time, one partition per UTC day
-- (created ahead by the gateway), so retention drops whole partitions and never scans.

CREATE TABLE IF NOT EXISTS events (
    tenant_id    text        NOT NULL,
    id           text        NOT NULL,
    received_at  timestamptz NOT NULL,
    event_type   text        NOT NULL,
    content_type text,
    body         bytea       NOT NULL,
    -- succeeded | failed | no_targets, as it stood when shipped
    status       text        NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);

CREATE INDEX IF NOT EXISTS events_by_tenant
    ON events (tenant_id, received_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS deliveries (
    tenant_id     text        NOT NULL,
    event_id      text        NOT NULL,
    received_at   timestamptz NOT NULL,
    target_id     text        NOT NULL,
    state         text        NOT NULL,
    attempts      integer     NOT NULL,
    last_status   integer,
    last_error    text,
    next_retry_at timestamptz,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (event_id, target_id, received_at)
) PARTITION BY RANGE (received_at);

CREATE INDEX IF NOT EXISTS deliveries_by_target
    ON deliveries (tenant_id, target_id, received_at DESC);

CREATE TABLE IF NOT EXISTS attempts (
    tenant_id   text        NOT NULL,
    event_id    text        NOT NULL,
    received_at timestamptz NOT NULL,
    target_id   text        NOT NULL,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    status      integer,
    latency_ms  bigint      NOT NULL,
    error       text,
    response    text,
    PRIMARY KEY (event_id, target_id, at, attempt, received_at)
) PARTITION BY RANGE (received_at);
