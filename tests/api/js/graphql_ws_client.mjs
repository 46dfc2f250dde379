// The JavaScript `graphql-ws` client (npm) subscribing to taskql: prints one JSON line per
// event ({"next": data}), then {"closed": code, "reason": ...} when the server closes the
// socket. Arguments: URL, token, organization, project id. Used by
// tests/api/test_realtime_clients.py, which installs graphql-ws and ws into a temp folder.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, token, organization, project] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { token, organization },
  retryAttempts: 0,
  shouldRetry: () => false,
  on: {
    connected: () => print({ connected: true }),
    closed: (event) => { print({ closed: event.code, reason: event.reason }); process.exit(0); },
  },
});
client.subscribe(
  {
    query: 'subscription($p: ID!) { taskChanged(projectId: $p) { action task { title } } }',
    variables: { p: project },
  },
  {
    next: (value) => print({ next: value.data ?? null, errors: value.errors ?? null }),
    error: (error) => print({ error: String(error?.reason ?? error?.message ?? error) }),
    complete: () => print({ complete: true }),
  },
);
