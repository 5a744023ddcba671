// The dashboard shell: sign-in, navigation and hash routing. Each page module exports
// `render({root, params, query, go})` and may return a cleanup function.

import { ApiError, session, whoami } from "./api.js";
import { live } from "./live.js";
import { applyTheme, clear, errorBox, h, prefs } from "./ui.js";
import * as tasksPage from "./pages/tasks.js";
import * as taskPage from "./pages/task.js";
import * as statsPage from "./pages/stats.js";
import * as nodesPage from "./pages/nodes.js";
import * as schedulesPage from "./pages/schedules.js";
import * as booksPage from "./pages/books.js";
import * as sourcesPage from "./pages/sources.js";
import * as uploadPage from "./pages/upload.js";

const ROUTES = [
  [/^\/tasks$/, "tasks", tasksPage],
  [/^\/task\/([^/]+)$/, "tasks", taskPage],
  [/^\/stats$/, "stats", statsPage],
  [/^\/nodes$/, "nodes", nodesPage],
  [/^\/schedules$/, "schedules", schedulesPage],
  [/^\/books$/, "books", booksPage],
  [/^\/books\/([^/]+)$/, "books", booksPage],
  [/^\/sources$/, "sources", sourcesPage],
  [/^\/upload$/, "upload", uploadPage],
];

const view = document.getElementById("view");
let cleanup = null;
let signedIn = false;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/tasks";
  const [path, qs = ""] = raw.split("?");
  return { path, query: Object.fromEntries(new URLSearchParams(qs)) };
}

/** Navigate to a path with a query object (empty values dropped). */
export function go(path, query = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, v);
  }
  const qs = params.toString();
  const target = `#${path}${qs ? "?" + qs : ""}`;
  if (location.hash === target) route();
  else location.hash = target;
}

function route() {
  if (!signedIn) return;
  if (cleanup) cleanup();
  cleanup = null;
  live.setPoller(null);
  const { path, query } = parseHash();
  for (const [pattern, section, page] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    markSection(section);
    // Each page draws into a box of its own: an answer that arrives after the user moved on
    // lands in the old, detached box instead of over the new page.
    const root = h("div.page");
    clear(view, root);
    const params = match.slice(1).map(decodeURIComponent);
    try {
      cleanup = page.render({ root, params, query, go }) || null;
    } catch (error) {
      clear(root, errorBox(error, "This page failed to render"));
    }
    return;
  }
  markSection(null);
  clear(view, h("div.empty", h("strong", "No such page"), h("p", h("a", { href: "#/tasks" }, "Go to the tasks"))));
}

function markSection(section) {
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.section === section);
  }
  document.title = section ? `syncd · ${section}` : "syncd";
}

// ---- sign-in -----------------------------------------------------------------------------------

function showLogin(message) {
  signedIn = false;
  live.stop();
  if (cleanup) cleanup();
  cleanup = null;
  clear(view);
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  document.getElementById("login").hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("login-token").focus();
}

function showApp() {
  signedIn = true;
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  document.body.dataset.role = session.role;
  document.getElementById("whoami").textContent = session.auth ? session.role : "no auth · admin";
  document.getElementById("logout").hidden = !session.auth;
  live.start();
  route();
}

async function signIn() {
  try {
    await whoami();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      const had = !!session.token;
      session.token = "";
      showLogin(had ? `Sign-in failed: ${error.message}` : "");
      return;
    }
    clear(view, errorBox(error, "The daemon did not answer"));
    return;
  }
  if (session.role === "worker") {
    session.token = "";
    showLogin("This token has the worker role, which cannot use the dashboard.");
    return;
  }
  showApp();
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("login-token");
  session.token = input.value.trim();
  input.value = "";
  signIn();
});

document.getElementById("logout").addEventListener("click", () => {
  session.token = "";
  session.role = null;
  showLogin("You are signed out.");
});

window.addEventListener("syncd:unauthorized", (event) => {
  if (!signedIn) return; // the sign-in itself reports its own failure
  session.token = "";
  showLogin(`Your session ended: ${event.detail}. Sign in again.`);
});

// ---- preferences: the zone of the times shown and the colour theme, remembered ---------------

const zoneSwitch = document.getElementById("zone-switch");
const themeSwitch = document.getElementById("theme-switch");

function showPrefs() {
  zoneSwitch.value = prefs.zone;
  themeSwitch.value = prefs.theme;
  const offset = -new Date().getTimezoneOffset();
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  const sign = offset < 0 ? "-" : "+";
  const hours = String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0");
  const minutes = String(Math.abs(offset) % 60).padStart(2, "0");
  zoneSwitch.options[0].textContent = `Local (UTC${sign}${hours}:${minutes})`;
  zoneSwitch.options[0].title = `This browser's zone: ${local}`;
}

zoneSwitch.addEventListener("change", () => {
  prefs.zone = zoneSwitch.value;
  route(); // redraw the page with every time in the chosen zone
});
themeSwitch.addEventListener("change", () => {
  prefs.theme = themeSwitch.value;
});
applyTheme();
showPrefs();

window.addEventListener("hashchange", route);
window.syncd = { live, session }; // for the browser tests and for poking around in devtools
signIn();
