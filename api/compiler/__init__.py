"""Compiled queries: a whole GraphQL query answered by ONE SQL statement that builds the JSON.

The resolvers (``api/types``) stay the reference implementation. For a query whose every
field this module knows, the view skips GraphQL execution: the selection set becomes one
statement of nested ``json_build_object``/``json_agg`` sub-queries (what PostGraphile and
Hasura do), run as the server role inside the request's tenant transaction, so row-level
security applies to every row exactly as it does to the resolvers' statements. PostgreSQL
returns the response's ``data`` as text and Python never builds the objects.

What is compiled: query operations over viewer, organization, project, task, search and the
types reachable from them (users, members, projects, tasks, comments, audit entries, search
hits and their union of projects and tasks), their connections (every ordering, filter,
cursor and direction), ``ancestors``, ``taskCountsByStatus``, fragments, aliases,
``__typename``, ``@skip``/``@include``.
``auditLog`` too, for callers with the admin role or higher (the role is checked per
request: a rendered statement is shared by every caller of the same query and variables).
Anything else — mutations, ``node``, comment history — and any request the resolvers would
answer with an error (bad ids, bad page sizes, missing tenant, a role too low, over the node
limit, invalid documents) goes to the resolvers, which give the reference
answer. ``tests/api/test_differential.py`` generates queries from the schema and requires equal
responses on both paths.

The package, in the order a request meets it:

- ``planner``: ``Compiler``, the plans (parsed, validated, bounded documents made only of
  compilable fields) and statements, both cached;
- ``render``: ``Render``, one request's statement: field collection with the request's
  variables, objects and connections as JSON;
- ``fields``: every field the compiler renders, by type: the field registry's scalars and
  references (``api/registry.py``, declared beside each type) plus the relations;
- ``scalars``: the registry's entries as SQL expressions (ids, times, enums, floats,
  addresses, privacy rules);
- ``relations``: connections from the same ``Source`` declarations the resolvers' loaders
  page (``db/queries``), the task tree, status counts, search and the audit log;
- ``arguments``: the arguments and input fields each field handles, read as the resolvers
  read them;
- ``plans``: ``Plan``, ``Statement`` and ``Unsupported``.

Every value a client sends is bound as a parameter; SQL text comes only from constants of
this code base and from GraphQL names, which the validated grammar restricts to
``[_A-Za-z][_0-9A-Za-z]*``.
"""

from api.compiler.arguments import ARGUMENTS, INPUT_FIELDS
from api.compiler.fields import CONNECTIONS, FIELDS
from api.compiler.planner import Compiler
from api.compiler.plans import Plan, Statement, Unsupported

__all__ = [
    "ARGUMENTS",
    "CONNECTIONS",
    "FIELDS",
    "INPUT_FIELDS",
    "Compiler",
    "Plan",
    "Statement",
    "Unsupported",
]
