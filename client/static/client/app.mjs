// The reference chat client: sign in, groups, a group's packets as a chat, the wallet.
// It talks to the service only through the public API (api.mjs).

import { ApiError, configure, get, newIdempotencyKey, post, session } from "./api.mjs";
import { announce, fill, h } from "./dom.mjs";
import { htmlLang, t, when } from "./i18n.mjs";
import { Live } from "./live.mjs";
import { formatMoney, formatSigned } from "./money.mjs";
import { initPacketSheet, openPacket, packetUpdated } from "./packet.mjs";
import { pinSetup } from "./pinsetup.mjs";
import { initSendSheet, openSendSheet } from "./send.mjs";
import { rememberCommitment, state, statusOf } from "./store.mjs";

const root = document.getElementById("app");
state.config = JSON.parse(document.getElementById("client-config").textContent);
document.documentElement.lang = htmlLang;
document.title = t("app_name");

configure({ api: state.config.api, unauthenticated: () => signOut(false) });

const live = new Live({
  onEvents: applyEvents,
  onPoll: pollScreen,
  onStatus: (online) => {
    const banner = document.getElementById("offline");
    banner.hidden = online;
    banner.textContent = online ? "" : t("live_offline");
  },
});

initSendSheet({ sent: (packet) => { upsert(packet); scrollToBottom(true); refreshWalletChip(); } });
initPacketSheet({ changed: (packet) => { upsert(packet); refreshWalletChip(); } });

// --- Screens ------------------------------------------------------------------------

function screen(title, { back, actions = [] } = {}, ...body) {
  const heading = h("h1", { tabindex: "-1" }, title);
  const bar = h("header", { class: "topbar" },
    back ? h("a", { class: "topbar-back", href: back, "aria-label": t("back") }, h("span", { "aria-hidden": "true" }, "‹")) : null,
    heading, h("div", { class: "topbar-actions" }, actions));
  fill(root, bar, body);
  heading.focus({ preventScroll: true });
}

function renderLogin(message) {
  state.view = "login";
  const username = h("input", { id: "login-username", name: "username", autocomplete: "username", required: true });
  const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "form-error", role: "alert", id: "login-error" }, message || "");
  const submit = h("button", { type: "submit", class: "button primary" }, t("sign_in"));
  const signIn = async (name, secret) => {
    fill(error);
    submit.disabled = true;
    try {
      const { data } = await post("auth/token", { username: name, password: secret });
      session.save(data.token, name);
      location.hash = "#/";
      route();
    } catch (failure) {
      submit.disabled = false;
      error.textContent = failure.code === "network" ? t("error_network") : failure.message;
    }
  };
  const form = h("form", { class: "card login", onsubmit: (e) => { e.preventDefault(); signIn(username.value.trim(), password.value); } },
    h("div", { class: "field" }, h("label", { for: username.id }, t("username")), username),
    h("div", { class: "field" }, h("label", { for: password.id }, t("password")), password),
    error, submit);
  const demos = state.config.demoLogins;
  const demo = demos.length
    ? h("section", { class: "card demo", "aria-labelledby": "demo-title" },
        h("h2", { id: "demo-title" }, t("demo_logins")),
        h("p", { class: "muted" }, t("demo_pin", { pin: demos[0].pin })),
        h("div", { class: "demo-users" }, demos.map((d) =>
          h("button", { type: "button", class: "button demo-user", onclick: () => signIn(d.username, d.password) },
            h("span", { class: "avatar", "aria-hidden": "true" }, d.username[0].toUpperCase()), d.username))))
    : null;
  const newcomer = h("p", { class: "card newcomer" }, t("new_here"), " ", h("a", { href: "#/register", class: "button link" }, t("create_account")));
  screen(t("app_name"), {}, h("main", { class: "page" }, h("div", { class: "brand", "aria-hidden": "true" }), form, newcomer, demo));
}

