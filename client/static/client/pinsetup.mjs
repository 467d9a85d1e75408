// Choosing the first payment PIN: type it, type it again, PUT wallet/pin. Used right after
// registration and by the send sheet when the wallet has no PIN yet (403 pin_not_set).

import { ApiError, request } from "./api.mjs";
import { announce, fill, h } from "./dom.mjs";
import { t } from "./i18n.mjs";
import { pinPad } from "./pinpad.mjs";
import { state } from "./store.mjs";

/** A block that asks for a new PIN twice and sets it; done(pin) once the service has it. */
export function pinSetup({ intro, done, actions = [], headingLevel = "h2", titleId = "pin-setup-title" }) {
  const box = h("div", { class: "pin-step pin-setup", "data-testid": "pin-setup" });
  const heading = h(headingLevel, { id: titleId, tabindex: "-1" });
  const text = h("p", { class: "pin-for" });
  let first = null;

  const stage = (title, message) => {
    const pad = pinPad({ id: "new-pin", label: t("pin_new_label"), complete: (pin) => chosen(pad, pin) });
    fill(heading, title);
    fill(text, message);
    fill(box, heading, text, pad.nodes, pad.keys, actions.length ? h("div", { class: "actions" }, actions) : null);
    pad.focus();
    return pad;
  };

  async function chosen(pad, pin) {
    if (first === null) {
      first = pin;
      stage(t("pin_confirm_title"), t("pin_confirm_text"));
      return;
    }
    if (pin !== first) {
      first = null;
      stage(t("pin_new_title"), intro).fail(t("pin_mismatch"));
      return;
    }
    pad.busy = true;
    try {
      await request("PUT", "wallet/pin", { body: { pin } });
    } catch (failure) {
      if (!(failure instanceof ApiError)) throw failure;
      first = null;
      const message = failure.code === "network" ? t("error_network") : failure.fields.pin?.join(" ") || failure.message;
      stage(t("pin_new_title"), intro).fail(message);
      return;
    }
    state.pinSet = true;
    announce(t("pin_saved"));
    done(pin);
  }

  stage(t("pin_new_title"), intro);
  return box;
}
