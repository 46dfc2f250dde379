"""Projects, the task tree and comments: the tenant-owned work data."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:03:000000"
VERSION = "1.38.0"
DESCRIPTION = "projects, tasks (tree without cycles), task_comments (with edit history)"

LINT_ALLOW = {
    "prefer-bigint-over-smallint": "tasks.priority is a 0..4 domain (CHECK tasks_priority_domain); "
    "it can never approach the smallint limit.",
}

FORWARDS = r"""
CREATE TABLE projects (
    id              uuid        NOT NULL DEFAULT uuidv7(),
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    description     text,
    status          text        NOT NULL DEFAULT 'active',
    created_by      uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    archived_at     timestamptz,
    search_vector   tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, name), 'A')
        || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')
    ) STORED,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT projects_name_present CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    CONSTRAINT projects_status_domain CHECK (status IN ('planned', 'active', 'on_hold', 'completed'))
);
-- Live projects of a tenant, newest first (keyset: created_at, id).
CREATE INDEX projects_live_idx ON projects (organization_id, created_at DESC, id DESC)
    WHERE archived_at IS NULL;
CREATE INDEX projects_search_idx ON projects USING gin (search_vector);
CREATE INDEX projects_created_by_idx ON projects (created_by) WHERE created_by IS NOT NULL;
CREATE TRIGGER projects_set_updated_at BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tasks (
    id              uuid        NOT NULL DEFAULT uuidv7(),
    organization_id uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    parent_task_id  uuid,
    title           text        NOT NULL,
    description     text,
    status          text        NOT NULL DEFAULT 'todo',
    -- 0 none, 1 low, 2 medium, 3 high, 4 urgent.
    priority        smallint    NOT NULL DEFAULT 0,
    assignee_id     uuid,
    created_by      uuid        REFERENCES users (id) ON DELETE SET NULL,
    due_date        timestamptz,
    completed_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    search_vector   tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')
    ) STORED,
    PRIMARY KEY (organization_id, id),
    -- Target of the parent key below: a parent is in the same tenant AND the same project.
    CONSTRAINT tasks_project_task_key UNIQUE (organization_id, project_id, id),
    CONSTRAINT tasks_project_fkey FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT tasks_parent_fkey FOREIGN KEY (organization_id, project_id, parent_task_id)
        REFERENCES tasks (organization_id, project_id, id) ON DELETE CASCADE,
    -- The assignee must be a member of the task's organization; leaving it unassigns.
    CONSTRAINT tasks_assignee_fkey FOREIGN KEY (organization_id, assignee_id)
        REFERENCES organization_members (organization_id, user_id) ON DELETE SET NULL (assignee_id),
    CONSTRAINT tasks_not_own_parent CHECK (parent_task_id <> id),
    CONSTRAINT tasks_title_present CHECK (btrim(title) <> '' AND char_length(title) <= 500),
    CONSTRAINT tasks_status_domain CHECK (status IN ('todo', 'in_progress', 'blocked', 'done', 'cancelled')),
    CONSTRAINT tasks_priority_domain CHECK (priority BETWEEN 0 AND 4),
    CONSTRAINT tasks_completed_at_matches_status CHECK ((status = 'done') = (completed_at IS NOT NULL))
);
-- Keyset pagination of a project's tasks, one index per ordering the API offers.
CREATE INDEX tasks_project_created_idx ON tasks (organization_id, project_id, created_at, id);
CREATE INDEX tasks_project_updated_idx ON tasks (organization_id, project_id, updated_at, id);
CREATE INDEX tasks_project_priority_idx ON tasks (organization_id, project_id, priority, id);
-- Tasks without a due date sort last: the key is coalesce(due_date, 'infinity').
CREATE INDEX tasks_project_due_idx
    ON tasks (organization_id, project_id, (coalesce(due_date, 'infinity'::timestamptz)), id);
CREATE INDEX tasks_project_status_idx ON tasks (organization_id, project_id, status);
-- Subtasks loader, and the parent key's ON DELETE CASCADE.
CREATE INDEX tasks_parent_idx ON tasks (organization_id, parent_task_id)
    WHERE parent_task_id IS NOT NULL;
-- Filter by assignee, and ON DELETE SET NULL when a member leaves.
CREATE INDEX tasks_assignee_idx ON tasks (organization_id, assignee_id)
    WHERE assignee_id IS NOT NULL;
