"""Invitations: joining an organization takes the invitee's consent.

An admin (or owner) invites an e-mail address with a role; the person who signs in with that
e-mail sees the invitation and accepts it (which creates the membership with the invited
role) or declines it; an admin revokes it; it expires. An invitation is never changed
otherwise: to change its role, revoke it and invite again.

Who sees what (row-level security, enabled and FORCED, as the server role):

- the current tenant's admins and owners read and manage its invitations (one rule, as in
  the API: members and viewers do not see who was invited);
- the invitee, who is not yet a member, reads and answers the invitations addressed to their
  own e-mail. The e-mail is looked up from ``app.user_id`` by ``app_user_email()``: a plain
  SQL function running as the caller (no SECURITY DEFINER), so the users policy decides what
  it can read. It is a function, not a sub-select in the policy, because a sub-select on
  ``users`` would make the policies of ``organization_members`` (which now read invitations)
  and ``users`` (which reads members) recursive;
- an invitee may insert exactly the membership an acceptable invitation grants: their own
  user, the invitation's organization, role and inviter, while it is pending and unexpired;
- an invitee sees the name of an organization that invites them (``organizations_invited``).

Without ``app.user_id`` and ``app.organization_id`` no invitation is visible at all.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:16:000000"
VERSION = "1.38.0"
DESCRIPTION = "organization_invitations: invite, accept, decline, revoke, expire (RLS, audited)"

ORG = "(SELECT NULLIF(current_setting('app.organization_id', true), '')::uuid)"
USER = "(SELECT NULLIF(current_setting('app.user_id', true), '')::uuid)"
ROLE = "(SELECT NULLIF(current_setting('app.role', true), ''))"
ME = "(SELECT app_user_email())"
ADMINS = f"{ROLE} IN ('owner', 'admin')"
OWNER_RULE = f"(role <> 'owner' OR {ROLE} = 'owner')"
PENDING = "accepted_at IS NULL AND declined_at IS NULL AND revoked_at IS NULL"

#: The invitation that lets the current user insert this membership row.
INVITED = f"""EXISTS (
        SELECT 1 FROM organization_invitations i
        WHERE i.organization_id = organization_members.organization_id
          AND lower(i.email) = {ME}
          AND i.role = organization_members.role
          AND i.invited_by IS NOT DISTINCT FROM organization_members.invited_by
          AND i.accepted_at IS NULL AND i.declined_at IS NULL AND i.revoked_at IS NULL
          AND i.expires_at > now())"""

#: Migration 6's rule, restored by backwards.
ADMIN_ADDS_BEFORE = f"{ADMINS} AND {OWNER_RULE}"

FORWARDS = rf"""
-- The signed-in user's e-mail, lower-cased; NULL without app.user_id (matches nothing).
CREATE FUNCTION app_user_email() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, public
AS $$
    SELECT lower(u.email) FROM public.users u
    WHERE u.id = NULLIF(current_setting('app.user_id', true), '')::uuid
$$;
REVOKE EXECUTE ON FUNCTION app_user_email() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_user_email() TO taskql_server, taskql_maintenance;

CREATE TABLE organization_invitations (
    id              uuid        NOT NULL DEFAULT uuidv7(),
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- Whoever signs in with this e-mail (any case) is the invitee; it need not have an account yet.
    email           text        NOT NULL,
    role            text        NOT NULL DEFAULT 'member',
    invited_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    declined_at     timestamptz,
    revoked_at      timestamptz,
    PRIMARY KEY (organization_id, id),
    -- The inviter is a member of the same organization; the invitation stays if they leave.
    CONSTRAINT organization_invitations_inviter_fkey FOREIGN KEY (organization_id, invited_by)
        REFERENCES organization_members (organization_id, user_id) ON DELETE SET NULL (invited_by),
    CONSTRAINT organization_invitations_email_format CHECK (
        char_length(email) <= 254
        AND email ~ '^[A-Za-z0-9._%+''-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{{2,}}$'
        AND email !~ '^\.|\.\.|\.@'
    ),
    CONSTRAINT organization_invitations_role_domain CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    CONSTRAINT organization_invitations_expiry_after_creation CHECK (expires_at > created_at),
    -- Pending, or exactly one outcome.
    CONSTRAINT organization_invitations_one_outcome CHECK (num_nonnulls(accepted_at, declined_at, revoked_at) <= 1)
);
-- One pending invitation per organization and e-mail; also the invitee's lookup of an
-- organization that invites them (organizations_invited).
CREATE UNIQUE INDEX organization_invitations_pending_key
    ON organization_invitations (organization_id, lower(email)) WHERE {PENDING};
-- The invitee's invitations, across organizations (viewer.invitations, the invitee policy).
CREATE INDEX organization_invitations_email_idx ON organization_invitations (lower(email), created_at, id);
-- An organization's invitations, oldest first (organization.invitations).
CREATE INDEX organization_invitations_created_idx ON organization_invitations (organization_id, created_at, id);
-- ON DELETE SET NULL when the inviter leaves.
CREATE INDEX organization_invitations_invited_by_idx ON organization_invitations (organization_id, invited_by)
    WHERE invited_by IS NOT NULL;

