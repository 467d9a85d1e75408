// Money is integer minor units, as the API has it. What people type ("12.5") becomes minor
// units by string arithmetic only, never through a float, so 0.1 + 0.2 never happens here.

const DIGITS = { CNY: 2, USD: 2, EUR: 2, HKD: 2, JPY: 0 };
const SYMBOLS = { CNY: "¥", USD: "$", EUR: "€", HKD: "HK$", JPY: "¥" };

export function minorDigits(currency = "CNY") {
  return DIGITS[currency] ?? 2;
}

/**
 * Parses an amount in major units ("1,000" is refused: a comma is a decimal mark in some
 * locales and a separator in others). Full-width digits and points are accepted (NFKC).
 * Returns {ok: true, minor} with minor a safe integer, or {ok: false, reason} with reason
 * one of "empty", "format", "precision", "zero", "too_large".
 */
export function parseMajor(text, currency = "CNY") {
  const digits = minorDigits(currency);
  const cleaned = String(text ?? "").normalize("NFKC").trim().replace(/^[¥$€]/, "").trim();
  if (cleaned === "") return { ok: false, reason: "empty" };
  const match = /^(\d*)(?:\.(\d*))?$/.exec(cleaned);
  if (!match || (match[1] === "" && !match[2])) return { ok: false, reason: "format" };
  const [, whole, fraction = ""] = match;
  if (fraction.length > digits) return { ok: false, reason: "precision", digits };
  const minor = BigInt((whole || "0") + fraction.padEnd(digits, "0"));
  if (minor === 0n) return { ok: false, reason: "zero" };
  if (minor > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: "too_large" };
  return { ok: true, minor: Number(minor) };
}

/** 123456 -> "1,234.56"; -5 -> "-0.05". Accepts a Number (a safe integer) or a BigInt. */
export function formatMinor(minor, currency = "CNY") {
  const digits = minorDigits(currency);
  let value = BigInt(minor);
  const negative = value < 0n;
  if (negative) value = -value;
  const text = value.toString().padStart(digits + 1, "0");
  const whole = text.slice(0, text.length - digits).replace(/\B(?=(\d{3})+$)/g, ",");
  const fraction = digits ? "." + text.slice(text.length - digits) : "";
  return (negative ? "-" : "") + whole + fraction;
}

/** The amount with its currency: "¥1,234.56"; other currencies without a symbol: "12.00 GBP". */
export function formatMoney(minor, currency = "CNY") {
  const symbol = SYMBOLS[currency];
  const text = formatMinor(minor, currency);
  if (!symbol) return `${text} ${currency}`;
  return text.startsWith("-") ? `-${symbol}${text.slice(1)}` : `${symbol}${text}`;
}

/** A signed movement: "+¥12.00", "-¥3.50", "¥0.00". */
export function formatSigned(minor, currency = "CNY") {
  const sign = BigInt(minor) > 0n ? "+" : "";
  return sign + formatMoney(minor, currency);
}

/** The value for an amount field showing `minor` again ("12.50"), without grouping. */
export function toMajorInput(minor, currency = "CNY") {
  return formatMinor(minor, currency).replaceAll(",", "");
}
