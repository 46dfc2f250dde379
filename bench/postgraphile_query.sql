-- The main query's full response (the same JSON as taskql's: global ids, edges/nodes, enum
-- names) as ONE statement in PostGraphile 5's shape: each list a LATERAL sub-select,
-- json_build_object/json_agg per level, ordered by the sort key and the primary key.
-- Written by hand on 2026-12-02 after that shape (PostGraphile itself was not run: its
-- generated statement is not recorded anywhere in this project). $1 the tenant (from
-- app_begin_request), $2 the project. Global ids with taskql's gql_id() (migration 10).
SELECT json_build_object('name', p.name, 'tasks', json_build_object('edges', coalesce(t.edges, '[]'::json)))
FROM projects p
LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object('node', json_build_object(
        'id', gql_id('Task', t.id), 'title', t.title, 'status', upper(t.status),
        'priority', t.priority,
        'assignee', CASE WHEN u.id IS NOT NULL
                         THEN json_build_object('id', gql_id('User', u.id), 'displayName', u.display_name) END,
        'comments', json_build_object('nodes', coalesce(c.nodes, '[]'::json))
    )) ORDER BY t.created_at, t.id) AS edges
    FROM (SELECT * FROM tasks t
          WHERE t.organization_id = p.organization_id AND t.project_id = p.id
          ORDER BY t.created_at, t.id LIMIT 50) t
    LEFT JOIN users u ON u.id = t.assignee_id
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_object(
            'id', gql_id('Comment', c.id), 'content', c.content,
            'author', CASE WHEN a.id IS NOT NULL
                           THEN json_build_object('id', gql_id('User', a.id), 'displayName', a.display_name) END
        ) ORDER BY c.created_at, c.id) AS nodes
        FROM (SELECT * FROM task_comments c
              WHERE c.organization_id = t.organization_id AND c.task_id = t.id AND c.deleted_at IS NULL
              ORDER BY c.created_at, c.id LIMIT 3) c
        LEFT JOIN users a ON a.id = c.author_id
    ) c ON true
) t ON true
WHERE p.organization_id = $1 AND p.id = $2
