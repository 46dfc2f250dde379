// Runs every graphql-http server audit against the URL given; prints the ones that
// did not pass, then a JSON summary (tests/test_graphql_http_audit.py).
import { serverAudits } from 'graphql-http';
const url = process.argv[2];
const results = await Promise.all(serverAudits({ url, fetchFn: fetch }).map(async (a) => ({ name: a.name, ...(await a.fn()) })));
let bad = 0;
for (const r of results) {
  if (r.status !== 'ok') { console.log(r.status.toUpperCase(), r.name, r.reason || ''); bad += r.name.startsWith('MUST') ? 1 : 0; }
}
console.log(JSON.stringify({ total: results.length, ok: results.filter(r => r.status === 'ok').length, warn: results.filter(r => r.status === 'warn').length, error: results.filter(r => r.status === 'error').length }));
