// The portal's one live client (loaded as a module on every signed-in page; no inline code).
//
// It opens a WebSocket to /ws/ (the session cookie authenticates it), subscribes to the
// channels the page names in <body data-channels>, resumes from the newest event id the page
// (or this tab, in sessionStorage) has seen, drops events it has already applied, and updates
// the page in place: statuses and balances at once from the event, then the server-rendered
// fragments of the regions that care ([data-live-region]) swapped in and highlighted where
// they changed. Reconnects with exponential backoff and jitter; #connection shows the state.
// When the server closes with CLOSE_AUTH_ENDED (the session logged out, the password changed,
// the user was deactivated) or keeps refusing the handshake, it asks /api/v1/me whether this
// browser is still signed in as this page's user: if not, the page says so and stops.

const body = document.body;
const userId = body.dataset.userId;

// Keep in step with portal/presenters.py STATUS_LABELS (tests/portal checks they match).
const STATUS_LABELS = {
  "pending": "Awaiting funding",
  "funding": "Funding in progress",
  "funded": "Funded (in escrow)",
  "submitted": "Work submitted",
  "inspection": "Inspection requested",
  "approved": "Approved",
  "released": "Released",
  "disputed": "Disputed",
  "refunded": "Refunded",
  "split": "Split settlement",
  "cancelled": "Cancelled",
  "draft": "Draft (awaiting signatures)",
  "active": "Active",
  "completed": "Completed",
  "initiated": "Initiated",
  "processing": "Processing",
  "verifying": "Verifying (3-D Secure)",
  "authorized": "Authorized",
  "failed": "Failed",
  "rejected": "Rejected",
  "declined": "Declined",
  "partially_refunded": "Partially refunded",
  "verified": "Verified",
  "expired": "Expired",
  "removed": "Removed",
  "paid": "Paid",
  "needs_account": "Waiting for a payout account",
};

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PING_EVERY_MS = 25000;
const PONG_TIMEOUT_MS = 10000;
const SEEN_LIMIT = 500;
// Event types that may create an in-app notification (realtime/services/notifications.py
// _rule_for; tests/portal/test_live_client.py checks the server's own emitted names match).
const NOTIFYING = /^(payment\.failed|billing\.payment_due|milestone\.|dispute\.|circuit_breaker\.(opened|closed))/;
// realtime/consumers.py CLOSE_AUTH_REVOKED: what authenticated the connection ended.
const CLOSE_AUTH_ENDED = 4001;

const indicator = document.getElementById("connection");
const announcer = document.getElementById("live-announcer");
const storageKey = `live:${userId}:last-event-id`;
const seenKey = `live:${userId}:seen`;

let socket = null;
let attempts = 0;
let reconnectTimer = null;
let pingTimer = null;
let pongTimer = null;
let lastEventId = 0;
let seen = [];
let resyncing = false;
let failedHandshakes = 0;
let authEnded = false;
let signedOut = false;

function readStorage(key, fallback) {
  try {
    const value = sessionStorage.getItem(key);
    return value === null ? fallback : JSON.parse(value);
  } catch {
    return fallback;
  }
}

function writeStorage(key, value) {
  try {
    sessionStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: resuming from the page's own id still works.
  }
}

function setState(state) {
  if (!indicator) return;
  indicator.dataset.state = state;
  indicator.textContent = {
    online: "live",
    connecting: "connecting…",
    offline: "offline",
    "signed-out": "signed out",
  }[state];
  indicator.title = {
    online: "Live updates on",
    "signed-out": "Live updates off: you were signed out",
  }[state] || "Live updates off; reconnecting";
}

