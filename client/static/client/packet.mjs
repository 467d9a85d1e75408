// The packet sheet: a red envelope that opens, the amount, the claims, and the proof check.

import { ApiError, get, post } from "./api.mjs";
import { announce, fill, h, reducedMotion, sleep } from "./dom.mjs";
import { duration, t, when } from "./i18n.mjs";
import { formatMoney } from "./money.mjs";
import { verifyPacket } from "./split.mjs";
import { rememberCommitment, seenCommitment, state, statusOf } from "./store.mjs";

let dialog;
let current = null; // {packet, showResult, notice}
let onChange = () => {};
const verifications = new Map(); // packet id -> {key, result}

export function initPacketSheet({ changed }) {
  onChange = changed;
  dialog = document.getElementById("packet-sheet");
  dialog.addEventListener("close", () => {
    state.openPacket = null;
    current = null;
  });
}

const money = (minor, packet) => formatMoney(minor, packet.currency || "CNY");

export async function openPacket(packet) {
  rememberCommitment(packet);
  state.openPacket = packet.id;
  const mine = packet.sender === state.me;
  current = { packet, showResult: mine || !canOpen(packet), notice: null };
  render();
  if (!dialog.open) dialog.showModal();
  const focus = dialog.querySelector("[data-autofocus]") || dialog.querySelector("button");
  focus?.focus();
}

/** A newer copy of a packet from the feed or a poll. */
export function packetUpdated(packet) {
  if (!current || current.packet.id !== packet.id) return;
  current.packet = packet;
  if (current.claiming) return; // claim() shows the outcome itself
  if (!current.showResult) {
    if (canOpen(packet)) return; // the envelope stays as it is, passphrase typed included
    current.showResult = true;
  }
  render();
}

function canOpen(packet) {
  if (packet.my_claim || statusOf(packet) !== "active") return false;
  return !packet.recipient || packet.recipient === state.me;
}

function render() {
  const { packet } = current;
  const close = h("button", { type: "button", class: "sheet-close", "aria-label": t("close"), onclick: () => dialog.close() }, "×");
  fill(dialog, close, current.showResult ? result(packet) : envelope(packet));
}

function envelope(packet) {
  const title = h("h2", { id: "packet-title", class: "envelope-from" }, t("packet_from", { sender: packet.sender }));
  const greeting = h("p", { class: "envelope-greeting" }, packet.greeting || t("default_greeting"));
  const notice = h("p", { class: "envelope-notice", role: "alert" }, current.notice || "");
  const parts = [title, greeting];
  if (packet.recipient && packet.recipient !== state.me) {
    parts.push(h("p", { class: "envelope-notice" }, t("only_for", { user: packet.recipient })));
    return h("div", { class: "envelope" }, parts, h("div", { class: "envelope-flap", "aria-hidden": "true" }));
  }
  const form = h("form", { class: "envelope-form", onsubmit: (event) => { event.preventDefault(); claim(form); } });
  if (packet.has_passphrase) {
    const hintId = "passphrase-hint";
    const errorId = "passphrase-error";
    form.append(
      h("label", { for: "claim-passphrase", class: "envelope-label" }, t("passphrase_prompt")),
      packet.hint ? h("p", { id: hintId, class: "envelope-hint" }, t("hint_is", { hint: packet.hint })) : null,
      h("input", {
        id: "claim-passphrase", name: "passphrase", type: "text", autocomplete: "off", maxlength: "64", required: true,
        "aria-describedby": `${packet.hint ? hintId : ""} ${errorId}`.trim(), "data-autofocus": true,
      }),
      h("p", { id: errorId, class: "field-error", role: "alert" }),
    );
  }
  form.append(h("button", { type: "submit", class: "open-button", "data-autofocus": !packet.has_passphrase }, t("open_coin")));
  return h("div", { class: "envelope" }, parts, form, notice, h("div", { class: "envelope-flap", "aria-hidden": "true" }));
}

async function claim(form) {
  const packet = current.packet;
  const envelope = form.closest(".envelope");
  const button = form.querySelector(".open-button");
  const passphrase = form.querySelector("[name=passphrase]");
  const error = form.querySelector(".field-error");
  button.disabled = true;
  current.claiming = true;
  envelope.classList.add("is-spinning");
  announce(t("opening"));
  try {
    await post(`packets/${packet.id}/claim`, packet.has_passphrase ? { passphrase: passphrase.value } : undefined);
    envelope.classList.remove("is-spinning");
    envelope.classList.add("is-open");
    const [fresh] = await Promise.all([get(`packets/${packet.id}`), sleep(reducedMotion() ? 0 : 700)]);
    if (current?.packet.id !== packet.id) return;
    current.packet = fresh;
    current.showResult = true;
    current.claiming = false;
    render();
    dialog.querySelector("h2")?.focus();
    if (fresh.my_claim) announce(`${t("you_got")} ${money(fresh.my_claim.amount, fresh)}`);
    onChange(fresh);
  } catch (failure) {
    envelope.classList.remove("is-spinning");
    if (current?.packet.id !== packet.id) return;
    current.claiming = false;
    if (!(failure instanceof ApiError)) throw failure;
    const message = failure.code === "network" ? t("error_network") : failure.message;
    if (["wrong_passphrase", "passphrase_locked"].includes(failure.code) && passphrase) {
      error.textContent = message;
      passphrase.setAttribute("aria-invalid", "true");
      button.disabled = failure.code === "passphrase_locked";
      passphrase.focus();
      passphrase.select();
      return;
    }
    button.disabled = false;
    if (["packet_exhausted", "packet_expired", "not_recipient"].includes(failure.code)) {
      const fresh = await get(`packets/${packet.id}`);
      current.packet = fresh;
      current.showResult = true;
      current.notice = message;
      render();
      onChange(fresh);
      return;
    }
    current.notice = message;
    envelope.querySelector(".envelope-notice[role=alert]").textContent = message;
  }
}