/** POST auth/register, then sign in with the same words and choose a payment PIN. */
function renderRegister() {
  state.view = "register";
  const username = h("input", { id: "register-username", name: "username", autocomplete: "username", required: true,
    maxlength: "150", autocapitalize: "none", spellcheck: "false", "aria-describedby": "register-username-help register-username-error" });
  const password = h("input", { id: "register-password", name: "password", type: "password", autocomplete: "new-password",
    required: true, maxlength: "128", "aria-describedby": "register-password-error" });
  const general = h("p", { class: "form-error", role: "alert", id: "register-error" });
  const submit = h("button", { type: "submit", class: "button primary" }, t("create_account"));
  const inputs = { username, password };
  const fieldBox = (name, label, input, help) => h("div", { class: "field", "data-field": name },
    h("label", { for: input.id }, label), input,
    help ? h("p", { id: `register-${name}-help`, class: "help" }, help) : null,
    h("p", { id: `register-${name}-error`, class: "field-error" }));
  const clear = () => {
    fill(general);
    for (const [name, input] of Object.entries(inputs)) {
      input.removeAttribute("aria-invalid");
      fill(document.getElementById(`register-${name}-error`));
    }
  };
  const register = async () => {
    clear();
    submit.disabled = true;
    const name = username.value.trim();
    try {
      await post("auth/register", { username: name, password: password.value });
      const { data } = await post("auth/token", { username: name, password: password.value });
      session.save(data.token, name);
      state.pinSet = false; // a new wallet has none
      location.hash = "#/pin";
    } catch (failure) {
      submit.disabled = false;
      if (!(failure instanceof ApiError)) throw failure;
      let first = null;
      for (const [field, messages] of Object.entries(failure.fields)) {
        const input = inputs[field];
        if (!input) continue;
        fill(document.getElementById(`register-${field}-error`), messages.join(" "));
        input.setAttribute("aria-invalid", "true");
        first ??= input;
      }
      if (!first) fill(general, failure.code === "network" ? t("error_network") : failure.message);
      (first ?? username).focus();
    }
  };
  const form = h("form", { class: "card login", novalidate: true, onsubmit: (e) => { e.preventDefault(); register(); } },
    fieldBox("username", t("username"), username, t("username_help")),
    fieldBox("password", t("password"), password),
    general, submit);
  screen(t("create_account"), { back: "#/" }, h("main", { class: "page" }, form,
    h("p", { class: "muted" }, t("have_account"), " ", h("a", { href: "#/", class: "button link" }, t("sign_in")))));
  username.focus();
}

/** Right after registration: the payment PIN, needed to send (it can wait: the send sheet asks then). */
function renderPinSetup() {
  state.view = "pin";
  const later = h("a", { href: "#/", class: "button secondary", "data-testid": "pin-later" }, t("later"));
  screen(t("welcome", { user: state.me }), {},
    h("main", { class: "page" }, h("section", { class: "card" },
      pinSetup({ intro: t("pin_setup_intro"), done: () => { location.hash = "#/"; }, actions: [later] }))));
  document.getElementById("new-pin").focus();
}

function walletChip() {
  const chip = h("a", { class: "chip", href: "#/wallet", "data-testid": "wallet-chip" }, t("wallet"));
  state.walletChip = chip;
  refreshWalletChip();
  return chip;
}

/** The balance in the top bar, after anything that may have moved it. */
function refreshWalletChip() {
  const chip = state.walletChip;
  if (!chip) return;
  get("wallet").then((w) => {
    state.wallet = w;
    fill(chip, h("span", { class: "visually-hidden" }, `${t("wallet")}: `), formatMoney(w.balance, w.currency));
  }, () => {});
}

async function renderGroups() {
  state.view = "groups";
  state.group = null;
  const list = h("ul", { class: "groups", "aria-label": t("chats") });
  const signOutButton = h("button", { type: "button", class: "chip", onclick: () => signOut(true) }, t("sign_out"));
  screen(t("chats"), { actions: [walletChip(), signOutButton] },
    h("main", { class: "page" }, h("p", { class: "muted whoami" }, t("signed_in_as", { user: state.me })), list));
  const { results } = await get("groups");
  if (!results.length) fill(list, h("li", { class: "muted no-groups" }, t("no_groups"), " ", t("ask_to_be_added", { user: state.me })));
  else fill(list, results.map((g) => h("li", {},
    h("a", { class: "group-link", href: `#/g/${g.id}` },
      h("span", { class: "avatar", "aria-hidden": "true" }, g.name[0]),
      h("span", { class: "group-name" }, g.name),
      h("span", { class: "muted" }, t("members", { n: g.members.length }))))));
}

// --- A group: its packets as a chat, newest at the bottom ------------------------------

const timeline = () => document.getElementById("timeline");

async function renderGroup(id) {
  state.view = "group";
  state.packets = new Map();
  state.earlier = undefined;
  const group = await get(`groups/${id}`);
  state.group = group;
  const list = h("ol", { id: "timeline", class: "timeline", "aria-label": group.name });
  const earlier = h("button", { type: "button", class: "button link", id: "earlier", hidden: true, onclick: loadEarlier }, t("load_earlier"));
  const compose = h("button", { type: "button", class: "button primary send", onclick: openSendSheet }, t("send_packet"));
  screen(group.name, { back: "#/", actions: [walletChip()] },
    h("main", { class: "chat", id: "chat" }, earlier, list, h("p", { class: "muted empty", id: "empty", hidden: true }, t("no_packets"))),
    h("footer", { class: "composer" }, compose));
  await refreshPackets();
  scrollToBottom(true);
}