function channels() {
  // Every signed-in page at least follows the user's own payments (the server's default).
  const named = (body.dataset.channels || "").split(/\s+/).filter(Boolean);
  return [...new Set([`user.${userId}.payments`, ...named])];
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/`;
}

function connect() {
  clearTimeout(reconnectTimer);
  if (signedOut) return;
  setState("connecting");
  const ws = new WebSocket(socketUrl());
  socket = ws;
  let opened = false;
  ws.addEventListener("open", () => {
    opened = true;
    failedHandshakes = 0;
    authEnded = false;
    const wanted = channels();
    const message = { type: "subscribe", channels: wanted };
    if (lastEventId > 0) message.last_event_id = lastEventId;
    ws.send(JSON.stringify(message));
    startPing(ws);
  });
  ws.addEventListener("message", (message) => {
    let payload;
    try {
      payload = JSON.parse(message.data);
    } catch {
      return;
    }
    receive(payload);
  });
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    stopPing();
    setState("offline");
    if (event.code === CLOSE_AUTH_ENDED) {
      // Try once more first: after a password change in another tab of this browser the
      // cookie is still good (the server renews it in that tab's response, just after
      // closing every socket of the user), and the new socket simply opens.
      authEnded = true;
      scheduleReconnect();
    } else if (!opened && (authEnded || ++failedHandshakes >= 2)) {
      // A refused handshake looks like a network error here; the server knows which.
      checkSignedIn();
    } else {
      scheduleReconnect();
    }
  });
}

async function checkSignedIn() {
  let response;
  try {
    response = await fetch("/api/v1/me", {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
  } catch {
    scheduleReconnect(); // the server is unreachable, not necessarily us signed out
    return;
  }
  if (response.status === 401 || response.status === 403) {
    showSignedOut();
    return;
  }
  if (response.ok) {
    let me = null;
    try {
      me = await response.json();
    } catch {
      // Not the API's answer (a proxy's page?): keep trying, as after a network error.
    }
    if (me && String(me.id) !== userId) {
      showSignedOut(); // this browser is signed in as someone else now
      return;
    }
  }
  scheduleReconnect();
}

function showSignedOut() {
  signedOut = true;
  clearTimeout(reconnectTimer);
  stopPing();
  setState("signed-out");
  if (document.getElementById("signed-out")) return;
  const notice = document.createElement("div");
  notice.id = "signed-out";
  notice.className = "message error signed-out";
  notice.setAttribute("role", "alert");
  const link = document.createElement("a");
  const here = location.pathname + location.search;
  link.href = `/accounts/login/?next=${encodeURIComponent(here)}`;
  link.textContent = "Sign in again";
  notice.append(
    "You were signed out, so this page no longer updates and its buttons will not work. ",
    link,
    " to come back to this page.",
  );
  const main = document.getElementById("main");
  (main || body).prepend(notice);
}

function scheduleReconnect() {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempts);
  // "Equal jitter": half fixed, half random, so a restarted server is not hit all at once.
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  attempts += 1;
  reconnectTimer = setTimeout(connect, delay);
}

function startPing(ws) {
  stopPing();
  pingTimer = setInterval(() => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: "ping" }));
    clearTimeout(pongTimer);
    // No answer at all: the connection is dead without a close; drop it and reconnect.
    pongTimer = setTimeout(() => ws.close(), PONG_TIMEOUT_MS);
  }, PING_EVERY_MS);
}

function stopPing() {
  clearInterval(pingTimer);
  clearTimeout(pongTimer);
}

function receive(message) {
  clearTimeout(pongTimer);
  switch (message.type) {
    case "subscribed":
      attempts = 0;
      setState("online");
      return;
    case "presence":
      showPresence(message);
      return;
    case "pong":
    case "heartbeat":
    case "unsubscribed":
    case "error":
      return;
    case "resync_required":
      // The server no longer holds everything after our id: reload the regions' current
      // state and continue from the newest id they were rendered at.
      resyncing = true;
      refreshAll();
      return;
    default:
      if (Number.isInteger(message.id)) applyEvent(message);
  }
}

function remember(id) {
  if (id > lastEventId) {
    lastEventId = id;
    body.dataset.lastEventId = String(id);
    writeStorage(storageKey, id);
  }
}

function applyEvent(event) {
  if (seen.includes(event.id)) return;
  seen.push(event.id);
  if (seen.length > SEEN_LIMIT) seen = seen.slice(-SEEN_LIMIT);
  writeStorage(seenKey, seen);
  remember(event.id);

  const data = event.data || {};
  const status = data.new_status || data.status;
  if (event.type.startsWith("milestone.") && data.milestone_id && status) {
    setStatus(`[data-milestone-status="${data.milestone_id}"]`, status);
  }
  if (event.type.startsWith("payment.") && data.payment_id && status) {
    setStatus(`[data-payment-status="${data.payment_id}"]`, status);
  }
  if (event.type.startsWith("payment_method.") && data.payment_method_id && status) {
    setStatus(`[data-payment-method-status="${data.payment_method_id}"]`, status);
  }
  if (event.type === "escrow.balance_changed") {
    setAmount(`[data-project-escrow="${data.project_id}"]`, data.new_balance);
    if (data.milestone_id && Number.isInteger(data.milestone_balance)) {
      setAmount(`[data-milestone-escrow="${data.milestone_id}"]`, data.milestone_balance);
    }
  }
  for (const region of document.querySelectorAll("[data-live-region]")) {
    const prefixes = (region.dataset.refreshOn || "").split(/\s+/).filter(Boolean);
    if (prefixes.some((prefix) => event.type.startsWith(prefix))) scheduleRefresh(region.id);
  }
  if (NOTIFYING.test(event.type)) scheduleUnreadCount();
  if (announcer && status && STATUS_LABELS[status]) {
    announcer.textContent = `${event.type.split(".")[0]} update: ${STATUS_LABELS[status]}`;
  }
}

function flash(element) {
  element.classList.remove("changed");
  void element.offsetWidth; // restart the animation
  element.classList.add("changed");
  setTimeout(() => element.classList.remove("changed"), 3000);
}

function setStatus(selector, status) {
  for (const element of document.querySelectorAll(selector)) {
    if (element.dataset.status === status) continue;
    element.dataset.status = status;
    element.textContent = STATUS_LABELS[status] || status.replaceAll("_", " ");
    flash(element);
  }
}

function formatAmount(amount, currency, exponent) {
  const value = (amount / 10 ** exponent).toLocaleString("en-US", {
    minimumFractionDigits: exponent,
    maximumFractionDigits: exponent,
  });
  return `${value} ${currency.toUpperCase()}`;
}

function setAmount(selector, amount) {
  if (!Number.isInteger(amount)) return;
  for (const element of document.querySelectorAll(selector)) {
    const currency = element.dataset.currency || element.closest("[data-currency]")?.dataset.currency;
    if (!currency) continue;
    const exponent = Number(element.dataset.exponent ?? 2);
    const text = formatAmount(amount, currency, exponent);
    if (element.textContent.trim() !== text) {
      element.textContent = text;
      flash(element);
    }
  }
}

function showPresence(message) {
  const element = document.querySelector(`[data-presence="${CSS.escape(message.channel || "")}"]`);
  if (!element || !Array.isArray(message.online)) return;
  const others = message.online.filter((user) => String(user.id) !== userId).map((user) => user.username);
  element.hidden = others.length === 0;
  element.textContent = others.length ? `Also here now: ${others.join(", ")}` : "";
}

// --- Server-rendered fragments -----------------------------------------------------------

const pending = new Map(); // region id -> {timer, running, again}

function scheduleRefresh(id) {
  const state = pending.get(id) || { timer: null, running: false, again: false };
  pending.set(id, state);
  if (state.running) {
    state.again = true;
    return;
  }
  clearTimeout(state.timer);
  state.timer = setTimeout(() => runRefresh(id, state), 120);
}

async function runRefresh(id, state) {
  state.running = true;
  try {
    await refreshRegion(id);
  } finally {
    state.running = false;
    if (state.again) {
      state.again = false;
      scheduleRefresh(id);
    }
  }
}

function refreshAll() {
  for (const region of document.querySelectorAll("[data-live-region]")) scheduleRefresh(region.id);
  scheduleUnreadCount();
}

function fieldState(root) {
  const values = new Map();
  for (const field of root.querySelectorAll("input[id], select[id], textarea[id]")) {
    if (field.type === "hidden") continue;
    values.set(field.id, field.type === "checkbox" || field.type === "radio" ? field.checked : field.value);
  }
  return values;
}

async function refreshRegion(id) {
  const region = document.getElementById(id);
  if (!region || !region.dataset.fragmentUrl) return;
  let response;
  try {
    response = await fetch(region.dataset.fragmentUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    });
  } catch {
    return; // offline; the next event or reconnect tries again
  }
  if (!response.ok) return;
  const template = document.createElement("template");
  template.innerHTML = (await response.text()).trim();
  const fresh = template.content.firstElementChild;
  const current = document.getElementById(id);
  if (!fresh || fresh.id !== id || !current) return;

  const openDetails = [...current.querySelectorAll("details[open][id]")].map((d) => d.id);
  const values = fieldState(current);
  const focusedId = current.contains(document.activeElement) ? document.activeElement.id : "";
  const before = new Map(
    [...current.querySelectorAll("[data-live-key]")].map((n) => [n.dataset.liveKey, n.textContent.trim()]),
  );
  const knownEvents = new Set([...current.querySelectorAll("[data-event-id]")].map((n) => n.dataset.eventId));

  for (const detailsId of openDetails) fresh.querySelector(`#${CSS.escape(detailsId)}`)?.setAttribute("open", "");
  for (const [fieldId, value] of values) {
    const field = fresh.querySelector(`#${CSS.escape(fieldId)}`);
    if (!field) continue;
    if (typeof value === "boolean") field.checked = value;
    else if (field.tagName !== "SELECT" || [...field.options].some((o) => o.value === value)) field.value = value;
  }
  current.replaceWith(fresh);

  for (const node of fresh.querySelectorAll("[data-live-key]")) {
    if (before.get(node.dataset.liveKey) !== node.textContent.trim()) flash(node);
  }
  for (const node of fresh.querySelectorAll("[data-event-id]")) {
    if (!knownEvents.has(node.dataset.eventId)) flash(node);
  }
  if (resyncing && fresh.dataset.lastEventId) {
    resyncing = false;
    remember(Number(fresh.dataset.lastEventId));
  }
  if (focusedId) document.getElementById(focusedId)?.focus();
  updateCountdowns();
}

