// The admin API, as the console's pages call it: same-origin cookies and the CSRF token on every change,
// or (outside the console, e.g. in tests) a secret key as a bearer token.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function makeApi({ apiBase = "/api/admin", csrfToken, apiKey }) {
  const base = apiBase.replace(/\/$/, "");

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
    if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
    let response;
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, { detail: `the server could not be reached (${err.message})` });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { detail: text.slice(0, 200) };
      }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  const j = (id) => `/journeys/${encodeURIComponent(id)}`;
  return {
    journey: (id) => call("GET", j(id)),
    version: (id, version) => call("GET", `${j(id)}/versions/${version}`),
    saveDraft: (id, graph) => call("PUT", `${j(id)}/draft`, { graph }),
    validate: (id) => call("POST", `${j(id)}/validate`),
    publish: (id) => call("POST", `${j(id)}/publish`),
    pause: (id) => call("POST", `${j(id)}/pause`),
    resume: (id) => call("POST", `${j(id)}/resume`),
    stats: (id) => call("GET", `${j(id)}/stats`),
    simulate: (id, body) => call("POST", `${j(id)}/simulate`, body),
    userRuns: (userId) => call("GET", `/users/${encodeURIComponent(userId)}/journeys`),
    userById: (userId) => call("GET", `/users/${encodeURIComponent(userId)}`),
    userByExternalId: (externalId, source) =>
      call(
        "GET",
        `/users?external_id=${encodeURIComponent(externalId)}${source ? `&source=${encodeURIComponent(source)}` : ""}`,
      ),
    lists: () => call("GET", "/lists?limit=1000"),
    templates: () => call("GET", "/templates?limit=1000"),
    journeys: () => call("GET", "/journeys?limit=1000"),
  };
}
