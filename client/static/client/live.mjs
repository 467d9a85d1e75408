// Following what happens: the events feed (GET events?after=, following `next`), about every
// second while the page is visible and every 10 s while hidden. A service without the feed
// (404) is polled instead: the app refetches what is on screen on every tick.

import { ApiError, get, session } from "./api.mjs";

const VISIBLE_MS = 1000;
const HIDDEN_MS = 10000;
const RETRY_MS = 3000;
const PAGE = 100; // the feed's page size: a full page means more is waiting
const cursorKey = () => `rp.events.next.${session.username}`;

export class Live {
  /** onEvents(events) for the feed, onPoll() without it, onStatus(online). */
  constructor({ onEvents, onPoll, onStatus }) {
    Object.assign(this, { onEvents, onPoll, onStatus });
    this.mode = null; // "feed" or "poll", found on the first tick
    this.timer = null;
    this.running = false;
    this.ticking = false;
    this.online = true;
    document.addEventListener("visibilitychange", () => {
      if (this.running && document.visibilityState === "visible") this.tickNow();
    });
  }

  start() {
    this.running = true;
    this.tickNow();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
  }

  tickNow() {
    clearTimeout(this.timer);
    if (!this.ticking) this.tick();
  }

  schedule(ms) {
    clearTimeout(this.timer);
    if (this.running) this.timer = setTimeout(() => this.tick(), ms);
  }

  async tick() {
    this.ticking = true;
    let delay = document.visibilityState === "hidden" ? HIDDEN_MS : VISIBLE_MS;
    try {
      if (this.mode === null) await this.catchUp();
      if (this.mode === "feed") {
        if (await this.follow()) delay = 0;
      } else {
        await this.onPoll();
      }
      this.setOnline(true);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return; // signed out: api.mjs handled it
      if (!(error instanceof ApiError)) console.error(error);
      this.setOnline(false);
      delay = RETRY_MS;
    } finally {
      this.ticking = false;
      this.schedule(delay);
    }
  }

  setOnline(online) {
    if (online !== this.online) {
      this.online = online;
      this.onStatus(online);
    }
  }

  /** Skips the events from before this page loaded (the app reads the state itself). */
  async catchUp() {
    let next = sessionStorage.getItem(cursorKey()) || "events";
    for (;;) {
      let page;
      try {
        page = await get(next);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404 && next === "events") {
          this.mode = "poll";
          return;
        }
        if (error instanceof ApiError && error.status === 404) {
          next = "events"; // a cursor this service no longer knows
          continue;
        }
        throw error;
      }
      next = page.next;
      if (page.results.length < PAGE) break;
    }
    sessionStorage.setItem(cursorKey(), next);
    this.next = next;
    this.mode = "feed";
  }

  /** One page of the feed; true when a full page says more is waiting. */
  async follow() {
    const page = await get(this.next);
    this.next = page.next;
    sessionStorage.setItem(cursorKey(), page.next);
    if (page.results.length) await this.onEvents(page.results);
    return page.results.length >= PAGE;
  }
}
