"""Users, sessions, organizations (tenants) and their members."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:02:000000"
VERSION = "1.38.0"
DESCRIPTION = "users, sessions, organizations, organization_members"

FORWARDS = r"""
CREATE TABLE users (
    id            uuid        NOT NULL DEFAULT uuidv7() PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- One @, no whitespace, a dot in the domain, no leading/trailing dot; RFC 5321 length.
    CONSTRAINT users_email_format CHECK (
        char_length(email) <= 254
        AND email ~ '^[A-Za-z0-9._%+''-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$'
        AND email !~ '^\.|\.\.|\.@'
    ),
    CONSTRAINT users_display_name_present CHECK (
        btrim(display_name) <> '' AND char_length(display_name) <= 200
    )
);
-- Case-insensitive uniqueness; also the log-in lookup index.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE sessions (
    id           uuid        NOT NULL DEFAULT uuidv7() PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the opaque bearer token; the token itself is never stored.
    token_hash   bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    ip_address   inet,
    user_agent   text,
    CONSTRAINT sessions_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT sessions_expiry_after_creation CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX sessions_token_hash_key ON sessions (token_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE organizations (
    id         uuid        NOT NULL DEFAULT uuidv7() PRIMARY KEY,
    name       text        NOT NULL,
    slug       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organizations_slug_format CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
    CONSTRAINT organizations_name_present CHECK (btrim(name) <> '' AND char_length(name) <= 200)
);
CREATE UNIQUE INDEX organizations_slug_key ON organizations (slug);
CREATE TRIGGER organizations_set_updated_at BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE organization_members (
    id              uuid        NOT NULL DEFAULT uuidv7(),
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text        NOT NULL DEFAULT 'member',
    invited_by      uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    -- Target of the composite foreign keys that make an assignee a member of the same tenant.
    CONSTRAINT organization_members_user_key UNIQUE (organization_id, user_id),
    CONSTRAINT organization_members_role_domain CHECK (role IN ('owner', 'admin', 'member', 'viewer'))
);
-- "Which organizations do I belong to" and ON DELETE CASCADE from users.
CREATE INDEX organization_members_user_id_idx ON organization_members (user_id);
CREATE INDEX organization_members_invited_by_idx ON organization_members (invited_by)
    WHERE invited_by IS NOT NULL;
CREATE TRIGGER organization_members_set_updated_at BEFORE UPDATE ON organization_members
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
"""

BACKWARDS = r"""
DROP TABLE organization_members;
DROP TABLE organizations;
DROP TABLE sessions;
DROP TABLE users;
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
