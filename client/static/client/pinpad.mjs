// The 6-digit PIN pad, for paying and for choosing a PIN: a numeric input that keeps the
// keyboard focus (hidden behind six dots) and on-screen keys. complete(pin) runs at 6 digits.

import { fill, h } from "./dom.mjs";
import { t } from "./i18n.mjs";

export function pinPad({ id, label, complete }) {
  const errorId = `${id}-error`;
  const progressId = `${id}-progress`;
  const input = h("input", {
    id, name: id, type: "password", inputmode: "numeric", autocomplete: "off", maxlength: "6",
    pattern: "[0-9]{6}", class: "pin-input", "aria-describedby": `${progressId} ${errorId}`,
  });
  const progress = h("p", { id: progressId, class: "visually-hidden", "aria-live": "polite" });
  const dots = h("div", { class: "pin-dots", "aria-hidden": "true" });
  const error = h("p", { id: errorId, class: "field-error", role: "alert" });
  let busy = false;

  const show = () => {
    const n = input.value.length;
    fill(dots, Array.from({ length: 6 }, (_, i) => h("span", { class: i < n ? "dot filled" : "dot" })));
    progress.textContent = t("pin_progress", { n });
  };
  const changed = () => {
    input.value = input.value.replace(/\D/g, "").slice(0, 6);
    error.textContent = "";
    input.removeAttribute("aria-invalid");
    show();
    if (input.value.length === 6 && !busy) complete(input.value);
  };
  const type = (digit) => {
    if (busy) return;
    if (digit === null) input.value = input.value.slice(0, -1);
    else if (input.value.length < 6) input.value += digit;
    input.focus();
    changed();
  };
  input.addEventListener("input", changed);

  const keys = ["1", "2", "3", "4", "5", "6", "7", "8", "9", null, "0", "⌫"].map((key) => {
    if (key === null) return h("span", { class: "pad-gap" });
    if (key === "⌫") return h("button", { type: "button", class: "pad-key", "aria-label": t("pin_delete"), onclick: () => type(null) }, "⌫");
    return h("button", { type: "button", class: "pad-key", "aria-label": t("pin_digit", { d: key }), onclick: () => type(key) }, key);
  });
  show();

  return {
    nodes: [h("label", { for: id, class: "visually-hidden" }, label), input, dots, progress, error],
    keys: h("div", { class: "pad" }, keys),
    focus: () => input.focus(),
    set busy(value) { busy = value; },
    /** Empties the pad and says what went wrong, at the pad. */
    fail(message) {
      busy = false;
      input.value = "";
      show();
      error.textContent = message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    },
  };
}
