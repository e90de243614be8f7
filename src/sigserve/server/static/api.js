// Every call to the server: the API key (sessionStorage: gone with the tab, never in a URL), the
// spinner, and errors read from the server's envelope {"error": {"message", "type", "param", "code"}}.

const KEY = "sigserve.apiKey";

export const server = { model: null }; // the id that requests name, from GET /v1/models

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, error = {}) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.param = error.param;
    this.code = error.code;
  }
}

let busy = 0;
function spin(delta) {
  busy += delta;
  document.getElementById("spinner").hidden = busy === 0;
  document.body.toggleAttribute("aria-busy", busy > 0);
}

// GET when there is no body, POST with JSON otherwise. quiet: no spinner (background probes).
export async function api(path, body, { quiet = false } = {}) {
  const headers = { "content-type": "application/json" };
  if (apiKey.get()) headers.authorization = `Bearer ${apiKey.get()}`;
  const init = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
  if (!quiet) spin(+1);
  try {
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, { message: "The server did not answer. Is it still running?" });
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data?.error ?? { message: response.statusText });
    return data;
  } finally {
    if (!quiet) spin(-1);
  }
}

const LEAD = {
  401: "The server needs an API key: paste yours in the field at the top.",
  403: "This API key may not do that.",
  404: "Not found.",
  413: "That is more than this server accepts in one request.",
  422: "The server could not read this request.",
  429: "Too many requests for now: wait a moment and try again.",
  503: "The server is not ready or is overloaded: try again shortly.",
};

export function plainWords(error) {
  if (!(error instanceof ApiError)) return error.message; // the page's own check, already in plain words
  const lead = LEAD[error.status] ?? (error.status >= 500 ? "The server failed on this request." : "");
  return [lead, error.message].filter(Boolean).join(" ");
}

// Run a panel's action: clear its error line, show the server's answer in plain words if it fails.
export async function attempt(panel, action) {
  const line = panel.querySelector(".error");
  line.hidden = true;
  try {
    await action();
  } catch (error) {
    line.textContent = plainWords(error);
    line.hidden = false;
  }
}