function summary(packet) {
  const status = statusOf(packet);
  const k = packet.claimed_count;
  const n = packet.share_count;
  if (status === "finished") {
    return t("summary_finished", { n, duration: duration(Date.parse(packet.finished_at) - Date.parse(packet.created_at)) });
  }
  if (status === "expired") return t("summary_expired", { k, n, amount: money(packet.refunded_amount, packet), sender: packet.sender });
  if (status === "expiring") return t("summary_expiring", { k, n, amount: money(packet.remaining_amount, packet), sender: packet.sender });
  return t("summary_active", { k, n, amount: money(packet.remaining_amount, packet) });
}

function result(packet) {
  const mine = packet.my_claim;
  const header = h("div", { class: "result-header" },
    h("h2", { id: "packet-title", class: "result-from", tabindex: "-1" }, t("packet_from", { sender: packet.sender })),
    h("p", { class: "result-greeting" }, packet.greeting || t("default_greeting")),
    packet.recipient ? h("p", { class: "result-tag" }, t("exclusive_for", { user: packet.recipient })) : null,
    packet.has_passphrase ? h("p", { class: "result-tag" }, [t("has_passphrase"), packet.hint ? ` · ${t("hint_is", { hint: packet.hint })}` : ""].join("")) : null,
  );
  const got = mine
    ? h("div", { class: "result-amount" },
        h("p", { class: "you-got" }, t("you_got")),
        h("p", { class: "amount", "data-testid": "my-amount" }, money(mine.amount, packet)),
        h("p", { class: "muted" }, t("saved_to_wallet")))
    : null;
  const notice = current.notice ? h("p", { class: "result-notice", role: "status" }, current.notice) : null;
  const openSelf = packet.sender === state.me && canOpen(packet)
    ? h("button", { type: "button", class: "button secondary", onclick: () => { current.showResult = false; render(); } }, t("open_yourself"))
    : null;
  const claims = packet.claims.length
    ? h("ol", { class: "claims", "aria-label": t("claims_title") }, packet.claims.map((c) =>
        h("li", { class: c.best_luck ? "claim best" : "claim" },
          h("span", { class: "claim-user" }, c.user),
          h("span", { class: "claim-time" }, when(c.claimed_at)),
          h("span", { class: "claim-amount" }, money(c.amount, packet)),
          c.best_luck ? h("span", { class: "best-luck" }, t("best_luck")) : null)))
    : h("p", { class: "muted" }, t("no_claims"));
  const badge = h("div", { class: "verify", "data-testid": "verify" });
  showVerification(packet, badge);
  return h("div", { class: "result" }, header, got, notice, openSelf,
    h("section", { class: "claims-section", "aria-labelledby": "claims-title" },
      h("h3", { id: "claims-title" }, t("claims_title")),
      h("p", { class: "summary", "data-testid": "summary" }, summary(packet)),
      claims),
    badge);
}

async function showVerification(packet, badge) {
  if (!packet.commitment) return;
  const key = JSON.stringify([packet.status, packet.proof?.seed, packet.claims.length, packet.commitment]);
  let cached = verifications.get(packet.id);
  if (!cached || cached.key !== key) {
    const seen = seenCommitment(packet.id);
    let outcome;
    try {
      outcome = await verifyPacket(packet, seen?.commitment);
    } catch (error) {
      outcome = { state: "unavailable", problems: [], reason: error.message };
    }
    cached = { key, outcome, late: Boolean(seen?.proof_out) };
    verifications.set(packet.id, cached);
  }
  const { outcome, late } = cached;
  if (outcome.state === "pending") {
    fill(badge, h("p", { class: "muted" }, t("verify_pending")));
  } else if (outcome.state === "verified") {
    badge.classList.add("verified");
    fill(badge,
      h("p", { class: "badge ok" }, h("span", { "aria-hidden": "true" }, "✓ "), t("verified")),
      h("p", { class: "muted" }, t("verify_details")),
      late ? h("p", { class: "muted" }, t("verify_late")) : null);
  } else if (outcome.state === "failed") {
    badge.classList.add("failed");
    fill(badge,
      h("p", { class: "badge bad" }, h("span", { "aria-hidden": "true" }, "✗ "), t("verify_failed")),
      h("ul", {}, outcome.problems.map((p) => h("li", {}, t(`problem_${p.code}`, p)))));
  } else if (outcome.state === "unavailable") {
    fill(badge, h("p", { class: "muted" }, t("verify_unavailable", { reason: outcome.reason })));
  }
}
