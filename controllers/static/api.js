// The API client of the dashboard: every request carries the session's token; errors are
// ApiError with the API's own message; a 401 sends the user back to the login form.

const TOKEN_KEY = "syncd.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  role: null,
  auth: false,
  get canOperate() {
    return this.role === "admin" || this.role === "operator";
  },
  get isAdmin() {
    return this.role === "admin";
  },
};

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  return h;
}

function url(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, v);
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function toError(response, method, path) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = body && body.error;
  if (err && err.code === "not_found" && err.message === "Not Found") {
    // aiohttp's own 404 (no such route), not a missing record: say which call it was.
    return new ApiError(404, "not_found", `${method} ${path.split("?")[0]}: not found on this daemon`);
  }
  if (err && err.message) return new ApiError(response.status, err.code, err.message, err.details);
  return new ApiError(response.status, "http_error", `${method} ${path}: HTTP ${response.status}`);
}

function unauthorized(error) {
  window.dispatchEvent(new CustomEvent("syncd:unauthorized", { detail: error.message }));
}

/** Call the API; resolves with the JSON answer (null for 204), rejects with ApiError. */
export async function api(method, path, { query, body } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch (exc) {
    throw new ApiError(0, "network", `cannot reach the daemon (${exc.message})`);
  }
  if (!response.ok) {
    const error = await toError(response, method, path);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

/** Upload one file as multipart form data, reporting the bytes sent (0..1) as it goes. */
export function upload(path, field, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload could not reach the daemon"));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const err = body && body.error;
      const error = err
        ? new ApiError(xhr.status, err.code, err.message, err.details)
        : new ApiError(xhr.status, "http_error", `POST ${path}: HTTP ${xhr.status}`);
      if (xhr.status === 401) unauthorized(error);
      reject(error);
    };
    const form = new FormData();
    form.append(field, file);
    xhr.send(form);
  });
}

// The task types the daemon runs, read once (`GET /api/sync/task-types`) and shared by the
// pages: the type filter lists them, and their `maintenance` flag says which ones only an admin
// may enqueue by hand. A failed read is asked again by the next caller.
let taskTypesRead = null;

/** The daemon's task types: resolves with `[{task_type, description, maintenance}]`. */
export function taskTypes() {
  if (!taskTypesRead) {
    taskTypesRead = api("GET", "/api/sync/task-types").then((answer) => answer.task_types);
    taskTypesRead.catch(() => {
      taskTypesRead = null;
    });
  }
  return taskTypesRead;
}

/**
 * Which task types this session may enqueue by hand (create, retry, a schedule's Run now or
 * Backfill), as the API decides it: resolves with `(taskType) => boolean`, whose `why(taskType)`
 * says in words why a type is refused. An admin may enqueue any type, an operator every type but
 * the maintenance ones (they delete data), a read role none. Never rejects: while the types
 * cannot be read, an operator is offered none (the API would refuse some, and which is unknown).
 */
export async function enqueueRule() {
  if (!session.canOperate) return rule(() => false, () => `the ${session.role} role can only read`);
  if (session.isAdmin) return rule(() => true, () => "");
  let types;
  try {
    types = await taskTypes();
  } catch (error) {
    return rule(() => false, () => `the task types could not be read (${error.message}); reload the page`);
  }
  const maintenance = new Set(types.filter((t) => t.maintenance).map((t) => t.task_type));
  return rule((taskType) => !maintenance.has(taskType),
    (taskType) => `${taskType} is a maintenance task type (it deletes data): only an admin may enqueue it by hand`);
}

function rule(allows, why) {
  return Object.assign(allows, { why });
}

/** Who am I: sets session.role / session.auth; rejects with ApiError (401 for a bad token). */
export async function whoami() {
  const me = await api("GET", "/api/whoami");
  session.role = me.role;
  session.auth = !!me.auth;
  return me;
}
