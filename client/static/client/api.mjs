// The public API (docs/api.md), and nothing else: a bearer token from sessionStorage and the
// error envelope {"error": {code, message, fields}} turned into ApiError.

const TOKEN_KEY = "rp.token";
const USER_KEY = "rp.username";

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status === 0 ? "network" : "unknown");
    this.fields = error.fields || {};
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get username() { return sessionStorage.getItem(USER_KEY); },
  save(token, username) { sessionStorage.setItem(TOKEN_KEY, token); sessionStorage.setItem(USER_KEY, username); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(USER_KEY); },
};

let base = "/api/v1/";
let onUnauthenticated = () => {};

export function configure({ api, unauthenticated }) {
  base = api;
  onUnauthenticated = unauthenticated;
}

/** A key for a money-moving POST: the same key on a retry of the same request. */
export function newIdempotencyKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** path is relative to the API base ("wallet") or a full URL the API gave ("next"). */
export async function request(method, path, { body, headers = {}, signal } = {}) {
  const url = /^https?:/.test(path) ? path : base + path;
  const init = { method, headers: { Accept: "application/json", ...headers }, signal };
  if (session.token) init.headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && session.token) onUnauthenticated(error);
    throw error;
  }
  return { status: response.status, data };
}

export const get = (path, options) => request("GET", path, options).then((r) => r.data);
export const post = (path, body, options = {}) => request("POST", path, { ...options, body });
