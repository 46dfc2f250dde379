"""The task tree has a maximum depth, and the cycle check is linear in it.

Until now ``tasks_prevent_cycle`` walked up from the new parent with ``CYCLE id SET is_cycle
USING path``: every step copied the path array, so a move cost O(depth^2) (45 ms at depth
500, 2.4 s at 6,000, the statement timeout at 10,000, holding the project's tree lock all
the while), and nothing bounded the depth (``createTasks`` built a 10,000-deep chain in ten
calls, whose ``ancestors`` then ran into the statement timeout). Now:

- ``app_max_task_depth()``: the limit, from the ``taskql.max_task_depth`` setting (every
  server connection sets it from ``TASKQL_MAX_TASK_DEPTH``; the node cost of ``ancestors``
  uses the same value), 100 when unset. A root task is at depth 1.
- A move (``UPDATE OF parent_task_id``) walks up from the new parent without a path array:
  the tree is acyclic (this trigger, serialized per project by the advisory lock, keeps it
  so), and the walk stops past the limit either way. Then it measures the height of the
  moved subtree (stopping past the limit too) and refuses the move when the parent's depth
  plus that height exceeds the limit (``tasks_max_depth``).
- An insert under a parent (``tasks_limit_depth``) refuses a parent already at the limit.
  It takes the project's tree lock in shared mode: inserts do not wait for each other, and
  a concurrent move (exclusive) cannot deepen the parent between the check and the commit.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:18:000000"
VERSION = "1.38.0"
DESCRIPTION = "task tree: maximum depth enforced, linear cycle check"

FORWARDS = r"""
CREATE FUNCTION app_max_task_depth() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
RETURN coalesce(nullif(pg_catalog.current_setting('taskql.max_task_depth', true), '')::integer, 100);
COMMENT ON FUNCTION app_max_task_depth() IS
    'Deepest task tree allowed (a root task is at depth 1): setting taskql.max_task_depth, default 100.';
GRANT EXECUTE ON FUNCTION app_max_task_depth() TO taskql_server, taskql_maintenance;

CREATE FUNCTION tasks_depth_of(p_organization_id uuid, p_task_id uuid, p_stop integer)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, public
-- The depth of a task (1 for a root), counting no further than p_stop + 1.
BEGIN ATOMIC
    WITH RECURSIVE up (id, parent_task_id, depth) AS (
        SELECT t.id, t.parent_task_id, 1 FROM tasks t
        WHERE t.organization_id = p_organization_id AND t.id = p_task_id
        UNION ALL
        SELECT t.id, t.parent_task_id, up.depth + 1 FROM up
        JOIN tasks t ON t.organization_id = p_organization_id AND t.id = up.parent_task_id
        WHERE up.depth <= p_stop
    )
    SELECT max(depth) FROM up;
END;
GRANT EXECUTE ON FUNCTION tasks_depth_of(uuid, uuid, integer) TO taskql_server, taskql_maintenance;

CREATE OR REPLACE FUNCTION tasks_prevent_cycle() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    limit_ integer := app_max_task_depth();
    closes_cycle boolean;
    parent_depth integer;
    height integer;
BEGIN
    IF NEW.parent_task_id = NEW.id THEN
        RETURN NEW;  -- reported by the tasks_not_own_parent CHECK, which runs after us
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('taskql.task_tree:' || NEW.project_id::text, 0));
    -- Up from the new parent, linear: no path array (the tree is acyclic), bounded.
    WITH RECURSIVE up (id, parent_task_id, depth) AS (
        SELECT t.id, t.parent_task_id, 1 FROM tasks t
        WHERE t.organization_id = NEW.organization_id AND t.id = NEW.parent_task_id
        UNION ALL
        SELECT t.id, t.parent_task_id, up.depth + 1 FROM up
        JOIN tasks t ON t.organization_id = NEW.organization_id AND t.id = up.parent_task_id
        WHERE up.id <> NEW.id AND up.depth <= limit_
    )
    SELECT coalesce(bool_or(id = NEW.id), false), max(depth) INTO closes_cycle, parent_depth FROM up;
    IF closes_cycle THEN
        RAISE EXCEPTION 'task % cannot be moved under its own descendant %', NEW.id, NEW.parent_task_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_no_cycle',
                  HINT = 'Move the descendant out first, or choose another parent.';
    END IF;
    -- The moved subtree's height (1: the task alone), bounded too.
    WITH RECURSIVE down (id, level) AS (
        SELECT NEW.id, 1
        UNION ALL
        SELECT t.id, down.level + 1 FROM down
        JOIN tasks t ON t.organization_id = NEW.organization_id AND t.parent_task_id = down.id
        WHERE down.level <= limit_
    )
    SELECT max(level) INTO height FROM down;
    IF coalesce(parent_depth, 0) + height > limit_ THEN
        RAISE EXCEPTION 'moving task % there would make the tree % deep; the limit is %',
                NEW.id, coalesce(parent_depth, 0) + height, limit_
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_max_depth';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION tasks_limit_depth() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    limit_ integer := app_max_task_depth();
BEGIN
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended('taskql.task_tree:' || NEW.project_id::text, 0));
    IF coalesce(tasks_depth_of(NEW.organization_id, NEW.parent_task_id, limit_), 0) >= limit_ THEN
        RAISE EXCEPTION 'a task under % would be deeper than % levels', NEW.parent_task_id, limit_
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_max_depth';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_limit_depth BEFORE INSERT ON tasks
    FOR EACH ROW WHEN (NEW.parent_task_id IS NOT NULL)
    EXECUTE FUNCTION tasks_limit_depth();
"""

BACKWARDS = r"""
DROP TRIGGER tasks_limit_depth ON tasks;
DROP FUNCTION tasks_limit_depth();
CREATE OR REPLACE FUNCTION tasks_prevent_cycle() RETURNS trigger
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
DROP FUNCTION tasks_depth_of(uuid, uuid, integer);
DROP FUNCTION app_max_task_depth();
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
