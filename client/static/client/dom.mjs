// A few DOM helpers: elements are built with text nodes, never from HTML strings, so nothing
// a user typed (a greeting, a hint) is ever parsed as markup.

/** h("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child, [children]) */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  fill(element, ...children);
  return element;
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const reducedMotion = () => globalThis.matchMedia?.("(prefers-reduced-motion: reduce)").matches ?? false;

let announcer;
/** Says something to screen readers without moving focus. */
export function announce(text) {
  announcer ??= document.getElementById("announcer");
  announcer.textContent = "";
  setTimeout(() => (announcer.textContent = text), 50);
}
