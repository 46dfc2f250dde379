"""The audit log: monthly partitions, and statement-level triggers that write it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:04:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit_logs partitioned by month, partition maintenance, audit triggers"

#: Audited tables and the column holding each one's tenant id.
AUDITED = {
    "organizations": "id",
    "organization_members": "organization_id",
    "projects": "organization_id",
    "tasks": "organization_id",
    "task_comments": "organization_id",
}

_TRIGGERS = "\n".join(
    f"""
CREATE TRIGGER {table}_audit_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_changes('{tenant}');
CREATE TRIGGER {table}_audit_update AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_changes('{tenant}');
CREATE TRIGGER {table}_audit_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_changes('{tenant}');
"""
    for table, tenant in AUDITED.items()
)

FORWARDS = (
    r"""
CREATE TABLE audit_logs (
    id              uuid        NOT NULL DEFAULT uuidv7(),
    -- No foreign keys: the log outlives the rows (and tenants and users) it describes.
    organization_id uuid        NOT NULL,
    actor_id        uuid,
    action          text        NOT NULL,
    entity_type     text        NOT NULL,
    entity_id       uuid        NOT NULL,
    -- {"before": {changed columns}, "after": {changed columns}}; one side for insert/delete.
    changes         jsonb       NOT NULL,
    request_id      text,
    ip_address      inet,
    user_agent      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Led by the tenant, then time: the audit page of a tenant is a backward index scan.
    PRIMARY KEY (organization_id, created_at, id),
    CONSTRAINT audit_logs_action_domain CHECK (action IN ('insert', 'update', 'delete'))
) PARTITION BY RANGE (created_at);
CREATE INDEX audit_logs_entity_idx ON audit_logs (organization_id, entity_type, entity_id, created_at DESC);
-- Rows outside every monthly partition land here instead of being rejected.
CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT;

-- Create the monthly partitions from `from_month` to `months_ahead` months after it.
-- Rows that already fell into the default partition for such a month are moved into it.
-- Run by `taskql db maintain` (owner role), at server start and from cron.
CREATE FUNCTION audit_logs_create_partitions(
    months_ahead integer DEFAULT 3,
    from_month date DEFAULT current_date
) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    first_day date;
    next_day date;
    partition_name text;
    created integer := 0;
BEGIN
    FOR i IN 0..months_ahead LOOP
        first_day := (date_trunc('month', from_month) + make_interval(months => i))::date;
        next_day := (first_day + interval '1 month')::date;
        partition_name := format('audit_logs_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
        CONTINUE WHEN to_regclass(format('public.%I', partition_name)) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE public.%I (LIKE public.audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS,'
            ' CHECK (created_at >= %L AND created_at < %L))',
            partition_name, first_day, next_day);
        EXECUTE format(
            'WITH moved AS (DELETE FROM public.audit_logs_default'
            ' WHERE created_at >= %L AND created_at < %L RETURNING *)'
            ' INSERT INTO public.%I SELECT * FROM moved',
            first_day, next_day, partition_name);
        EXECUTE format(
            'ALTER TABLE public.audit_logs ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
            partition_name, first_day, next_day);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Retention: drop whole monthly partitions that end on or before `cutoff`.
CREATE FUNCTION audit_logs_drop_partitions(cutoff date) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper_bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'public.audit_logs'::regclass AND c.relname <> 'audit_logs_default'
    LOOP
        IF part.upper_bound <= cutoff THEN
            EXECUTE format('ALTER TABLE public.audit_logs DETACH PARTITION public.%I', part.relname);
            EXECUTE format('DROP TABLE public.%I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;
REVOKE EXECUTE ON FUNCTION audit_logs_create_partitions(integer, date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audit_logs_drop_partitions(date) FROM PUBLIC;

SELECT audit_logs_create_partitions(3);

-- One function for every audited table, per statement (transition tables), so a bulk
-- insert of 1,000 rows writes its audit rows in one INSERT ... SELECT. SECURITY DEFINER:
-- the server role has no INSERT privilege on audit_logs, so it cannot forge entries.
-- The actor, request id, ip and user agent come from the transaction's settings.
CREATE FUNCTION audit_changes() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    tenant_column text := TG_ARGV[0];
    ignored text[] := ARRAY['updated_at', 'search_vector'];
    actor uuid := app_setting('app.user_id')::uuid;
    request text := app_setting('app.request_id');
    client inet := app_setting('app.client_ip')::inet;
    agent text := app_setting('app.user_agent');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_logs (organization_id, actor_id, action, entity_type, entity_id,
                                changes, request_id, ip_address, user_agent)
        SELECT (r ->> tenant_column)::uuid, actor, 'insert', TG_TABLE_NAME, (r ->> 'id')::uuid,
               jsonb_build_object('after', r), request, client, agent
        FROM (SELECT to_jsonb(n) - ignored AS r FROM new_rows n) AS rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO audit_logs (organization_id, actor_id, action, entity_type, entity_id,
                                changes, request_id, ip_address, user_agent)
        SELECT (r ->> tenant_column)::uuid, actor, 'delete', TG_TABLE_NAME, (r ->> 'id')::uuid,
               jsonb_build_object('before', r), request, client, agent
        FROM (SELECT to_jsonb(o) - ignored AS r FROM old_rows o) AS rows;
    ELSE
        INSERT INTO audit_logs (organization_id, actor_id, action, entity_type, entity_id,
                                changes, request_id, ip_address, user_agent)
        SELECT (pair.new_r ->> tenant_column)::uuid, actor, 'update', TG_TABLE_NAME,
               (pair.new_r ->> 'id')::uuid,
               jsonb_build_object('before', diff.before, 'after', diff.after),
               request, client, agent
        FROM (
            SELECT o.r AS old_r, n.r AS new_r
            FROM (SELECT to_jsonb(x) - ignored AS r FROM old_rows x) AS o
            JOIN (SELECT to_jsonb(y) - ignored AS r FROM new_rows y) AS n
              ON (o.r ->> 'id') = (n.r ->> 'id')
        ) AS pair
        CROSS JOIN LATERAL (
            SELECT jsonb_object_agg(k, pair.old_r -> k) AS before,
                   jsonb_object_agg(k, pair.new_r -> k) AS after
            FROM jsonb_object_keys(pair.new_r) AS k
            WHERE (pair.new_r -> k) IS DISTINCT FROM (pair.old_r -> k)
        ) AS diff
        WHERE diff.after IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;
"""
    + _TRIGGERS
)

BACKWARDS = (
    "\n".join(
        f"DROP TRIGGER {table}_audit_{event} ON {table};"
        for table in AUDITED
        for event in ("insert", "update", "delete")
    )
    + r"""
DROP FUNCTION audit_changes();
DROP FUNCTION audit_logs_drop_partitions(date);
DROP FUNCTION audit_logs_create_partitions(integer, date);
DROP TABLE audit_logs;
"""
)


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
