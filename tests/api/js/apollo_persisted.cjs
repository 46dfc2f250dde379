// Apollo Client's persisted-queries link against a running `taskql serve`
// (tests/test_apollo_persisted.py). argv: the GraphQL URL and a JSON list of
// {token, org} callers. Prints one JSON object: every HTTP request the link made, and
// the data each operation answered.
const { ApolloClient, InMemoryCache, HttpLink, gql } = require("@apollo/client/core");
const { createPersistedQueryLink } = require("@apollo/client/link/persisted-queries");
const { createHash } = require("node:crypto");

const [url, callersJson] = process.argv.slice(2);
const callers = JSON.parse(callersJson);
const requests = [];

async function recordingFetch(input, init) {
  const target = new URL(typeof input === "string" ? input : input.url);
  const body = init && init.body ? JSON.parse(init.body) : null;
  const extensions = body ? body.extensions : JSON.parse(target.searchParams.get("extensions") || "null");
  const response = await fetch(input, init);
  requests.push({
    method: (init && init.method) || "GET",
    withQuery: Boolean(body ? body.query : target.searchParams.get("query")),
    hash: extensions && extensions.persistedQuery ? extensions.persistedQuery.sha256Hash : null,
    status: response.status,
    cacheControl: response.headers.get("cache-control"),
  });
  return response;
}

function client(caller) {
  const link = createPersistedQueryLink({
    sha256: (text) => createHash("sha256").update(text).digest("hex"),
    useGETForHashedQueries: true,
  }).concat(
    new HttpLink({
      uri: url,
      fetch: recordingFetch,
      headers: { Authorization: `Bearer ${caller.token}`, "X-Organization": caller.org },
    }),
  );
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

const BOARD = gql`
  query Board {
    organization { name projects(first: 5) { nodes { id name } } }
  }
`;
const CREATE = gql`
  mutation New($name: String!) {
    createProject(input: { name: $name }) { project { id name } errors { code } }
  }
`;

async function main() {
  const out = { steps: [] };
  const step = async (name, run) => {
    const before = requests.length;
    const result = await run();
    out.steps.push({ name, data: result.data, requests: requests.slice(before) });
  };
  const [a, b] = callers;
  await step("first", () => client(a).query({ query: BOARD, fetchPolicy: "network-only" }));
  await step("again", () => client(a).query({ query: BOARD, fetchPolicy: "network-only" }));
  await step("other tenant", () => client(b).query({ query: BOARD, fetchPolicy: "network-only" }));
  await step("mutation", () =>
    client(a).mutate({ mutation: CREATE, variables: { name: "from Apollo Client" } }),
  );
  await step("mutation again", () =>
    client(a).mutate({ mutation: CREATE, variables: { name: "by hash" } }),
  );
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