async function refreshPackets() {
  const group = state.group;
  const page = await get(`groups/${group.id}/packets`);
  if (state.group !== group) return; // the person moved on meanwhile
  if (state.earlier === undefined) state.earlier = page.next;
  page.results.forEach(upsert);
  document.getElementById("earlier").hidden = !state.earlier;
  document.getElementById("empty").hidden = state.packets.size > 0;
}

async function loadEarlier() {
  const group = state.group;
  const page = await get(state.earlier);
  if (state.group !== group) return;
  state.earlier = page.next;
  page.results.forEach(upsert);
  document.getElementById("earlier").hidden = !state.earlier;
}

function bubbleState(packet) {
  const status = statusOf(packet);
  if (packet.my_claim) return ["opened", t("state_opened", { amount: formatMoney(packet.my_claim.amount, packet.currency) })];
  if (status === "finished") return ["finished", t("state_finished")];
  if (status === "expiring") return ["expiring", t("state_expiring")];
  if (status === "expired") return ["expired", t("state_expired")];
  if (packet.recipient && packet.recipient !== state.me) return ["others", t("state_for", { user: packet.recipient })];
  return ["new", packet.sender === state.me ? t("state_mine") : t("state_new")];
}

/** Adds a packet to the open group's timeline, or brings its bubble up to date. */
function upsert(packet) {
  rememberCommitment(packet);
  packetUpdated(packet);
  if (state.view !== "group" || packet.group !== state.group?.id) return;
  const old = state.packets.get(packet.id);
  state.packets.set(packet.id, packet);
  let item = document.getElementById(`packet-${packet.id}`);
  if (!item) {
    item = h("li", { id: `packet-${packet.id}`, class: packet.sender === state.me ? "message mine" : "message" },
      h("p", { class: "message-meta" }), h("button", { type: "button", class: "bubble", onclick: () => openPacket(state.packets.get(packet.id)) }));
    const later = [...timeline().children].find((li) => state.packets.get(li.id.slice(7))?.created_at > packet.created_at);
    timeline().insertBefore(item, later ?? null);
    document.getElementById("empty").hidden = true;
    if (old === undefined) scrollToBottom(false);
  }
  drawBubble(item, packet);
}

function drawBubble(item, packet) {
  const [kind, label] = bubbleState(packet);
  item.dataset.state = kind;
  fill(item.querySelector(".message-meta"), `${packet.sender} · ${when(packet.created_at)}`);
  const tags = [packet.has_passphrase ? t("has_passphrase") : null, packet.recipient ? t("exclusive_for", { user: packet.recipient }) : null].filter(Boolean);
  const bubble = item.querySelector(".bubble");
  bubble.className = `bubble state-${kind}`;
  fill(bubble,
    h("span", { class: "visually-hidden" }, `${t("packet_from", { sender: packet.sender })}: `),
    h("span", { class: "bubble-icon", "aria-hidden": "true" }),
    h("span", { class: "bubble-text" },
      h("span", { class: "bubble-greeting" }, packet.greeting || t("default_greeting")),
      h("span", { class: "bubble-state" }, label),
      tags.length ? h("span", { class: "bubble-tags" }, tags.join(" · ")) : null));
}

function scrollToBottom(always) {
  const chat = document.getElementById("chat");
  if (!chat) return;
  if (always || chat.scrollHeight - chat.scrollTop - chat.clientHeight < 200) chat.scrollTop = chat.scrollHeight;
}

// Bubbles turn to "expiring" when their expires_at passes, between two fetches.
setInterval(() => {
  if (state.view !== "group") return;
  for (const packet of state.packets.values()) {
    const item = document.getElementById(`packet-${packet.id}`);
    if (item && item.dataset.state !== bubbleState(packet)[0]) drawBubble(item, packet);
  }
}, 1000);

// --- Wallet ---------------------------------------------------------------------------