CREATE INDEX tasks_created_by_idx ON tasks (created_by) WHERE created_by IS NOT NULL;
CREATE INDEX tasks_search_idx ON tasks USING gin (search_vector);
CREATE INDEX tasks_title_trgm_idx ON tasks USING gin (title gin_trgm_ops);
CREATE TRIGGER tasks_set_updated_at BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- completed_at follows status, so callers cannot get it wrong (the CHECK still guards).
CREATE FUNCTION tasks_sync_completed_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.status = 'done' AND NEW.completed_at IS NULL THEN
        NEW.completed_at := now();
    ELSIF NEW.status <> 'done' THEN
        NEW.completed_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_sync_completed_at BEFORE INSERT OR UPDATE OF status, completed_at ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_sync_completed_at();

-- A CHECK cannot see other rows: walk up from the new parent and refuse the move if the
-- task itself is among the ancestors. Moves within one project are serialized by an
-- advisory lock, so two concurrent moves cannot each pass and together form a cycle.
-- Only a changed parent is checked: a new row has no descendants, so an INSERT cannot
-- close a cycle (and self-parenting is the CHECK above).
CREATE FUNCTION tasks_prevent_cycle() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.parent_task_id = NEW.id THEN
        RETURN NEW;  -- reported by the tasks_not_own_parent CHECK, which runs after us
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('taskql.task_tree:' || NEW.project_id::text, 0));
    IF EXISTS (
        WITH RECURSIVE ancestors (id, parent_task_id) AS (
            SELECT t.id, t.parent_task_id FROM tasks t
            WHERE t.organization_id = NEW.organization_id AND t.id = NEW.parent_task_id
            UNION ALL
            SELECT t.id, t.parent_task_id FROM tasks t
            JOIN ancestors a ON t.organization_id = NEW.organization_id AND t.id = a.parent_task_id
        ) CYCLE id SET is_cycle USING path
        SELECT 1 FROM ancestors WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'task % cannot be moved under its own descendant %', NEW.id, NEW.parent_task_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_no_cycle',
                  HINT = 'Move the descendant out first, or choose another parent.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_prevent_cycle BEFORE UPDATE OF parent_task_id ON tasks
    FOR EACH ROW
    WHEN (NEW.parent_task_id IS NOT NULL AND NEW.parent_task_id IS DISTINCT FROM OLD.parent_task_id)
    EXECUTE FUNCTION tasks_prevent_cycle();

CREATE TABLE task_comments (
    id              uuid        NOT NULL DEFAULT uuidv7(),
    organization_id uuid        NOT NULL,
    task_id         uuid        NOT NULL,
    author_id       uuid        REFERENCES users (id) ON DELETE SET NULL,
    content         text        NOT NULL,
    -- Previous versions, oldest first: [{"content", "replaced_at", "replaced_by"}].
    content_history jsonb       NOT NULL DEFAULT '[]',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    edited_at       timestamptz,
    deleted_at      timestamptz,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT task_comments_task_fkey FOREIGN KEY (organization_id, task_id)
        REFERENCES tasks (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT task_comments_content_present CHECK (btrim(content) <> '' AND char_length(content) <= 10000),
    CONSTRAINT task_comments_history_is_array CHECK (jsonb_typeof(content_history) = 'array')
);
-- Comments loader (task's comments in order) and the task key's ON DELETE CASCADE, which a
-- partial "live rows" index could not serve.
CREATE INDEX task_comments_task_idx ON task_comments (organization_id, task_id, created_at, id);
CREATE INDEX task_comments_author_idx ON task_comments (author_id) WHERE author_id IS NOT NULL;
CREATE TRIGGER task_comments_set_updated_at BEFORE UPDATE ON task_comments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE FUNCTION task_comments_keep_history() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.content IS DISTINCT FROM OLD.content THEN
        NEW.content_history := OLD.content_history || jsonb_build_array(jsonb_build_object(
            'content', OLD.content,
            'replaced_at', now(),
            'replaced_by', app_setting('app.user_id')
        ));
        NEW.edited_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER task_comments_keep_history BEFORE UPDATE OF content ON task_comments
    FOR EACH ROW EXECUTE FUNCTION task_comments_keep_history();
"""

BACKWARDS = r"""
DROP TABLE task_comments;
DROP FUNCTION task_comments_keep_history();
DROP TABLE tasks;
DROP FUNCTION tasks_prevent_cycle();
DROP FUNCTION tasks_sync_completed_at();
DROP TABLE projects;
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
