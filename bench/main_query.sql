SELECT json_build_object('name', p.name, 'tasks', coalesce((
    SELECT json_agg(json_build_object(
        'id', t.id, 'title', t.title, 'status', t.status, 'priority', t.priority,
        'assignee', (SELECT json_build_object('id', u.id, 'displayName', u.display_name)
                     FROM users u WHERE u.id = t.assignee_id),
        'comments', coalesce((
            SELECT json_agg(json_build_object('id', c.id, 'content', c.content,
                       'author', (SELECT json_build_object('id', a.id, 'displayName', a.display_name)
                                  FROM users a WHERE a.id = c.author_id))
                       ORDER BY c.created_at, c.id)
            FROM (SELECT * FROM task_comments c
                  WHERE c.organization_id = t.organization_id AND c.task_id = t.id AND c.deleted_at IS NULL
                  ORDER BY c.created_at, c.id LIMIT 3) c), '[]'::json)
    ) ORDER BY t.created_at, t.id)
    FROM (SELECT * FROM tasks t WHERE t.organization_id = p.organization_id AND t.project_id = p.id
          ORDER BY t.created_at, t.id LIMIT 50) t), '[]'::json))
FROM projects p WHERE p.organization_id = $1 AND p.id = $2
