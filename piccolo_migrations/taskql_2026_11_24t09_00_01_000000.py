"""Extensions and the shared functions every later migration uses."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "extensions, uuidv7() on PG < 18, updated_at trigger function"

FORWARDS = r"""
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- PostgreSQL 18 has uuidv7() built in; on 15-17 we define the same function in public, so
-- column defaults read `uuidv7()` on every version. 48-bit Unix milliseconds, version 7.
DO $do$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_proc
        WHERE proname = 'uuidv7' AND pronamespace = 'pg_catalog'::regnamespace
    ) THEN
        CREATE FUNCTION public.uuidv7() RETURNS uuid
        LANGUAGE sql VOLATILE PARALLEL SAFE
        AS $fn$
            SELECT encode(
                set_bit(set_bit(
                    overlay(uuid_send(gen_random_uuid())
                            PLACING substring(int8send(
                                floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
                            ) FROM 3)
                            FROM 1 FOR 6),
                52, 1), 53, 1),
                'hex')::uuid
        $fn$;
        COMMENT ON FUNCTION public.uuidv7() IS
            'UUIDv7 (RFC 9562) for PostgreSQL < 18, where it is not built in';
    END IF;
END
$do$;

-- Settings read by policies and triggers, set transaction-locally per request by
-- db.tenancy. NULLIF: a pooled connection reads '' (not NULL) once a local setting ended.
CREATE FUNCTION app_setting(name text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(current_setting(name, true), '') $$;

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
"""

BACKWARDS = r"""
DROP FUNCTION set_updated_at();
DROP FUNCTION app_setting(text);
DO $do$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_proc
        WHERE proname = 'uuidv7' AND pronamespace = 'public'::regnamespace
    ) THEN
        DROP FUNCTION public.uuidv7();
    END IF;
END
$do$;
DROP EXTENSION IF EXISTS pg_trgm;
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