async function renderWallet() {
  state.view = "wallet";
  state.group = null;
  const balance = h("p", { class: "balance", "data-testid": "balance" }, "…");
  const list = h("ol", { class: "history", "aria-label": t("history") });
  const more = h("button", { type: "button", class: "button link", hidden: true }, t("more"));
  const topup = state.config.sandboxTopups
    ? h("button", { type: "button", class: "button secondary", onclick: sandboxTopup }, t("sandbox_topup", { amount: formatMoney(10000) }))
    : null;
  screen(t("wallet"), { back: "#/" },
    h("main", { class: "page" },
      h("section", { class: "card wallet-card", "aria-labelledby": "balance-title" },
        h("h2", { id: "balance-title", class: "muted" }, t("balance")), balance, topup),
      h("section", { "aria-labelledby": "history-title" }, h("h2", { id: "history-title" }, t("history")), list, more)));
  let next = null;
  const entry = (e) => h("li", { class: "entry" },
    h("span", { class: "entry-kind" }, t(`kind_${e.kind}`)),
    h("span", { class: e.amount < 0 ? "entry-amount out" : "entry-amount in" }, formatSigned(e.amount, state.wallet?.currency)),
    h("span", { class: "entry-memo muted" }, [when(e.created_at), e.memo].filter(Boolean).join(" · ")),
    h("span", { class: "entry-after muted" }, `${t("balance")} ${formatMoney(e.balance_after, state.wallet?.currency)}`));
  more.onclick = async () => {
    const page = await get(next);
    next = page.next;
    list.append(...page.results.map(entry));
    more.hidden = !next;
  };
  const load = async () => {
    const [wallet, page] = await Promise.all([get("wallet"), get("wallet/transactions")]);
    state.wallet = wallet;
    fill(balance, formatMoney(wallet.balance, wallet.currency));
    fill(list, page.results.length ? page.results.map(entry) : h("li", { class: "muted" }, t("no_history")));
    next = page.next;
    more.hidden = !next;
  };
  state.reloadWallet = load;
  await load();
}

async function sandboxTopup(event) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await post("wallet/topups", { amount: 10000 }, { headers: { "Idempotency-Key": newIdempotencyKey() } });
    await state.reloadWallet();
    announce(document.querySelector("[data-testid=balance]").textContent);
  } finally {
    button.disabled = false;
  }
}

// --- Live -----------------------------------------------------------------------------

async function applyEvents(events) {
  const stale = new Set();
  let walletStale = false;
  for (const event of events) {
    const data = event.data || {};
    if (event.type === "packet.sent") {
      rememberCommitment(data.packet);
      if (state.group?.id === data.packet.group) upsert(data.packet);
    } else if (["packet.claimed", "packet.finished", "packet.expired"].includes(event.type)) {
      const id = typeof data.packet === "string" ? data.packet : data.packet?.id;
      if (state.packets.has(id) || state.openPacket === id) stale.add(id);
      walletStale = true;
    } else if (event.type === "group.member_added" && state.group?.id === data.group) {
      state.group = await get(`groups/${data.group}`);
    } else if (event.type === "group.member_added" && data.user === state.me && state.view === "groups") {
      await renderGroups(); // added to a group: it appears in the list
    }
  }
  await Promise.all([...stale].map(async (id) => upsert(await get(`packets/${id}`))));
  if (walletStale && state.view === "wallet") await state.reloadWallet();
  if (walletStale) refreshWalletChip();
}

/** Without the feed: refetch what is on screen. */
async function pollScreen() {
  if (state.view === "group" && state.group) await refreshPackets();
  if (state.openPacket && !state.packets.has(state.openPacket)) upsert(await get(`packets/${state.openPacket}`));
  if (state.view === "wallet") await state.reloadWallet();
}

// --- Routing and session --------------------------------------------------------------

async function signOut(revoke) {
  live.stop();
  // A feed tick still running must not refresh the balance with the token being revoked.
  state.walletChip = null;
  state.view = "login";
  if (revoke) await post("auth/logout").catch(() => {});
  session.clear();
  state.pinSet = null;
  document.querySelectorAll("dialog[open]").forEach((d) => d.close());
  location.hash = "";
  renderLogin();
}

async function route() {
  state.me = session.username;
  const path = location.hash.replace(/^#/, "");
  if (!session.token) return path === "/register" ? renderRegister() : renderLogin();
  if (path === "/pin" && state.pinSet === false) return renderPinSetup();
  if (!live.running) live.start();
  document.querySelectorAll("dialog[open]").forEach((d) => d.close());
  const group = /^\/g\/([^/]+)$/.exec(path);
  try {
    if (group) await renderGroup(group[1]);
    else if (path === "/wallet") await renderWallet();
    else await renderGroups();
  } catch (failure) {
    if (!(failure instanceof ApiError)) throw failure;
    if (failure.status === 401) return;
    fill(root, h("main", { class: "page" }, h("p", { class: "form-error", role: "alert" }, failure.message),
      h("a", { href: "#/", class: "button secondary" }, t("back"))));
  }
}

window.addEventListener("hashchange", route);
route();
