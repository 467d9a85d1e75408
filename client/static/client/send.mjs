// The send sheet: the packet's terms, then the 6-digit PIN pad. Errors are the API's own
// words, put at the field they concern (`fields`); insufficient_funds offers a sandbox topup,
// and a wallet without a PIN is led to choosing one (pinsetup.mjs) instead of failing.

import { ApiError, get, newIdempotencyKey, post } from "./api.mjs";
import { announce, fill, h } from "./dom.mjs";
import { t } from "./i18n.mjs";
import { formatMoney, parseMajor } from "./money.mjs";
import { pinPad } from "./pinpad.mjs";
import { pinSetup } from "./pinsetup.mjs";
import { rememberCommitment, state } from "./store.mjs";

let dialog;
let onSent = () => {};
let attempt = null; // {body, key}: a retry of the same body reuses its Idempotency-Key

// Which form control shows the errors of each body field.
const FIELD_OF = {
  total_amount: "amount", share_amount: "amount", share_count: "share_count", greeting: "greeting",
  passphrase: "passphrase", hint: "hint", recipient: "recipient", pin: "pin",
};

export function initSendSheet({ sent }) {
  onSent = sent;
  dialog = document.getElementById("send-sheet");
}

function field(name, label, input, help) {
  const errorId = `send-${name}-error`;
  const helpId = help ? `send-${name}-help` : null;
  input.id = `send-${name}`;
  input.name = name;
  input.setAttribute("aria-describedby", [helpId, errorId].filter(Boolean).join(" "));
  return h("div", { class: "field", "data-field": name },
    h("label", { for: input.id }, label), input,
    help ? h("p", { id: helpId, class: "help" }, help) : null,
    h("p", { id: errorId, class: "field-error" }));
}

export function openSendSheet() {
  const group = state.group;
  const others = group.members.filter((m) => m !== state.me);
  const kindRandom = h("input", { type: "radio", name: "kind", value: "random", id: "kind-random", checked: true });
  const kindFixed = h("input", { type: "radio", name: "kind", value: "fixed", id: "kind-fixed" });
  const amount = h("input", { type: "text", inputmode: "decimal", autocomplete: "off", required: true, placeholder: "0.00" });
  const count = h("input", { type: "number", inputmode: "numeric", min: "1", max: String(group.members.length), step: "1",
    value: String(Math.min(group.members.length, 3)), required: true });
  const greeting = h("input", { type: "text", maxlength: "100", placeholder: t("greeting_placeholder") });
  const passphrase = h("input", { type: "text", maxlength: "32", autocomplete: "off" });
  const hint = h("input", { type: "text", maxlength: "100", placeholder: t("hint_placeholder") });
  const recipient = h("select", {}, h("option", { value: "" }, t("recipient_anyone")), others.map((m) => h("option", { value: m }, m)));
  const amountLabel = h("span", {}, t("amount_total"));
  const preview = h("p", { class: "preview", "aria-live": "polite" });
  const general = h("div", { class: "form-error", role: "alert" });
  const amountField = field("amount", "", amount);
  amountField.querySelector("label").append(amountLabel);

  const form = h("form", { class: "send-form", novalidate: true },
    h("h2", { id: "send-title" }, t("send_packet")),
    h("fieldset", { class: "kind" }, h("legend", {}, t("kind")),
      h("div", { class: "segmented" },
        kindRandom, h("label", { for: "kind-random" }, t("kind_random")),
        kindFixed, h("label", { for: "kind-fixed" }, t("kind_fixed")))),
    amountField,
    field("share_count", t("share_count"), count),
    field("greeting", t("greeting"), greeting),
    field("passphrase", t("passphrase"), passphrase, t("passphrase_help")),
    field("hint", t("hint"), hint),
    field("recipient", t("recipient"), recipient),
    preview, general,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "button secondary", onclick: () => dialog.close() }, t("cancel")),
      h("button", { type: "submit", class: "button primary" }, t("continue"))));

  const fixed = () => kindFixed.checked;
  const update = () => {
    fill(amountLabel, t(fixed() ? "amount_each" : "amount_total"));
    count.disabled = Boolean(recipient.value);
    if (recipient.value) count.value = "1";
    hint.closest(".field").hidden = !passphrase.value.trim();
    const parsed = parseMajor(amount.value);
    const shares = Number(count.value);
    const total = parsed.ok && Number.isInteger(shares) && shares > 0 ? (fixed() ? parsed.minor * shares : parsed.minor) : null;
    fill(preview, total ? t("total_preview", { amount: formatMoney(total) }) : "");
  };
  form.addEventListener("input", update);
  form.addEventListener("change", update);

  const clearErrors = () => {
    form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    fill(general);
  };
  const fieldError = (name, message) => {
    const box = form.querySelector(`[data-field="${name}"]`);
    box.querySelector(".field-error").textContent = message;
    box.querySelector("input, select").setAttribute("aria-invalid", "true");
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors();
    const parsed = parseMajor(amount.value);
    if (!parsed.ok) {
      fieldError("amount", t(`amount_${parsed.reason}`, parsed));
      amount.focus();
      return;
    }
    const shares = Number(count.value);
    if (!Number.isInteger(shares) || shares < 1) {
      fieldError("share_count", t("count_invalid"));
      count.focus();
      return;
    }
    const body = { group: group.id, kind: fixed() ? "fixed" : "random", share_count: shares, greeting: greeting.value.trim() };
    body[fixed() ? "share_amount" : "total_amount"] = parsed.minor;
    if (passphrase.value.trim()) {
      body.passphrase = passphrase.value;
      if (hint.value.trim()) body.hint = hint.value.trim();
    }
    if (recipient.value) body.recipient = recipient.value;
    const total = fixed() ? parsed.minor * shares : parsed.minor;
    pinStep({ body, total, back: showForm });
  });

  function showForm(errors) {
    fill(dialog, form);
    if (errors) applyErrors(errors);
    (form.querySelector("[aria-invalid]") || amount).focus();
  }

  function applyErrors({ error, needed, notice }) {
    if (notice) general.append(h("p", { class: "ok" }, notice));
    let placed = false;
    for (const [name, messages] of Object.entries(error.fields)) {
      const target = FIELD_OF[name];
      if (target && target !== "pin") {
        fieldError(target, messages.join(" "));
        placed = true;
      }
    }
    if (!placed || error.code !== "validation_error") general.append(h("p", {}, error.message));
    if (error.code === "insufficient_funds" && state.config.sandboxTopups) general.append(topupButton(needed, general));
  }

  showForm();
  update();
  if (!dialog.open) dialog.showModal();
  amount.focus();
}