// --- Notifications count -----------------------------------------------------------------

let unreadTimer = null;

function scheduleUnreadCount() {
  // Notifications are derived from events after commit by a task; look twice.
  clearTimeout(unreadTimer);
  unreadTimer = setTimeout(async () => {
    await refreshUnread();
    setTimeout(refreshUnread, 2500);
  }, 600);
}

async function refreshUnread() {
  const badge = document.querySelector("[data-notifications-count]");
  if (!badge) return;
  try {
    const response = await fetch("/notifications/unread", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return;
    const { unread } = await response.json();
    if (String(unread) === badge.dataset.notificationsCount) return;
    badge.dataset.notificationsCount = String(unread);
    badge.hidden = !unread;
    badge.firstChild.textContent = String(unread);
    flash(badge);
    // Notifications are derived after the event; the list follows the count.
    if (document.getElementById("notifications-live")) scheduleRefresh("notifications-live");
  } catch {
    // Not important enough to report; the next event retries.
  }
}

// --- Countdowns ----------------------------------------------------------------------------

function countdownText(value) {
  if (/^\d{4}-\d{2}-\d{2}$/.test(value)) {
    const [y, m, d] = value.split("-").map(Number);
    const today = new Date();
    const todayUtc = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
    const days = Math.round((Date.UTC(y, m - 1, d) - todayUtc) / 86400000);
    if (days === 0) return "due today";
    if (days < 0) return `${-days} day${days !== -1 ? "s" : ""} overdue`;
    return `due in ${days} day${days !== 1 ? "s" : ""}`;
  }
  const target = Date.parse(value);
  if (Number.isNaN(target)) return null;
  let seconds = Math.trunc((target - Date.now()) / 1000);
  const past = seconds < 0;
  seconds = Math.abs(seconds);
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const text = days ? `${days} d ${hours} h` : hours ? `${hours} h ${minutes} min` : `${minutes} min`;
  return past ? `${text} ago` : `in ${text}`;
}

function updateCountdowns() {
  for (const element of document.querySelectorAll("time[data-countdown]")) {
    const text = countdownText(element.getAttribute("datetime") || "");
    if (text && element.textContent !== text) element.textContent = text;
  }
}

// --- Start ------------------------------------------------------------------------------------

if (userId && "WebSocket" in window) {
  const rendered = Number(body.dataset.lastEventId || 0);
  // The page is a snapshot as of `rendered`; a page without one resumes from this tab's last id.
  lastEventId = rendered > 0 ? rendered : Number(readStorage(storageKey, 0)) || 0;
  seen = readStorage(seenKey, []).filter(Number.isInteger);
  body.dataset.lastEventId = String(lastEventId);
  writeStorage(storageKey, lastEventId);
  setInterval(updateCountdowns, 30000);
  connect();
}

// Confirmation boxes (<details class="confirm">): Cancel and Escape close them, nothing is
// sent, and the focus goes back to the button that opened it. Delegated on the document, so
// boxes re-rendered by a live refresh behave the same.
function closeConfirm(box) {
  box.removeAttribute("open");
  box.querySelector("summary")?.focus();
}
document.addEventListener("click", (event) => {
  const cancel = event.target.closest("[data-close-confirm]");
  const box = cancel?.closest("details.confirm");
  if (box) closeConfirm(box);
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  for (const box of document.querySelectorAll("details.confirm[open]")) closeConfirm(box);
});
