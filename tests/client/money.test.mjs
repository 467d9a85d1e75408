import assert from "node:assert/strict";
import { test } from "node:test";

import { formatMinor, formatMoney, formatSigned, parseMajor, toMajorInput } from "../../client/static/client/money.mjs";

test("yuan typed by people become exact minor units", () => {
  const cases = {
    "12": 1200, "12.5": 1250, "12.50": 1250, "0.01": 1, ".5": 50, "5.": 500, " 88.88 ": 8888,
    "0.1": 10, "0.2": 20, "0.30": 30, "1000000": 100000000, "¥8.88": 888, "１２．３": 1230,
    "90071992547409.91": 9007199254740991, "0000.07": 7,
  };
  for (const [text, minor] of Object.entries(cases)) {
    assert.deepEqual(parseMajor(text), { ok: true, minor }, text);
  }
});

test("what is not an amount is refused with the reason", () => {
  const cases = {
    "": "empty", "  ": "empty", "abc": "format", "1,000": "format", "-5": "format", "1e3": "format",
    "1.2.3": "format", ".": "format", "0x10": "format", "Infinity": "format", "12.345": "precision",
    "0": "zero", "0.00": "zero", "90071992547409.92": "too_large",
  };
  for (const [text, reason] of Object.entries(cases)) {
    assert.equal(parseMajor(text).ok, false, text);
    assert.equal(parseMajor(text).reason, reason, text);
  }
});

test("a currency without minor units takes whole numbers only", () => {
  assert.deepEqual(parseMajor("500", "JPY"), { ok: true, minor: 500 });
  assert.equal(parseMajor("5.5", "JPY").reason, "precision");
  assert.equal(formatMinor(500, "JPY"), "500");
});

test("minor units print as major units, grouped, exactly", () => {
  assert.equal(formatMinor(0), "0.00");
  assert.equal(formatMinor(1), "0.01");
  assert.equal(formatMinor(10), "0.10");
  assert.equal(formatMinor(100000), "1,000.00");
  assert.equal(formatMinor(123456789), "1,234,567.89");
  assert.equal(formatMinor(-5), "-0.05");
  assert.equal(formatMinor(9007199254740991), "90,071,992,547,409.91");
  assert.equal(formatMinor(2n ** 64n), "184,467,440,737,095,516.16");
});

test("money shows its currency and movements their sign", () => {
  assert.equal(formatMoney(100000, "CNY"), "¥1,000.00");
  assert.equal(formatMoney(-350, "CNY"), "-¥3.50");
  assert.equal(formatMoney(1200, "GBP"), "12.00 GBP");
  assert.equal(formatSigned(1200), "+¥12.00");
  assert.equal(formatSigned(-1200), "-¥12.00");
  assert.equal(formatSigned(0), "¥0.00");
});

test("formatting and parsing round-trip", () => {
  for (const minor of [1, 9, 10, 99, 100, 101, 12345, 100000, 2000000]) {
    assert.deepEqual(parseMajor(toMajorInput(minor)), { ok: true, minor });
  }
});