function topupButton(needed, general) {
  const button = h("button", { type: "button", class: "button secondary", "data-testid": "topup" });
  get("wallet").then((wallet) => {
    const amount = Math.max(needed - wallet.balance, 1);
    fill(button, t("topup_button", { amount: formatMoney(amount, wallet.currency) }));
    button.onclick = async () => {
      button.disabled = true;
      try {
        const { data } = await post("wallet/topups", { amount }, { headers: { "Idempotency-Key": newIdempotencyKey() } });
        fill(general, h("p", { class: "ok" }, t("topped_up", { amount: formatMoney(data.amount), balance: formatMoney(data.balance) })));
        announce(general.textContent);
      } catch (failure) {
        button.disabled = false;
        general.append(h("p", {}, failure.message));
      }
    };
  });
  fill(button, t("topup_button", { amount: "…" }));
  return button;
}

function pinStep({ body, total, back }) {
  if (state.pinSet === false) return pinSetupStep({ body, total, back, intro: t("pin_setup_to_send") });
  const status = h("p", { class: "muted", "aria-live": "polite" });
  const pad = pinPad({ id: "pin", label: t("pin_label"), complete: (pin) => send({ body, total, back, pin, pad, status }) });
  fill(dialog, h("div", { class: "pin-step" },
    h("h2", { id: "send-title" }, t("pin_title")),
    h("p", { class: "pin-for" }, t("pin_for", { amount: formatMoney(total), group: state.group.name })),
    pad.nodes, status, pad.keys,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "button secondary", onclick: () => back() }, t("back")))));
  pad.focus();
}

/** No PIN yet: choose one, then the packet goes with it (no second typing). */
function pinSetupStep({ body, total, back, intro }) {
  const status = h("p", { class: "muted", "aria-live": "polite" });
  const setup = pinSetup({
    intro, titleId: "send-title",
    // Said on the form too if the send then fails: the PIN is kept either way.
    done: (pin) => send({ body, total, back: (errors) => back(errors && { ...errors, notice: t("pin_saved") }), pin, status }),
    actions: [h("button", { type: "button", class: "button secondary", onclick: () => back() }, t("back"))],
  });
  fill(dialog, setup, status);
  dialog.querySelector("#new-pin").focus();
}

async function send({ body, total, back, pin, pad, status }) {
  if (pad) pad.busy = true;
  status.textContent = t("sending");
  const request = { ...body, pin };
  const same = attempt && JSON.stringify(attempt.body) === JSON.stringify(request);
  attempt = same ? attempt : { body: request, key: newIdempotencyKey() };
  try {
    const { data } = await post("packets", request, { headers: { "Idempotency-Key": attempt.key } });
    attempt = null;
    state.pinSet = true;
    rememberCommitment(data);
    dialog.close();
    announce(t("sent"));
    onSent(data);
  } catch (failure) {
    status.textContent = "";
    if (!(failure instanceof ApiError)) throw failure;
    if (failure.code === "network") {
      // The same PIN typed again is the same request, with the same key: sent at most once.
      if (pad) pad.fail(t("error_network"));
      else back({ error: failure, needed: total });
      return;
    }
    attempt = null;
    if (failure.code === "pin_not_set") {
      state.pinSet = false;
      pinSetupStep({ body, total, back, intro: t("pin_setup_to_send") });
      return;
    }
    const pinProblem = ["invalid_pin", "pin_locked"].includes(failure.code) || "pin" in failure.fields;
    if (pinProblem && pad) {
      pad.fail(failure.fields.pin?.join(" ") || failure.message);
      return;
    }
    back({ error: failure, needed: total });
  }
}
