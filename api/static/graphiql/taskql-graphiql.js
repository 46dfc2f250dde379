// taskql's GraphiQL bootstrap: a static file, so the page needs no inline script and its
// Content-Security-Policy can allow scripts from 'self' only. The example operations come
// from the page's <script id="taskql-graphiql-config" type="application/json"> element.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("taskql-graphiql-config").textContent);

  // ?q=...&variables=... (as Strawberry's page writes them) open on a shared query.
  var parameters = new URLSearchParams(window.location.search);

  function updateURL(name, value) {
    if (value) {
      parameters.set(name, value);
    } else {
      parameters.delete(name);
    }
    var search = parameters.toString();
    history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  // Same origin, over HTTP only: taskql offers no subscriptions.
  var fetcher = GraphiQL.createFetcher({ url: window.location.pathname });

  function TaskqlGraphiQL() {
    var query = React.useState(parameters.get("q") || config.query);
    var variables = React.useState(parameters.get("variables") || undefined);

    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      query: query[0],
      variables: variables[0],
      // The Headers pane starts empty: the schema fetch and LogIn work anonymously (an
      // Authorization or X-Organization header that is not valid yet is refused with 401).
      headers: config.headers,
      onEditQuery: function (value) {
        query[1](value);
        updateURL("q", value);
      },
      onEditVariables: function (value) {
        variables[1](value);
        updateURL("variables", value);
      },
      inputValueDeprecation: true,
      isHeadersEditorEnabled: true,
      // Tokens are not kept in localStorage: a stale one would break the next page load.
      shouldPersistHeaders: false,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(TaskqlGraphiQL),
  );
})();