-- An invitation is answered once and otherwise never changes (the inviter may go: SET NULL).
CREATE FUNCTION organization_invitations_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.organization_id <> OLD.organization_id OR NEW.email <> OLD.email
       OR NEW.role <> OLD.role OR NEW.created_at <> OLD.created_at
       OR NEW.expires_at <> OLD.expires_at
       OR (NEW.invited_by IS DISTINCT FROM OLD.invited_by AND NEW.invited_by IS NOT NULL) THEN
        RAISE EXCEPTION 'invitation % cannot be changed, only answered or revoked', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organization_invitations_immutable';
    END IF;
    IF num_nonnulls(OLD.accepted_at, OLD.declined_at, OLD.revoked_at) > 0
       AND (NEW.accepted_at IS DISTINCT FROM OLD.accepted_at
            OR NEW.declined_at IS DISTINCT FROM OLD.declined_at
            OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at) THEN
        RAISE EXCEPTION 'invitation % has already been answered or revoked', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organization_invitations_answered';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER organization_invitations_guard BEFORE UPDATE ON organization_invitations
    FOR EACH ROW EXECUTE FUNCTION organization_invitations_guard();

CREATE TRIGGER organization_invitations_audit_insert AFTER INSERT ON organization_invitations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_changes('organization_id');
CREATE TRIGGER organization_invitations_audit_update AFTER UPDATE ON organization_invitations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_changes('organization_id');
CREATE TRIGGER organization_invitations_audit_delete AFTER DELETE ON organization_invitations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_changes('organization_id');

ALTER TABLE organization_invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_invitations FORCE ROW LEVEL SECURITY;

-- The current tenant's admins and owners: read and manage its invitations.
CREATE POLICY organization_invitations_tenant_admins ON organization_invitations
    USING (organization_id = {ORG} AND {ADMINS})
    WITH CHECK (organization_id = {ORG} AND {ADMINS});
-- The invitee: the invitations addressed to their own e-mail, in any organization.
CREATE POLICY organization_invitations_invitee_reads ON organization_invitations FOR SELECT
    USING (lower(email) = {ME});
CREATE POLICY organization_invitations_invitee_answers ON organization_invitations FOR UPDATE
    USING (lower(email) = {ME}) WITH CHECK (lower(email) = {ME});
-- Restrictive: an invitation is created pending, by the acting admin, owners only by owners.
CREATE POLICY organization_invitations_admin_invites ON organization_invitations AS RESTRICTIVE FOR INSERT
    WITH CHECK ({ADMINS} AND {OWNER_RULE} AND invited_by = {USER} AND {PENDING});
-- Restrictive: only a pending invitation is answered; revoked by the tenant's admins (owner
-- invitations by owners), accepted (unexpired) or declined by the invitee only.
CREATE POLICY organization_invitations_answers ON organization_invitations AS RESTRICTIVE FOR UPDATE
    USING ({PENDING})
    WITH CHECK (
        (revoked_at IS NOT NULL AND organization_id = {ORG} AND {ADMINS} AND {OWNER_RULE})
        OR (revoked_at IS NULL AND lower(email) = {ME} AND (accepted_at IS NULL OR expires_at > now()))
    );

-- Organizations: also, read-only, those with a pending invitation to the current user.
CREATE POLICY organizations_invited ON organizations FOR SELECT
    USING (EXISTS (SELECT 1 FROM organization_invitations i
                   WHERE i.organization_id = organizations.id AND lower(i.email) = {ME}
                     AND i.accepted_at IS NULL AND i.declined_at IS NULL AND i.revoked_at IS NULL
                     AND i.expires_at > now()));

-- Members: the invitee inserts the membership their invitation grants, and nothing else.
CREATE POLICY organization_members_invitee_joins ON organization_members FOR INSERT
    WITH CHECK (user_id = {USER} AND {INVITED});
DROP POLICY organization_members_admin_adds ON organization_members;
CREATE POLICY organization_members_admin_adds ON organization_members AS RESTRICTIVE FOR INSERT
    WITH CHECK (({ADMINS} AND {OWNER_RULE}) OR (user_id = {USER} AND {INVITED}));

GRANT SELECT, INSERT, UPDATE ON organization_invitations TO taskql_server;
GRANT SELECT, INSERT, UPDATE, DELETE ON organization_invitations TO taskql_maintenance;
"""

BACKWARDS = f"""
REVOKE ALL ON organization_invitations FROM taskql_server, taskql_maintenance;
DROP POLICY organization_members_admin_adds ON organization_members;
CREATE POLICY organization_members_admin_adds ON organization_members AS RESTRICTIVE FOR INSERT
    WITH CHECK ({ADMIN_ADDS_BEFORE});
DROP POLICY organization_members_invitee_joins ON organization_members;
DROP POLICY organizations_invited ON organizations;
DROP TABLE organization_invitations;
DROP FUNCTION organization_invitations_guard();
DROP FUNCTION app_user_email();
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
